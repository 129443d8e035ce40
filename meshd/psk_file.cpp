#include "meshd/psk_file.hpp"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>

#include "common/unique_fd.hpp"
#include "meshd/core/psk_sealer.hpp"

namespace mw::meshd {

psk_file::~psk_file() {
    if (!bytes_.empty()) sodium_memzero(bytes_.data(), bytes_.size());
}

std::string psk_file::check_strength(std::span<const uint8_t> key) {
    const size_t n = key.size();
    if (n < min_bytes) {
        return "it has " + std::to_string(n) + " bytes; at least " + std::to_string(min_bytes) +
               " are required";
    }
    bool text = true;
    std::array<bool, 256> seen{};
    size_t distinct = 0;
    for (uint8_t b : key) {
        if (b < 0x20 || b > 0x7e) text = false;
        if (!seen[b]) {
            seen[b] = true;
            ++distinct;
        }
    }
    if (text && n < min_text_chars) {
        return "it is text of " + std::to_string(n) + " characters; a text key needs at least " +
               std::to_string(min_text_chars) + " (the generator below gives 44)";
    }
    if (distinct < min_distinct) {
        return "it uses only " + std::to_string(distinct) + " distinct byte values (at least " +
               std::to_string(min_distinct) + " are required)";
    }
    // The smallest period p (key[i] == key[i + p] for all i); p <= n / 2 means a pattern repeated.
    for (size_t p = 1; p <= n / 2; ++p) {
        bool periodic = true;
        for (size_t i = 0; i + p < n && periodic; ++i) periodic = key[i] == key[i + p];
        if (periodic) {
            return "it repeats a pattern of " + std::to_string(p) + " bytes";
        }
    }
    return {};
}

result<psk_file> psk_file::read(const std::string& path, const std::string& field) {
    // Symbolic links are followed on purpose: Kubernetes mounts Secret keys as links into ..data/.
    unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) {
        if (errno == ENOENT)
            return error(errc::not_found, field + ": PSK file " + path + " does not exist");
        return error::from_errno(errno, field + ": cannot open PSK file " + path);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return error::from_errno(errno, "stat " + path);
    if (!S_ISREG(st.st_mode)) {
        return error(errc::invalid_argument, field + ": " + path + " is not a regular file");
    }
    if (st.st_mode & (S_IROTH | S_IWOTH | S_IWGRP)) {
        return error(
            errc::invalid_argument,
            field + ": PSK file " + path + " is readable or writable by others (mode " +
                [&] {
                    char b[8];
                    std::snprintf(b, sizeof b, "%04o", st.st_mode & 07777);
                    return std::string(b);
                }() +
                "); anyone with the PSK can join the mesh: chmod 600 it (in Kubernetes set "
                "the Secret volume's defaultMode to 0400)");
    }
    if (st.st_size > static_cast<off_t>(max_size)) {
        return error(errc::invalid_argument, field + ": PSK file " + path + " is larger than " +
                                                 std::to_string(max_size) + " bytes");
    }
    psk_file f;
    f.bytes_.resize(max_size + 1);
    size_t got = 0;
    for (;;) {
        ssize_t n = ::read(fd.get(), f.bytes_.data() + got, f.bytes_.size() - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return error::from_errno(errno, field + ": reading PSK file " + path);
        if (n == 0) break;
        got += static_cast<size_t>(n);
        if (got > max_size) {
            return error(errc::invalid_argument, field + ": PSK file " + path + " is larger than " +
                                                     std::to_string(max_size) + " bytes");
        }
    }
    while (got > 0 && (f.bytes_[got - 1] == '\n' || f.bytes_[got - 1] == '\r' ||
                       f.bytes_[got - 1] == ' ' || f.bytes_[got - 1] == '\t')) {
        --got;
    }
    sodium_memzero(f.bytes_.data() + got, f.bytes_.size() - got);
    f.bytes_.resize(got);
    static_assert(min_bytes >= psk_sealer::min_psk_size);
    if (auto weak = check_strength(f.bytes_); !weak.empty()) {
        return error(errc::invalid_argument,
                     field + ": the PSK in " + path + " is too weak: " + weak +
                         "; anyone with one captured packet can test guesses offline. Generate "
                         "one with: head -c 32 /dev/urandom | base64 > " +
                         path + " && chmod 600 " + path + " (then roll it out to every node)");
    }
    if (st.st_mode & S_IRGRP) {
        f.warning_ =
            "PSK file " + path + " is readable by its group; chmod 600 it unless that is intended";
    }
    return f;
}

}  // namespace mw::meshd
