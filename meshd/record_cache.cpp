#include "meshd/record_cache.hpp"

#include <fcntl.h>
#include <sodium.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "common/hex.hpp"
#include "common/unique_fd.hpp"
#include "meshd/core/byte_io.hpp"
#include "meshd/directories.hpp"

namespace mw::meshd {

namespace {

constexpr std::array<uint8_t, 4> k_magic = {'M', 'W', 'R', 'C'};
constexpr std::string_view k_key_label = "meshwire record cache v1";

error bad(const std::string& why) {
    return error(errc::protocol_error, "record cache: " + why);
}

}  // namespace

const char* to_string(elapsed_basis b) noexcept {
    switch (b) {
        case elapsed_basis::boot_clock:
            return "boot_clock";
        case elapsed_basis::wall_clock:
            return "wall_clock";
        case elapsed_basis::wall_clock_behind:
            return "wall_clock_behind";
    }
    return "?";
}

result<boot_id> parse_boot_id(std::string_view text) {
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
    boot_id id{};
    size_t n = 0;
    for (size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '-') continue;
        int hi = hex_value(text[i]);
        int lo = i + 1 < text.size() ? hex_value(text[i + 1]) : -1;
        if (hi < 0 || lo < 0 || n == id.size()) {
            return error(errc::invalid_argument, "not a boot ID: " + std::string(text));
        }
        id[n++] = static_cast<uint8_t>(hi << 4 | lo);
        ++i;
    }
    if (n != id.size()) return error(errc::invalid_argument, "not a boot ID: " + std::string(text));
    return id;
}

