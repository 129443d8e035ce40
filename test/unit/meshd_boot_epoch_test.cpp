// boot_epoch: larger on every start even with a clock that went backwards; stored 0600 and
// atomically; refuses files something else wrote.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "meshd/boot_epoch.hpp"

#include "meshd_test_util.hpp"

namespace fs = std::filesystem;
using namespace mw::meshd;

namespace {

// meshd_test::tmp_dir, named for these tests.
struct epoch_tmp_dir : meshd_test::tmp_dir {
    epoch_tmp_dir() : meshd_test::tmp_dir("/tmp/mw-boot-epoch") {}
};

}  // namespace

TEST_CASE("boot_epoch: max(stored + 1, now), stored before use, 0600") {
    epoch_tmp_dir d;
    const std::string state = d.path + "/state";  // created on first use
    boot_epoch e(state);
    CHECK(e.load().err().is(mw::errc::not_found));
    CHECK(e.next(1'764'000'000).value() == 1'764'000'000);
    CHECK(e.load().value() == 1'764'000'000);
    // Restarted within the same second, or with the clock set back an hour: still larger.
    CHECK(e.next(1'764'000'000).value() == 1'764'000'001);
    CHECK(e.next(1'764'000'000 - 3600).value() == 1'764'000'002);
    // A clock far ahead moves it there (and it stays above it afterwards).
    CHECK(e.next(1'800'000'000).value() == 1'800'000'000);
    CHECK(e.next(1'764'000'000).value() == 1'800'000'001);
    struct stat st {};
    REQUIRE(stat(e.path().c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0600);
    CHECK_FALSE(fs::exists(e.path() + ".tmp"));
}

TEST_CASE(
    "boot_epoch: refuses garbage, loose permissions and links; a stale temp file is replaced") {
    epoch_tmp_dir d;
    boot_epoch e(d.path);
    auto write = [&](const std::string& text, mode_t mode) {
        fs::remove(e.path());
        std::ofstream(e.path()) << text;
        REQUIRE(chmod(e.path().c_str(), mode) == 0);
    };
    write("12x\n", 0600);
    CHECK(e.next(5).err().is(mw::errc::invalid_argument));
    write("", 0600);
    CHECK(e.next(5).err().is(mw::errc::invalid_argument));
    write("99999999999999999999999\n", 0600);  // does not fit 64 bits
    CHECK(e.next(5).err().is(mw::errc::invalid_argument));
    write("42\n", 0644);
    CHECK(e.next(5).err().is(mw::errc::invalid_argument));
    write("42\n", 0600);
    CHECK(e.next(5).value() == 43);
    write("42", 0600);  // no newline is fine
    CHECK(e.next(5).value() == 43);
    fs::remove(e.path());
    std::ofstream(d.path + "/elsewhere") << "7\n";
    fs::create_symlink(d.path + "/elsewhere", e.path());
    CHECK_FALSE(e.next(5).ok());
    fs::remove(e.path());
    // A temporary file left by a crash (or planted as a link) is removed, not written through.
    fs::create_symlink(d.path + "/elsewhere", e.path() + ".tmp");
    CHECK(e.next(5).value() == 5);
    std::ifstream in(d.path + "/elsewhere");
    std::string s;
    in >> s;
    CHECK(s == "7");
}
