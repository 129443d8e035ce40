// The files meshd's startup reads and writes: the identity seed, the PSK file, node.json (read back
// with the CNI plugin's own reader), and the relayNodes diff used by live reload.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <span>
#include <string>

#include "cni-plugin/net_conf.hpp"
#include "meshd/identity_store.hpp"
#include "meshd/meshd_cli.hpp"
#include "meshd/node_file.hpp"
#include "meshd/psk_file.hpp"
#include "meshd/relay_nodes_diff.hpp"

#include "meshd_test_util.hpp"

namespace fs = std::filesystem;
using namespace mw::meshd;

namespace {

// meshd_test::tmp_dir, named for these tests.
struct files_tmp_dir : meshd_test::tmp_dir {
    files_tmp_dir() : meshd_test::tmp_dir("/tmp/mw-meshd-files") {}
};

void write_file(const std::string& path, const std::string& content, mode_t mode) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
    REQUIRE(chmod(path.c_str(), mode) == 0);
}

mode_t mode_of(const std::string& path) {
    struct stat st {};
    REQUIRE(stat(path.c_str(), &st) == 0);
    return st.st_mode & 07777;
}

relay_node relay(const std::string& name, std::initializer_list<const char*> addrs) {
    relay_node r;
    r.node_name = name;
    for (const char* a : addrs) r.advertise_address.push_back(mw::ip_address::parse(a).value());
    return r;
}

}  // namespace

TEST_CASE("identity_store: created once 0600 in a new 0700 state dir, reloaded unchanged") {
    files_tmp_dir d;
    std::string state = d.path + "/var/lib/meshwire";
    identity_store store(state);
    auto absent = store.load();
    REQUIRE_FALSE(absent.ok());
    CHECK(absent.err().is(mw::errc::not_found));

    auto first = store.load_or_create();
    REQUIRE(first.ok());
    CHECK(first->created);
    CHECK(first->path == state + "/node.seed");
    CHECK(mode_of(state) == 0700);
    CHECK(mode_of(first->path) == 0600);
    CHECK(fs::file_size(first->path) == 32);
    // Nothing but the seed is left in the directory (no temp file).
    CHECK(std::distance(fs::directory_iterator(state), fs::directory_iterator()) == 1);

    auto second = store.load_or_create();
    REQUIRE(second.ok());
    CHECK_FALSE(second->created);
    CHECK(second->identity.id() == first->identity.id());
    CHECK(second->identity.wg_public_key() == first->identity.wg_public_key());
    // The WireGuard public key is the one `wg pubkey` would print for the derived private key.
    auto priv = second->identity.wg_private_key();
    CHECK(priv.public_key().to_base64() == second->identity.wg_public_key().to_base64());
    CHECK(second->identity.wg_public_key().to_base64().size() == 44);
    priv.wipe();

    // A different state dir is a different node.
    auto other = identity_store(d.path + "/other").load_or_create();
    REQUIRE(other.ok());
    CHECK_FALSE(other->identity.id() == first->identity.id());
}

TEST_CASE("identity_store: refuses a seed of the wrong size, loose permissions or a symlink") {
    files_tmp_dir d;
    identity_store store(d.path);
    SUBCASE("wrong size") {
        write_file(store.path(), std::string(31, 'x'), 0600);
        auto r = store.load_or_create();
        REQUIRE_FALSE(r.ok());
        CHECK(r.err().message.find("has 31 bytes, expected 32") != std::string::npos);
        CHECK(fs::file_size(store.path()) == 31);  // never overwritten
    }
    SUBCASE("group or world readable") {
        write_file(store.path(), std::string(32, 'x'), 0644);
        auto r = store.load_or_create();
        REQUIRE_FALSE(r.ok());
        CHECK(r.err().message.find("is accessible by group or others") != std::string::npos);
        write_file(store.path(), std::string(32, 'x'), 0640);
        CHECK_FALSE(store.load().ok());
        write_file(store.path(), std::string(32, 'x'), 0600);
        CHECK(store.load().ok());
    }
    SUBCASE("symlink") {
        write_file(d.path + "/real", std::string(32, 'x'), 0600);
        REQUIRE(symlink((d.path + "/real").c_str(), store.path().c_str()) == 0);
        auto r = store.load();
        REQUIRE_FALSE(r.ok());
        CHECK(r.err().message.find("symbolic link") != std::string::npos);
    }
    SUBCASE("the seed never appears in an error message") {
        std::string seed(33, 'Q');
        write_file(store.path(), seed, 0600);
        auto r = store.load();
        REQUIRE_FALSE(r.ok());
        CHECK(r.err().message.find("QQQQ") == std::string::npos);
    }
}

