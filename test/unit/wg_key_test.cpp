// WireGuard key encoding: base64 and hex round trips, known X25519 vectors, rejection of bad text,
// and private key files (mode 0600, group/other-readable files refused).
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "common/wireguard/wg_key.hpp"

using mw::wg_key;

TEST_CASE("wg_key: RFC 7748 X25519 test vector (Alice)") {
    auto priv =
        wg_key::from_hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    REQUIRE(priv.ok());
    CHECK(priv->public_key().to_hex() ==
          "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
}

TEST_CASE("wg_key: base64 and hex round trip") {
    for (int i = 0; i < 50; ++i) {
        wg_key k = wg_key::generate_private();
        auto b64 = k.to_base64();
        CHECK(b64.size() == 44);
        CHECK(b64.back() == '=');
        auto back = wg_key::from_base64(b64);
        REQUIRE(back.ok());
        CHECK(*back == k);
        auto hex = wg_key::from_hex(k.to_hex());
        REQUIRE(hex.ok());
        CHECK(*hex == k);
        // Clamped like `wg genkey`.
        CHECK((k.data()[0] & 7) == 0);
        CHECK((k.data()[31] & 128) == 0);
        CHECK((k.data()[31] & 64) == 64);
    }
}

TEST_CASE("wg_key: bad text is rejected") {
    CHECK_FALSE(wg_key::from_base64("").ok());
    CHECK_FALSE(wg_key::from_base64("abc").ok());
    // 44 chars but invalid alphabet.
    CHECK_FALSE(wg_key::from_base64("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!=").ok());
    // Two '=' means 31 bytes.
    CHECK_FALSE(wg_key::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==").ok());
    // Missing padding.
    CHECK_FALSE(wg_key::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").ok());
    CHECK_FALSE(wg_key::from_hex("00").ok());
    CHECK_FALSE(wg_key::from_hex(std::string(64, 'g')).ok());
    auto err = wg_key::from_base64("abc");
    CHECK(err.err().is(mw::errc::invalid_argument));
}

TEST_CASE("wg_key: key files are 0600 and must stay private") {
    char dir[] = "/tmp/wg_key_test.XXXXXX";
    REQUIRE(mkdtemp(dir) != nullptr);
    std::string path = std::string(dir) + "/private.key";
    auto k = mw::load_or_create_private_key(path);
    REQUIRE(k.ok());
    struct stat st {};
    REQUIRE(stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    auto again = mw::load_or_create_private_key(path);
    REQUIRE(again.ok());
    CHECK(*again == *k);  // created once, then reused

    chmod(path.c_str(), 0644);
    auto refused = mw::read_private_key_file(path);
    CHECK_FALSE(refused.ok());
    CHECK(refused.err().message.find("chmod 600") != std::string::npos);
    // The message names the file, never the key.
    CHECK(refused.err().message.find(k->to_base64()) == std::string::npos);

    unlink(path.c_str());
    rmdir(dir);
}

// `wg genkey` / `wg pubkey` interchangeability (skipped when wireguard-tools is not installed).
TEST_CASE("wg_key: interchangeable with wg genkey / wg pubkey") {
    if (access("/usr/bin/wg", X_OK) != 0) {
        MESSAGE("skipped: /usr/bin/wg (wireguard-tools) not installed");
        return;
    }
    auto run = [](const std::string& cmd) {
        std::string out;
        FILE* f = popen(cmd.c_str(), "r");
        if (!f) return out;
        char buf[256];
        while (fgets(buf, sizeof buf, f)) out += buf;
        pclose(f);
        while (!out.empty() && out.back() == '\n') out.pop_back();
        return out;
    };
    // Their private key -> our public key == their public key.
    std::string priv = run("/usr/bin/wg genkey");
    auto k = wg_key::from_base64(priv);
    REQUIRE(k.ok());
    CHECK(k->public_key().to_base64() == run("echo " + priv + " | /usr/bin/wg pubkey"));
    // Our private key -> their public key == ours.
    wg_key mine = wg_key::generate_private();
    CHECK(run("echo " + mine.to_base64() + " | /usr/bin/wg pubkey") ==
          mine.public_key().to_base64());
}
