// The relay role file (meshd/relay_role_file.hpp): what a restarted relay's meshd serves on at
// once. Unusable files are errors (the daemon logs them and verifies first), never a crash.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <fstream>
#include <string>

#include "meshd/relay_role_file.hpp"

#include "meshd_test_util.hpp"

using namespace mw;
using namespace mw::meshd;

namespace {

struct role_tmp_dir : meshd_test::tmp_dir {
    role_tmp_dir() : meshd_test::tmp_dir("/tmp/mw-relay-role-file") {}
};

saved_role_file role_sample() {
    saved_role_file r;
    r.listed = true;
    r.advertised = {wg_endpoint::parse("203.0.113.11:51821").value(),
                    wg_endpoint::parse("[2001:db8::11]:51821").value()};
    r.verified = {r.advertised[1]};
    r.at.boot = parse_boot_id("0123abcd-4567-89ab-cdef-0123456789ab\n").value();
    r.at.boottime_ms = 123456;
    r.at.unix_ms = 1765000000000;
    return r;
}

bool same(const saved_role_file& a, const saved_role_file& b) {
    return a.listed == b.listed && a.advertised == b.advertised && a.verified == b.verified &&
           a.at.boot == b.at.boot && a.at.boottime_ms == b.at.boottime_ms &&
           a.at.unix_ms == b.at.unix_ms;
}

}  // namespace

TEST_CASE("relay role file: encode/decode round trip") {
    const auto r = role_sample();
    const auto text = relay_role_file::encode(r);
    CHECK(text.starts_with("meshwire-relay-role 1\n"));
    auto d = relay_role_file::decode(text);
    REQUIRE(d);
    CHECK(same(*d, r));
    auto off = r;
    off.listed = false;
    CHECK(same(relay_role_file::decode(relay_role_file::encode(off)).value(), off));
}

TEST_CASE("relay role file: unusable contents are refused, never a crash") {
    const std::string good = relay_role_file::encode(role_sample());
    auto refused = [](const std::string& t) {
        auto d = relay_role_file::decode(t);
        return !d && d.err().is(errc::protocol_error);
    };
    CHECK(refused(""));
    CHECK(refused("\n"));
    CHECK(refused("meshwire-relay-role 2\n" + good.substr(good.find('\n') + 1)));
    CHECK(refused(good.substr(0, good.size() - 1)));          // truncated: no final newline
    CHECK(refused(good.substr(0, good.find("advertised"))));  // no address
    CHECK(refused(good + "verified 203.0.113.999:51821\n"));  // bad endpoint
    CHECK(refused(good + "color blue\n"));                    // unknown line
    CHECK(refused(good + "mode maybe\n"));
    CHECK(refused(good + "unix_ms -5\n"));
    CHECK(refused(good + "boot 0123\n"));
    std::string no_boot = good;
    no_boot.erase(no_boot.find("boot "),
                  no_boot.find('\n', no_boot.find("boot ")) - no_boot.find("boot ") + 1);
    CHECK(refused(no_boot));
    CHECK(refused(good + std::string(relay_role_file::max_file_size, 'x') + "\n"));
    std::string binary = good;
    binary[3] = '\0';
    CHECK(refused(binary));
}

TEST_CASE("relay role file: save, load, remove") {
    role_tmp_dir d;
    relay_role_file f(d.path);
    auto none = f.load();
    REQUIRE(!none);
    CHECK(none.err().is(errc::not_found));
    CHECK(f.remove());  // none is fine

    const auto r = role_sample();
    REQUIRE(f.save(r));
    struct stat st {};
    REQUIRE(stat(f.path().c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    CHECK(same(f.load().value(), r));
    auto r2 = r;
    r2.at.boottime_ms += 20000;
    REQUIRE(f.save(r2));  // replaces
    CHECK(same(f.load().value(), r2));

    // Garbage in the file (a torn write after a power loss): an error, not a crash.
    std::ofstream(f.path(), std::ios::trunc) << "meshwire-relay-role 1\nboot 01";
    auto bad = f.load();
    REQUIRE(!bad);
    CHECK(bad.err().is(errc::protocol_error));
    std::ofstream(f.path(), std::ios::trunc) << "";
    CHECK(!f.load());
    REQUIRE(f.remove());
    CHECK(f.load().err().is(errc::not_found));
}