TEST_CASE("identity_store: refuses a state dir or seed others can reach, or another user's") {
    if (geteuid() != 0) {  // it chowns to another uid
        MESSAGE("skipped: needs root");
        return;
    }
    files_tmp_dir d;
    const std::string state = d.path + "/state";
    identity_store store(state);
    SUBCASE("an existing state dir group/other-accessible: refused, not repaired, no seed") {
        REQUIRE(mkdir(state.c_str(), 0700) == 0);
        for (mode_t m : {0755, 0750, 0705, 0770}) {
            REQUIRE(chmod(state.c_str(), m) == 0);
            auto r = store.load_or_create();
            REQUIRE_FALSE(r.ok());
            CHECK_MESSAGE(r.err().message.find("stateDir " + state +
                                               " is accessible by group or others") == 0,
                          r.err().message);
            CHECK(r.err().message.find("chmod 700 " + state) != std::string::npos);
            CHECK_FALSE(fs::exists(store.path()));
            CHECK(mode_of(state) == m);
            CHECK_FALSE(store.load().ok());  // --check-config says the same
        }
        REQUIRE(chmod(state.c_str(), 0700) == 0);
        CHECK(store.load_or_create().ok());
        // A seed that exists is refused too once the dir is opened up.
        REQUIRE(chmod(state.c_str(), 0711) == 0);
        auto r = store.load();
        REQUIRE_FALSE(r.ok());
        CHECK(r.err().message.find("accessible by group or others (mode 0711)") !=
              std::string::npos);
    }
    SUBCASE("a state dir or seed owned by another user") {
        REQUIRE(mkdir(state.c_str(), 0700) == 0);
        REQUIRE(chown(state.c_str(), 65534, 65534) == 0);
        auto r = store.load_or_create();
        REQUIRE_FALSE(r.ok());
        CHECK_MESSAGE(r.err().message.find("is owned by uid 65534, not by meshd's uid 0") !=
                          std::string::npos,
                      r.err().message);
        REQUIRE(chown(state.c_str(), 0, 0) == 0);
        write_file(store.path(), std::string(32, 'x'), 0600);
        REQUIRE(chown(store.path().c_str(), 65534, 65534) == 0);
        auto s = store.load_or_create();
        REQUIRE_FALSE(s.ok());
        CHECK_MESSAGE(
            s.err().message.find("node identity " + store.path() + " is owned by uid 65534") == 0,
            s.err().message);
    }
    SUBCASE("the seed's temp file is never one that already exists") {
        // Before: the temp name was node.seed.tmp.<pid>, opened with O_CREAT|O_TRUNC, so a file
        // planted under that name (the other user keeping it open) received the seed.
        REQUIRE(mkdir(state.c_str(), 0700) == 0);
        const std::string planted = store.path() + ".tmp." + std::to_string(getpid());
        write_file(planted, "", 0666);
        int fd = open(planted.c_str(), O_RDONLY | O_CLOEXEC);
        REQUIRE(fd >= 0);
        auto r = store.load_or_create();
        REQUIRE(r.ok());
        char buf[64];
        ssize_t n = pread(fd, buf, sizeof buf, 0);
        close(fd);
        CHECK(n == 0);  // the planted file got nothing
        CHECK(fs::exists(planted));
        fs::remove(planted);
        // Only the seed is left: the temp file was unlinked after the link.
        CHECK(std::distance(fs::directory_iterator(state), fs::directory_iterator()) == 1);
        CHECK(mode_of(store.path()) == 0600);
    }
}

// Keys as the generators make them: `head -c 32 /dev/urandom | base64` (44 characters) and
// Python's secrets.token_hex(32) (64), which the e2e harness uses.
constexpr const char* good_b64 = "q3Z0R8k1mJv7XyT2bL9sWc4HdN6aPfE0gUiO5rKxYzA=";
constexpr const char* good_hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

