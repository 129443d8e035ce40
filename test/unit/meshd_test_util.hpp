// Shared fixtures for the meshd core tests: deterministic identities and records.
#pragma once

#include <array>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

#include "common/ip_address.hpp"
#include "common/wireguard/wg_endpoint.hpp"
#include "meshd/core/node_identity.hpp"
#include "meshd/core/peer_record.hpp"
#include "meshd/core/psk_sealer.hpp"

namespace meshd_test {

inline mw::meshd::node_identity identity(uint8_t n) {
    mw::meshd::identity_seed seed{};
    seed.fill(n);
    seed[0] = 0xa5;
    return mw::meshd::node_identity::from_seed(seed);
}

// A deterministic RNG for cores under test (splitmix64 bytes): request ids must not repeat
// while probes are in flight, which a byte counter does after 32 draws.
inline auto test_rng(uint64_t seed = 1) {
    return [x = seed](std::span<uint8_t> out) mutable {
        for (auto& b : out) {
            uint64_t z = (x += 0x9e3779b97f4a7c15ull);
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            b = static_cast<uint8_t>(z ^ (z >> 31));
        }
    };
}

// A private temporary directory, removed with everything in it when it goes out of scope.
struct tmp_dir {
    std::string path;
    explicit tmp_dir(std::string prefix = "/tmp/mw-meshd-test") {
        std::string tmpl = prefix + "-XXXXXX";
        path = mkdtemp(tmpl.data());
    }
    ~tmp_dir() { std::filesystem::remove_all(path); }
    tmp_dir(const tmp_dir&) = delete;
    tmp_dir& operator=(const tmp_dir&) = delete;
};

// The cluster PSK of the core tests, and its sealer.
inline constexpr std::string_view psk = "0123456789abcdef0123456789abcdef";
inline mw::meshd::psk_sealer sealer() {
    return mw::meshd::psk_sealer::create(
               std::span(reinterpret_cast<const uint8_t*>(psk.data()), psk.size()))
        .value();
}

inline mw::wg_endpoint ep(std::string_view text) {
    return mw::wg_endpoint::parse(text).value();
}

inline constexpr uint64_t t0 = 1'764'000'000'000ull;  // a fixed "now" (Nov 2025, unix ms)

// A signed record for identity(n): v4+v6 pod CIDRs, two endpoints, one relay; `lifetime` ms
// from its first receipt.
inline mw::meshd::peer_record record(uint8_t n, uint64_t seq = 1, uint32_t lifetime = 60'000,
                                     std::string name = "") {
    auto id = identity(n);
    mw::meshd::peer_record r;
    r.name = name.empty() ? "node-" + std::to_string(n) : name;
    r.pod_cidrs = {mw::ip_prefix::parse("10.244." + std::to_string(n) + ".0/24").value(),
                   mw::ip_prefix::parse("fd00:244:" + std::to_string(n) + "::/64").value()};
    r.endpoints = {mw::wg_endpoint::parse("192.168.1." + std::to_string(n) + ":51821").value(),
                   mw::wg_endpoint::parse("[2001:db8::" + std::to_string(n) + "]:51821").value()};
    r.relays = {identity(200).id()};
    r.seq = seq;
    r.lifetime_ms = lifetime;
    auto s = r.sign(id);
    (void)s;
    return r;
}

}  // namespace meshd_test
