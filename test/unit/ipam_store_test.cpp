#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "cni-plugin/ipam_store.hpp"

using namespace mw;
using namespace mw::cni;
namespace fs = std::filesystem;

namespace {
struct ipam_tmp_dir {
    fs::path path;
    ipam_tmp_dir() {
        char tmpl[] = "/tmp/mw-ipam-test-XXXXXX";
        path = mkdtemp(tmpl);
    }
    ~ipam_tmp_dir() { fs::remove_all(path); }
};
std::string slurp(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}
}  // namespace

TEST_CASE("allocator never hands out network, gateway or broadcast and exhausts cleanly") {
    ipam_tmp_dir d;
    auto range = *ip_prefix::parse("10.9.0.0/29");  // .0 net, .1 gw, .7 bcast -> .2-.6 usable
    std::set<std::string> got;
    {
        auto store = ipam_store::open_locked(d.path, "net");
        REQUIRE(store);
        for (int i = 0; i < 5; ++i) {
            auto ip = store->allocate(range, 0, {"c" + std::to_string(i), "eth0"});
            REQUIRE(ip);
            got.insert(ip->str());
        }
        auto full = store->allocate(range, 0, {"c-extra", "eth0"});
        REQUIRE_FALSE(full);
        CHECK(full.err().is(errc::exhausted));
        CHECK(full.err().message.find("exhausted") != std::string::npos);
    }
    CHECK(got == std::set<std::string>{"10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"});
    // host-local layout
    CHECK(slurp(d.path / "net" / "10.9.0.2") == "c0\r\neth0");
    CHECK(fs::exists(d.path / "net" / "lock"));
    CHECK(slurp(d.path / "net" / "last_reserved_ip.0") == "10.9.0.6");
}

TEST_CASE("allocation is idempotent per container and ifname, and release frees") {
    ipam_tmp_dir d;
    auto range = *ip_prefix::parse("fd00:5::/120");
    auto store = ipam_store::open_locked(d.path, "net");
    REQUIRE(store);
    bool created = false;
    auto a = store->allocate(range, 1, {"ctr", "eth0"}, &created);
    REQUIRE(a);
    CHECK(created);
    CHECK(a->str() == "fd00:5::2");
    auto again = store->allocate(range, 1, {"ctr", "eth0"}, &created);
    CHECK(*again == *a);
    CHECK_FALSE(created);
    auto other_if = store->allocate(range, 1, {"ctr", "net1"});
    CHECK_FALSE(*other_if == *a);
    CHECK(store->find({"ctr", "eth0"})->size() == 1);
    CHECK(*store->release_all({"ctr", "eth0"}) == 1);
    CHECK(store->find({"ctr", "eth0"})->empty());
    CHECK(store->find({"ctr", "net1"})->size() == 1);
    // next allocation continues after the last reserved one, not at the freed address
    auto next = store->allocate(range, 1, {"ctr2", "eth0"});
    CHECK(next->str() == "fd00:5::4");
}

TEST_CASE("allocation wraps around after the end of the range") {
    ipam_tmp_dir d;
    auto range = *ip_prefix::parse("10.9.1.0/30");  // only .2 usable
    auto store = ipam_store::open_locked(d.path, "net");
    auto a = store->allocate(range, 0, {"a", "eth0"});
    CHECK(a->str() == "10.9.1.2");
    CHECK(*store->release_all({"a", "eth0"}) == 1);
    auto b = store->allocate(range, 0, {"b", "eth0"});
    CHECK(b->str() == "10.9.1.2");
}

TEST_CASE("concurrent processes never share an address") {
    ipam_tmp_dir d;
    auto range = *ip_prefix::parse("10.9.2.0/24");
    constexpr int k_procs = 20;
    std::vector<pid_t> pids;
    for (int i = 0; i < k_procs; ++i) {
        pid_t p = fork();
        if (p == 0) {
            auto store = ipam_store::open_locked(d.path, "net");
            if (!store) _exit(2);
            auto ip = store->allocate(range, 0, {"p" + std::to_string(i), "eth0"});
            _exit(ip ? 0 : 3);
        }
        pids.push_back(p);
    }
    for (pid_t p : pids) {
        int st = 0;
        waitpid(p, &st, 0);
        CHECK(WIFEXITED(st));
        CHECK(WEXITSTATUS(st) == 0);
    }
    auto store = ipam_store::open_locked(d.path, "net");
    auto all = store->list();
    REQUIRE(all);
    std::set<std::string> ips, owners;
    for (auto& [ip, who] : *all) {
        ips.insert(ip.str());
        owners.insert(who.container_id);
    }
    CHECK(ips.size() == k_procs);
    CHECK(owners.size() == k_procs);
}

TEST_CASE("usable span") {
    auto [f4, l4] = ipam_store::usable_span(*ip_prefix::parse("10.0.0.0/24"));
    CHECK(ip_address::from_u128(AF_INET, f4).str() == "10.0.0.2");
    CHECK(ip_address::from_u128(AF_INET, l4).str() == "10.0.0.254");
    auto [f6, l6] = ipam_store::usable_span(*ip_prefix::parse("fd00::/64"));
    CHECK(ip_address::from_u128(AF_INET6, f6).str() == "fd00::2");
    CHECK(ip_address::from_u128(AF_INET6, l6).str() == "fd00::ffff:ffff:ffff:ffff");
}

TEST_CASE("a killed writer's temporary files are swept and never count as allocations") {
    ipam_tmp_dir d;
    auto range = *ip_prefix::parse("10.9.3.0/29");
    { REQUIRE(ipam_store::open_locked(d.path, "net")); }
    // what a plugin SIGKILLed mid-write leaves: a partial reservation and a STATUS probe
    std::ofstream(d.path / "net" / ".tmp.10.9.3.2.4242") << "half-writ";
    std::ofstream(d.path / "net" / ".tmp.last_reserved_ip.0.4242") << "10.9";
    std::ofstream(d.path / "net" / ".status-probe.4243") << "ok";
    auto store = ipam_store::open_locked(d.path, "net");
    REQUIRE(store);
    CHECK(store->list()->empty());
    auto ip = store->allocate(range, 0, {"ctr", "eth0"});
    REQUIRE(ip);
    CHECK(ip->str() == "10.9.3.2");
    std::set<std::string> names;
    for (auto& e : fs::directory_iterator(d.path / "net")) names.insert(e.path().filename());
    CHECK(names == std::set<std::string>{"lock", "last_reserved_ip.0", "10.9.3.2"});
    // written whole: never an empty or partial reservation
    CHECK(slurp(d.path / "net" / "10.9.3.2") == "ctr\r\neth0");
    CHECK(slurp(d.path / "net" / "last_reserved_ip.0") == "10.9.3.2");
}

TEST_CASE("a reservation file that already exists is skipped, not overwritten") {
    ipam_tmp_dir d;
    auto range = *ip_prefix::parse("10.9.4.0/29");
    auto store = ipam_store::open_locked(d.path, "net");
    REQUIRE(store);
    std::ofstream(d.path / "net" / "10.9.4.2") << "other\r\neth0";  // a lock-ignoring writer's
    auto ip = store->allocate(range, 0, {"ctr", "eth0"});
    REQUIRE(ip);
    CHECK(ip->str() == "10.9.4.3");
    CHECK(slurp(d.path / "net" / "10.9.4.2") == "other\r\neth0");
}