TEST_CASE("psk_file: permissions, size and trailing newline rules") {
    files_tmp_dir d;
    std::string p = d.path + "/psk";
    SUBCASE("a 0600 base64 key with a newline: the text itself is the key") {
        write_file(p, std::string(good_b64) + "\n", 0600);
        auto r = psk_file::read(p);
        REQUIRE(r.ok());
        CHECK(std::string(r->bytes().begin(), r->bytes().end()) == good_b64);
        CHECK(r->warning().empty());
    }
    SUBCASE("echo and printf give the same key") {
        write_file(p, std::string(good_hex) + "\r\n", 0400);
        auto a = psk_file::read(p);
        write_file(p, good_hex, 0400);
        auto b = psk_file::read(p);
        REQUIRE(a.ok());
        REQUIRE(b.ok());
        CHECK(
            std::equal(a->bytes().begin(), a->bytes().end(), b->bytes().begin(), b->bytes().end()));
    }
    SUBCASE("world-readable is refused, group-readable warned about") {
        write_file(p, good_hex, 0644);
        auto r = psk_file::read(p);
        REQUIRE_FALSE(r.ok());
        CHECK(r.err().message.find("is readable or writable by others (mode 0644)") !=
              std::string::npos);
        CHECK(r.err().message.find("defaultMode") != std::string::npos);
        write_file(p, good_hex, 0620);
        CHECK_FALSE(psk_file::read(p).ok());
        write_file(p, good_hex, 0440);
        auto g = psk_file::read(p);
        REQUIRE(g.ok());
        CHECK(g->warning().find("readable by its group") != std::string::npos);
    }
    SUBCASE("too short, too long, missing") {
        write_file(p, "short-key-15byt\n", 0600);
        auto s = psk_file::read(p);
        REQUIRE_FALSE(s.ok());
        CHECK(s.err().message.find("has 15 bytes; at least 32 are required") != std::string::npos);
        CHECK(s.err().message.find("short-key") == std::string::npos);  // never echoes the key
        write_file(p, std::string(5000, 'k'), 0600);
        CHECK(psk_file::read(p).err().message.find("larger than 4096 bytes") != std::string::npos);
        auto m = psk_file::read(d.path + "/none");
        REQUIRE_FALSE(m.ok());
        CHECK(m.err().is(mw::errc::not_found));
        CHECK(m.err().message.find("psk.path: PSK file " + d.path + "/none does not exist") == 0);
    }
}

TEST_CASE("psk_file: a key with less than 32 bytes of entropy is refused with the generator") {
    files_tmp_dir d;
    std::string p = d.path + "/psk";
    auto refused = [&](const std::string& key, const std::string& why) {
        write_file(p, key, 0600);
        auto r = psk_file::read(p);
        REQUIRE_FALSE(r.ok());
        CHECK(r.err().is(mw::errc::invalid_argument));
        const std::string& m = r.err().message;
        CHECK_MESSAGE(m.find(why) != std::string::npos, m);
        CHECK(m.find("psk.path: the PSK in " + p + " is too weak") == 0);
        CHECK(m.find("head -c 32 /dev/urandom | base64 > " + p) != std::string::npos);
        if (key.size() >= 8) CHECK(m.find(key.substr(0, 8)) == std::string::npos);
    };
    // 16 bytes was the old minimum: the first three were accepted before this check.
    refused("0123456789abcdef", "has 16 bytes; at least 32 are required");
    refused("not-the-cluster-key-0123456789", "has 30 bytes");
    // Text: 32..43 characters of printable text is a password, not a key.
    refused("correct-horse-battery-staple-2024-xyz", "text of 37 characters");
    refused(std::string(good_b64).substr(0, 43), "text of 43 characters");
    // Low entropy in any length.
    refused(std::string(64, 'A'), "only 1 distinct byte values");
    refused(std::string(64, '\0'), "only 1 distinct byte values");
    std::string bin_pattern;
    for (int i = 0; i < 8; ++i) bin_pattern += std::string("\x01\x02\x03\xf4", 4);
    refused(bin_pattern, "only 4 distinct byte values");
    std::string words;
    while (words.size() < 60) words += "0123456789abcdefgh";
    refused(words, "repeats a pattern of 18 bytes");
    // Accepted: what the generators give, and 32 random bytes as they come.
    for (std::string key : {std::string(good_b64), std::string(good_hex)}) {
        write_file(p, key, 0600);
        CHECK_MESSAGE(psk_file::read(p).ok(), key);
    }
    std::string raw;
    for (int i = 0; i < 32; ++i) raw.push_back(static_cast<char>((i * 73 + 41) & 0xff));
    write_file(p, raw, 0600);
    CHECK(psk_file::read(p).ok());
    CHECK(psk_file::check_strength(
              std::span(reinterpret_cast<const uint8_t*>(raw.data()), raw.size()))
              .empty());
}

