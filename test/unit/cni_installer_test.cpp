// tools/cni_installer: the init container's file handling (atomic replace, idempotence, nothing
// else touched) and its input checks. The same installer runs in podman in k8s_cni_installer.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tools/cni_installer/cni_installer.hpp"

namespace fs = std::filesystem;
using mw::tools::cni_installer;
using mw::tools::cni_installer_options;

namespace {

struct temp_dir {
    fs::path path;
    temp_dir() {
        char t[] = "/tmp/mw-cni-installer-XXXXXX";
        path = ::mkdtemp(t);
    }
    ~temp_dir() { fs::remove_all(path); }
};

void write(const fs::path& p, const std::string& s) {
    std::ofstream(p, std::ios::binary) << s;
}

std::string read(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

struct stat stat_of(const fs::path& p) {
    struct stat st {};
    REQUIRE(::lstat(p.c_str(), &st) == 0);
    return st;
}

const char* const k_conflist =
    R"({"cniVersion": "1.0.0", "name": "meshwire", "plugins": [{"type": "meshwire"}]})";

}  // namespace

TEST_CASE("cni_installer: conflist and conf name checks name what is wrong") {
    CHECK(cni_installer::validate_conflist(k_conflist));
    CHECK(cni_installer::validate_conflist(
        R"({"cniVersion": "1.0.0", "name": "m", "plugins": [{"type": "meshwire"},
            {"type": "portmap", "capabilities": {"portMappings": true}}]})"));
    auto msg = [](const std::string& text) {
        auto s = cni_installer::validate_conflist(text);
        return s ? std::string() : s.err().message;
    };
    CHECK(msg("[1]") == "not a JSON object");
    CHECK(msg("{\"cniVersion\": \"1.0.0\", \"name\":") == "not a JSON object");
    CHECK(msg(R"({"name": "m", "plugins": [{"type": "meshwire"}]})").find("cniVersion") == 0);
    CHECK(msg(R"({"cniVersion": "1.0.0", "plugins": [{"type": "meshwire"}]})").find("name") == 0);
    CHECK(msg(R"({"cniVersion": "1.0.0", "name": "m", "plugins": []})").find("plugins") == 0);
    CHECK(msg(R"({"cniVersion": "1.0.0", "name": "m", "plugins": [{"type": "meshwire"}, {}]})")
              .find("plugins[1].type") == 0);
    CHECK(msg(R"({"cniVersion": "1.0.0", "name": "m", "plugins": [{"type": "bridge"}]})")
              .find("plugins[0].type") == 0);
    CHECK(cni_installer::validate_conf_name("10-meshwire.conflist"));
    for (const char* bad : {"", ".conflist", "../10-meshwire.conflist", "a/b.conflist",
                            ".hidden.conflist", "10-meshwire.conf", "10-meshwire.json"})
        CHECK_FALSE(cni_installer::validate_conf_name(bad));
}

TEST_CASE("cni_installer: install_file writes by rename, skips identical, never follows links") {
    temp_dir d;
    auto r = cni_installer::install_file(d.path, "meshwire", "binary-v1", 0755);
    REQUIRE(r);
    CHECK(r->changed);
    CHECK(read(d.path / "meshwire") == "binary-v1");
    auto st1 = stat_of(d.path / "meshwire");
    CHECK((st1.st_mode & 07777) == 0755);

    // Identical: untouched (inode and mtime).
    r = cni_installer::install_file(d.path, "meshwire", "binary-v1", 0755);
    REQUIRE(r);
    CHECK_FALSE(r->changed);
    auto st2 = stat_of(d.path / "meshwire");
    CHECK(st2.st_ino == st1.st_ino);
    CHECK(st2.st_mtim.tv_nsec == st1.st_mtim.tv_nsec);
    CHECK(st2.st_mtim.tv_sec == st1.st_mtim.tv_sec);

    // Same bytes, other mode: rewritten with the mode.
    REQUIRE(::chmod((d.path / "meshwire").c_str(), 0700) == 0);
    r = cni_installer::install_file(d.path, "meshwire", "binary-v1", 0755);
    REQUIRE(r);
    CHECK(r->changed);
    CHECK((stat_of(d.path / "meshwire").st_mode & 07777) == 0755);

    // New bytes: a new inode; an open reader of the old one keeps the old bytes.
    std::ifstream old_reader(d.path / "meshwire", std::ios::binary);
    auto ino_before = stat_of(d.path / "meshwire").st_ino;
    r = cni_installer::install_file(d.path, "meshwire", "binary-v2", 0755);
    REQUIRE(r);
    CHECK(r->changed);
    CHECK(stat_of(d.path / "meshwire").st_ino != ino_before);
    std::stringstream old;
    old << old_reader.rdbuf();
    CHECK(old.str() == "binary-v1");
    CHECK(read(d.path / "meshwire") == "binary-v2");

    // A stale temp file of a killed run is reused, not left beside.
    write(d.path / ".meshwire.meshwire-install.tmp", "half");
    r = cni_installer::install_file(d.path, "meshwire", "binary-v3", 0755);
    REQUIRE(r);
    CHECK_FALSE(fs::exists(d.path / ".meshwire.meshwire-install.tmp"));

    // A symlink at the target is replaced by the file; its target is not written through.
    write(d.path / "elsewhere", "other plugin");
    fs::remove(d.path / "meshwire");
    fs::create_symlink(d.path / "elsewhere", d.path / "meshwire");
    r = cni_installer::install_file(d.path, "meshwire", "binary-v3", 0755);
    REQUIRE(r);
    CHECK(r->changed);
    CHECK(read(d.path / "elsewhere") == "other plugin");
    CHECK(fs::is_regular_file(fs::symlink_status(d.path / "meshwire")));
}

TEST_CASE("cni_installer: run installs both, touches nothing else, writes nothing on bad input") {
    temp_dir d;
    fs::create_directories(d.path / "src");
    fs::create_directories(d.path / "bin");
    write(d.path / "src/meshwire", "plugin");
    write(d.path / "src/list", k_conflist);
    write(d.path / "bin/bridge", "bridge");
    cni_installer_options o{(d.path / "src/meshwire").string(), (d.path / "src/list").string(),
                            (d.path / "bin").string(), (d.path / "etc/cni/net.d").string(),
                            "10-meshwire.conflist"};
    auto r = cni_installer(o).run();
    REQUIRE(r);
    REQUIRE(r->size() == 2);
    CHECK((*r)[0].changed);
    CHECK((*r)[1].changed);
    CHECK(read(d.path / "etc/cni/net.d/10-meshwire.conflist") == k_conflist);
    CHECK((stat_of(d.path / "etc/cni/net.d/10-meshwire.conflist").st_mode & 07777) == 0644);
    CHECK(read(d.path / "bin/bridge") == "bridge");
    auto again = cni_installer(o).run();
    REQUIRE(again);
    CHECK_FALSE((*again)[0].changed);
    CHECK_FALSE((*again)[1].changed);

    write(d.path / "src/meshwire", "plugin-v2");
    write(d.path / "src/list",
          R"({"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "b"}]})");
    auto bad = cni_installer(o).run();
    REQUIRE_FALSE(bad);
    CHECK(bad.err().message.find("plugins[0].type") != std::string::npos);
    CHECK(read(d.path / "bin/meshwire") == "plugin");  // not replaced: input checked first
    o.conf_name = "../evil.conflist";
    CHECK_FALSE(cni_installer(o).run());
}
