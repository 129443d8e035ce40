// Shared fixture of the WireGuard end-to-end tests (userspace on the host, kernel in the QEMU
// guest): two private network namespaces, each with one meshwire WireGuard interface driven by a
// backend + reconciler, and helpers to run commands (`ping`, `wg show`) inside a namespace.
// Namespaces are anonymous (held by file descriptors), so they vanish with the test process even
// when it fails; backends stop wireguard-go and remove its socket in their destructors; interface
// names carry a random suffix because /var/run/wireguard is shared by all namespaces.
// skip_case()/finish_run(): a case that cannot run here is a skip (exit 77), never a pass.
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/netns.hpp"
#include "common/rtnl.hpp"
#include "common/wireguard/wg_reconciler.hpp"
#include "common/wireguard/wg_userspace_backend.hpp"

namespace wg_e2e {

using namespace mw;

// ---- a case that could not run is a skip, never a pass --------------------------------------
// A test case that cannot run here calls skip_case(why) and returns. A case that ends without a
// single assertion and without skip_case() did nothing, which must not read as a pass either.
// The listener below records both; finish_run() turns them into the exit status: doctest's
// failure first, then 1 for empty cases, then 77 (CTest's skip code) when any case was skipped.
struct case_outcomes {
    std::vector<std::string> skipped, empty;
    std::string current;
    bool current_skipped = false;
};

inline case_outcomes& outcomes() {
    static case_outcomes o;
    return o;
}

inline void skip_case(const std::string& why) {
    outcomes().current_skipped = true;
    MESSAGE("SKIP: " << why);
}

class outcome_listener : public doctest::IReporter {
public:
    explicit outcome_listener(const doctest::ContextOptions&) {}
    void report_query(const doctest::QueryData&) override {}
    void test_run_start() override {}
    void test_run_end(const doctest::TestRunStats&) override {}
    void test_case_start(const doctest::TestCaseData& d) override {
        outcomes().current = d.m_name;
        outcomes().current_skipped = false;
    }
    void test_case_reenter(const doctest::TestCaseData&) override {}
    void test_case_end(const doctest::CurrentTestCaseStats& st) override {
        auto& o = outcomes();
        if (o.current_skipped) {
            o.skipped.push_back(o.current);
        } else if (st.numAssertsCurrentTest == 0 && st.testCaseSuccess) {
            o.empty.push_back(o.current);
        }
    }
    void test_case_exception(const doctest::TestCaseException&) override {}
    void subcase_start(const doctest::SubcaseSignature&) override {}
    void subcase_end() override {}
    void log_assert(const doctest::AssertData&) override {}
    void log_message(const doctest::MessageData&) override {}
    void test_case_skipped(const doctest::TestCaseData&) override {}
};
DOCTEST_REGISTER_LISTENER("case_outcomes", 1, outcome_listener);

// The exit status of a run whose doctest result is `doctest_rc` (see case_outcomes).
inline int finish_run(int doctest_rc) {
    const auto& o = outcomes();
    for (const auto& n : o.empty) {
        std::printf("FAIL: test case \"%s\" ran no assertion (a silent skip is not a pass)\n",
                    n.c_str());
    }
    if (doctest_rc != 0) return doctest_rc;
    if (!o.empty.empty()) return 1;
    if (!o.skipped.empty()) {
        std::printf("SKIP: %zu test case(s) could not run here (exit 77):\n", o.skipped.size());
        for (const auto& n : o.skipped) std::printf("  %s\n", n.c_str());
        return 77;
    }
    return 0;
}

inline std::string random_suffix() {
    std::random_device rd;
    char buf[8];
    std::snprintf(buf, sizeof buf, "%06x", rd() & 0xffffff);
    return buf;
}

// An anonymous network namespace kept alive by an fd.
class test_ns {
public:
    test_ns() {
        int fd = -1;
        std::thread t([&] {
            if (unshare(CLONE_NEWNET) != 0) return;
            fd = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        });
        t.join();
        REQUIRE_MESSAGE(fd >= 0, "creating a network namespace (needs root)");
        fd_.reset(fd);
        path_ = "/proc/" + std::to_string(getpid()) + "/fd/" + std::to_string(fd);
        auto ns = netns::open(path_);
        REQUIRE(ns.ok());
        ns_ = std::make_unique<netns>(std::move(*ns));
        auto nl = rtnl::open_in(*ns_);
        REQUIRE(nl.ok());
        auto lo = nl->get_link("lo");
        REQUIRE(lo.ok());
        REQUIRE(nl->set_link_up(lo->index).ok());
    }
    const std::string& path() const { return path_; }
    int fd() const { return fd_.get(); }
    const netns& ns() const { return *ns_; }
    rtnl nl() const {
        auto r = rtnl::open_in(*ns_);
        REQUIRE(r.ok());
        return std::move(*r);
    }
    // Runs a shell command inside the namespace; returns its exit code and output.
    int run(const std::string& cmd, std::string* out = nullptr) const {
        int rc = -1;
        std::string text;
        auto st = ns_->run([&]() -> status {
            FILE* f = popen((cmd + " 2>&1").c_str(), "r");
            if (!f) return error::from_errno(errno, "popen");
            char buf[4096];
            size_t n;
            while ((n = fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
            int ws = pclose(f);
            rc = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
            return {};
        });
        REQUIRE(st.ok());
        if (out) *out = text;
        return rc;
    }

private:
    unique_fd fd_;
    std::string path_;
    std::unique_ptr<netns> ns_;
};

inline ip_prefix pfx(const std::string& s) {
    auto p = ip_prefix::parse(s);
    REQUIRE_MESSAGE(p.ok(), s);
    return *p;
}

inline wg_endpoint ep(const std::string& s) {
    auto e = wg_endpoint::parse(s);
    REQUIRE_MESSAGE(e.ok(), s);
    return *e;
}

// Pings `dst` from inside `ns`, allowing a few seconds for the first handshake.
inline bool ping(const test_ns& ns, const std::string& dst, const std::string& src) {
    std::string out;
    bool v6 = dst.find(':') != std::string::npos;
    std::string cmd =
        std::string(v6 ? "ping -6" : "ping -4") + " -n -c 1 -w 8 -I " + src + " " + dst;
    int rc = ns.run(cmd, &out);
    if (rc != 0) MESSAGE("ping failed: " << cmd << "\n" << out);
    return rc == 0;
}

// One parsed line of `wg show <if> dump`.
struct dump_peer {
    std::string public_key, preshared_key, endpoint, allowed_ips, keepalive;
};
struct dump_device {
    std::string private_key, public_key, listen_port, fwmark;
    std::vector<dump_peer> peers;
};

inline dump_device wg_dump(const test_ns& ns, const std::string& ifname) {
    std::string out;
    int rc = ns.run("wg show " + ifname + " dump", &out);
    REQUIRE_MESSAGE(rc == 0, out);
    dump_device d;
    std::istringstream in(out);
    std::string line;
    bool first = true;
    while (std::getline(in, line)) {
        std::vector<std::string> f;
        std::istringstream ls(line);
        std::string w;
        while (std::getline(ls, w, '\t')) f.push_back(w);
        if (first) {
            REQUIRE(f.size() == 4);
            d.private_key = f[0];
            d.public_key = f[1];
            d.listen_port = f[2];
            d.fwmark = f[3];
            first = false;
        } else {
            REQUIRE(f.size() == 8);
            d.peers.push_back({f[0], f[1], f[2], f[3], f[7]});
        }
    }
    return d;
}

// `wg` prints allowed-ips comma-separated in the device's order; compare as sorted sets.
inline std::string sorted_csv(const std::string& csv) {
    std::vector<std::string> v;
    std::istringstream in(csv);
    std::string w;
    while (std::getline(in, w, ',')) v.push_back(w);
    std::sort(v.begin(), v.end());
    std::string s;
    for (auto& x : v) s += (s.empty() ? "" : ",") + x;
    return s;
}

inline std::string expected_csv(const wg_peer& p) {
    if (p.allowed_ips.empty()) return "(none)";
    std::string s;
    for (auto& a : p.allowed_ips) s += (s.empty() ? "" : ",") + a.network().str();
    return sorted_csv(s);
}

// Checks that `wg show dump` reports exactly the configuration in `want`.
inline void check_dump_matches(const test_ns& ns, const std::string& ifname,
                               const wg_device& want) {
    auto d = wg_dump(ns, ifname);
    CHECK(d.private_key == want.private_key->to_base64());
    CHECK(d.public_key == want.private_key->public_key().to_base64());
    CHECK(d.listen_port == std::to_string(*want.listen_port));
    char mark[16];
    std::snprintf(mark, sizeof mark, "0x%x", want.fwmark.value_or(0));
    CHECK(d.fwmark == (want.fwmark.value_or(0) ? std::string(mark) : "off"));
    REQUIRE(d.peers.size() == want.peers.size());
    for (const auto& dp : d.peers) {
        auto k = wg_key::from_base64(dp.public_key);
        REQUIRE(k.ok());
        const wg_peer* p = want.find_peer(*k);
        REQUIRE_MESSAGE(p != nullptr, "unexpected peer " << dp.public_key);
        CHECK(dp.preshared_key == (p->preshared_key ? p->preshared_key->to_base64() : "(none)"));
        CHECK(dp.endpoint == (p->endpoint ? p->endpoint->str() : "(none)"));
        CHECK(sorted_csv(dp.allowed_ips) == expected_csv(*p));
        CHECK(dp.keepalive ==
              (p->persistent_keepalive ? std::to_string(p->persistent_keepalive) : "off"));
    }
}

inline bool has_owned_route(const test_ns& ns, const std::string& ifname, const std::string& dst) {
    auto nl = ns.nl();
    auto link = nl.get_link(ifname);
    REQUIRE(link.ok());
    auto want = pfx(dst);
    auto routes = nl.list_routes(want.family());
    REQUIRE(routes.ok());
    for (const auto& r : *routes) {
        if (r.oif == link->index && r.dst == want && r.protocol == k_wg_route_protocol) return true;
    }
    return false;
}

// One node: a namespace, a WireGuard interface, its backend and reconciler, and its config.
struct node {
    std::unique_ptr<test_ns> ns;
    std::string ifname;
    std::unique_ptr<wg_backend> backend;
    std::unique_ptr<wg_reconciler> rec;
    wg_interface_config cfg;
    std::string tunnel_v4, tunnel_v6;  // the node's own tunnel addresses (no prefix)

    ~node() {
        rec.reset();
        if (backend) (void)backend->down();
    }

    void apply() {
        auto r = rec->apply(cfg);
        REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.err().message));
    }
    wg_device read() {
        auto d = backend->get();
        REQUIRE_MESSAGE(d.ok(), (d.ok() ? "" : d.err().message));
        return *d;
    }
};

// Node i (1 or 2) owns 10.99.i.0/24 and fd99:i::/64, uses address .1 in both on its interface.
inline void init_node(node& n, int i, uint16_t port) {
    n.cfg.device.private_key = wg_key::generate_private();
    n.cfg.device.listen_port = port;
    n.tunnel_v4 = "10.99." + std::to_string(i) + ".1";
    n.tunnel_v6 = "fd99:" + std::to_string(i) + "::1";
    n.cfg.addresses = {pfx(n.tunnel_v4 + "/32"), pfx(n.tunnel_v6 + "/128")};
}

inline wg_peer peer_for(const node& other, int other_i, const std::string& endpoint) {
    wg_peer p;
    p.public_key = other.cfg.device.private_key->public_key();
    p.endpoint = ep(endpoint);
    p.allowed_ips = {pfx("10.99." + std::to_string(other_i) + ".0/24"),
                     pfx("fd99:" + std::to_string(other_i) + "::/64")};
    return p;
}

}  // namespace wg_e2e