TEST_CASE("node_file: written atomically and read back by the CNI plugin's reader") {
    files_tmp_dir d;
    std::string path = d.path + "/run/meshwire/node.json";
    node_file nf{"edge-1",
                 {mw::ip_prefix::parse("10.244.1.0/24").value(),
                  mw::ip_prefix::parse("fd00:244:1::/64").value()},
                 std::nullopt};
    REQUIRE(nf.write(path).ok());
    CHECK(mode_of(path) == 0644);
    auto cidrs = mw::cni::read_node_file(path);
    REQUIRE(cidrs.ok());
    REQUIRE(cidrs->size() == 2);
    CHECK((*cidrs)[0].str() == "10.244.1.0/24");
    CHECK((*cidrs)[1].str() == "fd00:244:1::/64");
    CHECK(nf.to_json().find("\"mtu\"") == std::string::npos);
    CHECK_FALSE(mw::cni::read_node_file_mtu(path).has_value());

    // Rewrite with an MTU: replaced in place, no temp file left behind.
    nf.mtu = 1380;
    nf.pod_cidrs.pop_back();
    REQUIRE(nf.write(path).ok());
    auto again = mw::cni::read_node_file(path);
    REQUIRE(again.ok());
    CHECK(again->size() == 1);
    auto j = nlohmann::json::parse(std::ifstream(path));
    CHECK(j["nodeName"] == "edge-1");
    CHECK(j["mtu"] == 1380);
    // The plugin takes meshd's MTU for the pods (the WireGuard interface has the same one).
    CHECK(mw::cni::read_node_file_mtu(path) == 1380u);
    CHECK_FALSE(mw::cni::read_node_file_mtu(d.path + "/missing.json").has_value());
    CHECK(std::distance(fs::directory_iterator(d.path + "/run/meshwire"),
                        fs::directory_iterator()) == 1);
}

TEST_CASE("relay_nodes_diff: added, removed, changed, this node listed or unlisted") {
    std::vector<relay_node> old_list{relay("r1", {"1.1.1.1"}), relay("r2", {"2.2.2.2"}),
                                     relay("r3", {"3.3.3.3"})};
    SUBCASE("no change") {
        auto d = relay_nodes_diff(old_list, old_list, "r1");
        CHECK(d.empty());
        CHECK_FALSE(d.self_listed);
        CHECK_FALSE(d.self_unlisted);
    }
    SUBCASE("each kind of change") {
        std::vector<relay_node> new_list{relay("r2", {"2.2.2.2", "2001:db8::2"}),
                                         relay("r1", {"1.1.1.1"}), relay("me", {"9.9.9.9"})};
        auto d = relay_nodes_diff(old_list, new_list, "me");
        REQUIRE(d.added.size() == 1);
        CHECK(d.added[0].node_name == "me");
        REQUIRE(d.removed.size() == 1);
        CHECK(d.removed[0].node_name == "r3");
        REQUIRE(d.changed.size() == 1);
        CHECK(d.changed[0].node_name == "r2");
        CHECK(d.changed[0].advertise_address.size() == 2);  // the new entry
        CHECK(d.self_listed);
        CHECK_FALSE(d.self_unlisted);

        auto back = relay_nodes_diff(new_list, old_list, "me");
        CHECK(back.self_unlisted);
        CHECK_FALSE(back.self_listed);
        CHECK(back.removed.size() == 1);
        CHECK(back.added.size() == 1);
    }
    SUBCASE("address order is a change (it is the order addresses are tried in)") {
        auto d = relay_nodes_diff({relay("r1", {"1.1.1.1", "1.1.1.2"})},
                                  {relay("r1", {"1.1.1.2", "1.1.1.1"})}, "x");
        CHECK(d.changed.size() == 1);
        CHECK(d.added.empty());
        CHECK(d.removed.empty());
    }
    SUBCASE("from and to an empty list") {
        auto d = relay_nodes_diff({}, old_list, "r3");
        CHECK(d.added.size() == 3);
        CHECK(d.self_listed);
        auto e = relay_nodes_diff(old_list, {}, "r3");
        CHECK(e.removed.size() == 3);
        CHECK(e.self_unlisted);
    }
}

TEST_CASE("meshd command line") {
    auto parse = [](std::vector<const char*> args) {
        args.insert(args.begin(), "meshd");
        return parse_cli(static_cast<int>(args.size()), args.data());
    };
    auto def = parse({});
    REQUIRE(def.ok());
    CHECK(def->what == cli_options::mode::run);
    CHECK(def->config_path == "/etc/meshwire/meshd.yaml");
    CHECK(parse({"--check-config", "--config", "/x.yaml"})->what ==
          cli_options::mode::check_config);
    CHECK(parse({"--check-config", "--config", "/x.yaml"})->config_path == "/x.yaml");
    CHECK(parse({"--config=/y.yaml"})->config_path == "/y.yaml");
    CHECK(parse({"-c", "/z.yaml", "--help"})->what == cli_options::mode::help);
    CHECK(parse({"--version"})->what == cli_options::mode::version);
    CHECK(parse({"--config"}).err().message == "--config needs a FILE");
    CHECK(parse({"-c", "/a", "-c", "/b"}).err().message == "--config given twice");
    CHECK(parse({"--frobnicate"}).err().message == "unknown argument \"--frobnicate\"");
    std::string help = help_text();
    for (const char* s : {"--check-config", "EXIT STATUS", "relayNodes", "node.seed", "64", "78"}) {
        CHECK_MESSAGE(help.find(s) != std::string::npos, s);
    }
}
