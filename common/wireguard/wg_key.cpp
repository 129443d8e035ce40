#include "common/wireguard/wg_key.hpp"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

#include "common/hex.hpp"

namespace mw {

namespace {

void ensure_sodium() {
    static std::once_flag once;
    // sodium_init only fails when /dev/urandom is unusable; randombytes then aborts anyway, so a
    // failure here is not reported separately.
    std::call_once(once, [] {
        if (sodium_init() < 0) return;
    });
}

}  // namespace

wg_key wg_key::generate_private() {
    ensure_sodium();
    wg_key k;
    randombytes_buf(k.bytes_.data(), size);
    // X25519 clamping, as `wg genkey` does, so the stored key is canonical.
    k.bytes_[0] &= 248;
    k.bytes_[31] = static_cast<uint8_t>((k.bytes_[31] & 127) | 64);
    return k;
}

result<wg_key> wg_key::from_base64(std::string_view text) {
    // 32 bytes -> 44 base64 chars ending in exactly one '='; anything else is not a WG key.
    if (text.size() != 44 || text[43] != '=' || text[42] == '=') {
        return error(errc::invalid_argument,
                     "invalid WireGuard key: expected 44 base64 characters");
    }
    ensure_sodium();
    wg_key k;
    size_t out_len = 0;
    if (sodium_base642bin(k.bytes_.data(), size, text.data(), text.size(), nullptr, &out_len,
                          nullptr, sodium_base64_VARIANT_ORIGINAL) != 0 ||
        out_len != size) {
        return error(errc::invalid_argument, "invalid WireGuard key: not valid base64");
    }
    return k;
}

result<wg_key> wg_key::from_hex(std::string_view text) {
    if (text.size() != 2 * size) {
        return error(errc::invalid_argument, "invalid WireGuard key: expected 64 hex digits");
    }
    wg_key k;
    for (size_t i = 0; i < size; ++i) {
        int hi = hex_value(text[2 * i]), lo = hex_value(text[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            return error(errc::invalid_argument, "invalid WireGuard key: not hex");
        }
        k.bytes_[i] = static_cast<uint8_t>(hi * 16 + lo);
    }
    return k;
}

wg_key wg_key::public_key() const {
    ensure_sodium();
    wg_key pub;
    // Fails only for low-order results, impossible for a base-point product; pub stays zero then.
    (void)crypto_scalarmult_base(pub.bytes_.data(), bytes_.data());
    return pub;
}

std::string wg_key::to_base64() const {
    ensure_sodium();
    char buf[sodium_base64_ENCODED_LEN(size, sodium_base64_VARIANT_ORIGINAL)];
    sodium_bin2base64(buf, sizeof buf, bytes_.data(), size, sodium_base64_VARIANT_ORIGINAL);
    return buf;
}

std::string wg_key::to_hex() const {
    return mw::to_hex(bytes_.data(), size);
}

bool wg_key::is_zero() const noexcept {
    uint8_t acc = 0;
    for (auto b : bytes_) acc |= b;
    return acc == 0;
}

void wg_key::wipe() noexcept {
    sodium_memzero(bytes_.data(), size);
}

status write_private_key_file(const std::string& path, const wg_key& key) {
    std::string tmp = path + ".tmp." + std::to_string(getpid());
    // O_EXCL + mode 0600 at creation: the key is never readable by others, not even briefly.
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return error::from_errno(errno, "creating key file " + tmp);
    std::string text = key.to_base64() + "\n";
    ssize_t n = ::write(fd, text.data(), text.size());
    int werr = errno;
    sodium_memzero(text.data(), text.size());
    if (n != static_cast<ssize_t>(44 + 1) || ::fchmod(fd, 0600) != 0 || ::fsync(fd) != 0) {
        int e = n < 0 ? werr : (errno ? errno : EIO);
        ::close(fd);
        ::unlink(tmp.c_str());
        return error::from_errno(e, "writing key file " + tmp);
    }
    ::close(fd);
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        int e = errno;
        ::unlink(tmp.c_str());
        return error::from_errno(e, "renaming key file to " + path);
    }
    return {};
}

result<wg_key> read_private_key_file(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return error::from_errno(errno, "opening key file " + path);
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        int e = errno;
        ::close(fd);
        return error::from_errno(e, "stat key file " + path);
    }
    if (st.st_mode & 077) {
        ::close(fd);
        return error(errc::invalid_argument,
                     "key file " + path + " is accessible by group or others; chmod 600 it");
    }
    char buf[128];
    ssize_t n = ::read(fd, buf, sizeof buf);
    int e = errno;
    ::close(fd);
    if (n < 0) return error::from_errno(e, "reading key file " + path);
    std::string_view text(buf, static_cast<size_t>(n));
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
        text.remove_suffix(1);
    }
    auto k = wg_key::from_base64(text);
    sodium_memzero(buf, sizeof buf);
    if (!k) return k.err().wrap("key file " + path);
    return k;
}

result<wg_key> load_or_create_private_key(const std::string& path) {
    auto k = read_private_key_file(path);
    if (k || !k.err().is_errno(ENOENT)) return k;
    wg_key fresh = wg_key::generate_private();
    MW_TRY_STATUS(write_private_key_file(path, fresh));
    return fresh;
}

}  // namespace mw