result<cache_clock> cache_clock::now() {
    cache_clock c;
    unique_fd fd(::open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return error::from_errno(errno, "opening /proc/sys/kernel/random/boot_id");
    char buf[64];
    ssize_t n = 0;
    do {
        n = ::read(fd.get(), buf, sizeof buf);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return error::from_errno(errno, "reading /proc/sys/kernel/random/boot_id");
    auto id = parse_boot_id(std::string_view(buf, static_cast<size_t>(n)));
    if (!id) return std::move(id).err();
    c.boot = *id;
    timespec ts{};
    clock_gettime(CLOCK_BOOTTIME, &ts);
    c.boottime_ms = uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1'000'000;
    c.unix_ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count());
    return c;
}

uint64_t elapsed_since(const cache_clock& saved, const cache_clock& now, elapsed_basis* basis) {
    elapsed_basis b = elapsed_basis::boot_clock;
    uint64_t e = 0;
    if (saved.boot == now.boot) {
        // CLOCK_BOOTTIME cannot go back within a boot; if it reads so, nothing passed.
        e = now.boottime_ms - std::min(now.boottime_ms, saved.boottime_ms);
    } else if (now.unix_ms >= saved.unix_ms) {
        b = elapsed_basis::wall_clock;
        e = now.unix_ms - saved.unix_ms;
    } else {
        // Behind the save across a reboot: how long we were down is unknown. Counted as 0, so a
        // record keeps at most what it had left at the save, never more.
        b = elapsed_basis::wall_clock_behind;
    }
    if (basis) *basis = b;
    return e;
}

cache_key record_cache::key_from_psk(std::span<const uint8_t> psk) {
    cache_key k{};
    // BLAKE2b keys are at most 64 bytes; the PSK is hashed first when it is longer.
    std::array<uint8_t, crypto_generichash_KEYBYTES_MAX> pk{};
    size_t pk_len = psk.size();
    if (pk_len > pk.size() || pk_len < crypto_generichash_KEYBYTES_MIN) {
        crypto_generichash(pk.data(), pk.size(), psk.data(), psk.size(), nullptr, 0);
        pk_len = pk.size();
    } else {
        std::memcpy(pk.data(), psk.data(), pk_len);
    }
    crypto_generichash(k.data(), k.size(), reinterpret_cast<const uint8_t*>(k_key_label.data()),
                       k_key_label.size(), pk.data(), pk_len);
    sodium_memzero(pk.data(), pk.size());
    return k;
}

cache_key record_cache::mac(std::span<const uint8_t> bytes) const {
    return mac_with(key_, bytes);
}

cache_key record_cache::mac_with(const cache_key& key, std::span<const uint8_t> bytes) {
    cache_key m{};
    crypto_generichash(m.data(), m.size(), bytes.data(), bytes.size(), key.data(), key.size());
    return m;
}

std::vector<uint8_t> record_cache::encode(const std::vector<cached_record>& records,
                                          const cache_clock& at) const {
    std::vector<uint8_t> out;
    byte_writer w(out);
    w.bytes(k_magic.data(), k_magic.size());
    w.u16(version);
    w.bytes(at.boot.data(), at.boot.size());
    w.u64(at.boottime_ms);
    w.u64(at.unix_ms);
    const size_t count_at = out.size();
    w.u32(0);
    uint32_t count = 0;
    for (const auto& c : records) {
        if (count == max_records_) break;
        auto enc = c.record.encode();
        if (!enc) continue;  // not a record that could have been stored
        w.u32(static_cast<uint32_t>(std::min<uint64_t>(c.remaining_ms, c.record.lifetime_ms)));
        if (c.hint && c.hint->address.valid()) {
            w.u8(c.hint->address.is_v4() ? 4 : 6);
            w.bytes(c.hint->address.data(), c.hint->address.byte_len());
            w.u16(c.hint->port);
        } else {
            w.u8(0);
        }
        w.u16(static_cast<uint16_t>(enc->size()));
        w.bytes(*enc);
        ++count;
    }
    for (int i = 0; i < 4; ++i) out[count_at + i] = static_cast<uint8_t>(count >> (24 - 8 * i));
    auto m = mac(out);
    w.bytes(m.data(), m.size());
    return out;
}

result<cache_contents> record_cache::decode(std::span<const uint8_t> bytes,
                                            const cache_clock& now) const {
    if (bytes.size() < header_size + mac_size) {
        return bad("file of " + std::to_string(bytes.size()) + " bytes is too short (truncated)");
    }
    if (!std::equal(k_magic.begin(), k_magic.end(), bytes.begin())) {
        return bad("not a record cache file (no MWRC magic)");
    }
    byte_reader r(bytes.first(bytes.size() - mac_size));
    r.view(k_magic.size());
    const uint16_t v = r.u16();
    if (v != version) {
        return bad("format version " + std::to_string(v) + ", this meshd reads version " +
                   std::to_string(version));
    }
    // The MAC before any entry is looked at: nothing unauthenticated is parsed further.
    // Under the sealing key, else under an accepted one (a cache written before a key roll).
    const auto body = bytes.first(bytes.size() - mac_size);
    const uint8_t* got = bytes.data() + bytes.size() - mac_size;
    bool macked = false;
    for (size_t i = 0; i <= accepted_.size() && !macked; ++i) {
        auto want = mac_with(i == 0 ? key_ : accepted_[i - 1], body);
        macked = sodium_memcmp(want.data(), got, mac_size) == 0;
    }
    if (!macked) {
        return bad("its MAC does not match (truncated, altered, or written with another PSK)");
    }
    cache_clock saved;
    r.copy(saved.boot.data(), saved.boot.size());
    saved.boottime_ms = r.u64();
    saved.unix_ms = r.u64();
    const uint32_t count = r.u32();
    if (count > max_records_) {
        return bad(std::to_string(count) + " entries, more than the " +
                   std::to_string(max_records_) + " the record store holds");
    }
    cache_contents out;
    out.elapsed_ms = elapsed_since(saved, now, &out.basis);
    for (uint32_t i = 0; i < count; ++i) {
        const uint64_t remaining = r.u32();
        std::optional<wg_endpoint> hint;
        const uint8_t fam = r.u8();
        if (fam == 4 || fam == 6) {
            uint8_t a[16];
            const size_t len = fam == 4 ? 4 : 16;
            r.copy(a, len);
            const uint16_t port = r.u16();
            auto addr = ip_address::from_bytes(fam == 4 ? AF_INET : AF_INET6, a, len);
            if (!addr || port == 0) return bad("entry " + std::to_string(i) + ": bad endpoint");
            hint = wg_endpoint{*addr, port};
        } else if (fam != 0) {
            return bad("entry " + std::to_string(i) + ": bad endpoint family");
        }
        const uint16_t len = r.u16();
        auto body = r.view(len);
        if (!r.ok()) return bad("truncated at entry " + std::to_string(i));
        auto rec = peer_record::decode(body);
        if (!rec) return bad("entry " + std::to_string(i) + ": " + rec.err().message);
        // Never more than the signed lifetime, whatever the file says.
        const uint64_t left = std::min<uint64_t>(remaining, rec->lifetime_ms);
        if (left <= out.elapsed_ms) {
            ++out.expired;
            continue;
        }
        out.records.push_back(cached_record{std::move(*rec), left - out.elapsed_ms, hint});
    }
    if (!r.ok() || !r.at_end()) return bad("trailing bytes after the last entry");
    return out;
}

status record_cache::save(const std::vector<cached_record>& records, const cache_clock& at) const {
    const auto bytes = encode(records, at);
    return replace_file(state_dir_, path(), bytes);
}

result<cache_contents> record_cache::load(const cache_clock& now) const {
    const std::string p = path();
    unique_fd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd.valid()) {
        if (errno == ENOENT) return error(errc::not_found, "no record cache at " + p);
        return error::from_errno(errno, "opening " + p);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return error::from_errno(errno, "stat " + p);
    if (!S_ISREG(st.st_mode)) return error(errc::invalid_argument, p + " is not a regular file");
    if (static_cast<uint64_t>(st.st_size) > max_file_size()) {
        return error(errc::exhausted, p + ": " + std::to_string(st.st_size) +
                                          " bytes, more than the " +
                                          std::to_string(max_file_size()) + " it can hold");
    }
    std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
    size_t off = 0;
    while (off < bytes.size()) {
        ssize_t n = ::read(fd.get(), bytes.data() + off, bytes.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return error::from_errno(errno, "reading " + p);
        if (n == 0) break;  // shrank meanwhile: decode finds it truncated
        off += static_cast<size_t>(n);
    }
    bytes.resize(off);
    return decode(bytes, now);
}

result<std::string> record_cache::set_aside() const {
    const std::string p = path();
    const std::string aside = p + ".corrupt";
    if (::rename(p.c_str(), aside.c_str()) != 0) {
        return error::from_errno(errno, "renaming " + p + " to " + aside);
    }
    return aside;
}

cache_import offer_cached(discovery_sink& core, const node_id& self,
                          const std::vector<cached_record>& records, uint64_t now_ms) {
    cache_import out;
    for (const auto& c : records) {
        if (c.record.id() == self) {
            ++out.own;
            continue;
        }
        auto put = core.offer_record(c.record, learned_via::cache, now_ms, c.remaining_ms);
        if (put) {
            if (*put != put_outcome::duplicate) ++out.offered;
            continue;
        }
        ++out.refused;
        if (out.refusals.size() < 16)
            out.refusals.push_back(c.record.name + ": " + put.err().message);
    }
    return out;
}

}  // namespace mw::meshd
