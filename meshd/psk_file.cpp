#include "meshd/psk_file.hpp"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "common/unique_fd.hpp"
#include "meshd/core/psk_sealer.hpp"

namespace mw::meshd {

psk_file::~psk_file() {
    if (!bytes_.empty()) sodium_memzero(bytes_.data(), bytes_.size());
}

result<psk_file> psk_file::read(const std::string& path) {
    // Symbolic links are followed on purpose: Kubernetes mounts Secret keys as links into ..data/.
    unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) {
        if (errno == ENOENT)
            return error(errc::not_found, "psk.path: PSK file " + path + " does not exist");
        return error::from_errno(errno, "psk.path: cannot open PSK file " + path);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return error::from_errno(errno, "stat " + path);
    if (!S_ISREG(st.st_mode)) {
        return error(errc::invalid_argument, "psk.path: " + path + " is not a regular file");
    }
    if (st.st_mode & (S_IROTH | S_IWOTH | S_IWGRP)) {
        return error(
            errc::invalid_argument,
            "psk.path: PSK file " + path + " is readable or writable by others (mode " +
                [&] {
                    char b[8];
                    std::snprintf(b, sizeof b, "%04o", st.st_mode & 07777);
                    return std::string(b);
                }() +
                "); anyone with the PSK can join the mesh: chmod 600 it (in Kubernetes set "
                "the Secret volume's defaultMode to 0400)");
    }
    if (st.st_size > static_cast<off_t>(max_size)) {
        return error(errc::invalid_argument, "psk.path: PSK file " + path + " is larger than " +
                                                 std::to_string(max_size) + " bytes");
    }
    psk_file f;
    f.bytes_.resize(max_size + 1);
    size_t got = 0;
    for (;;) {
        ssize_t n = ::read(fd.get(), f.bytes_.data() + got, f.bytes_.size() - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return error::from_errno(errno, "psk.path: reading PSK file " + path);
        if (n == 0) break;
        got += static_cast<size_t>(n);
        if (got > max_size) {
            return error(errc::invalid_argument, "psk.path: PSK file " + path + " is larger than " +
                                                     std::to_string(max_size) + " bytes");
        }
    }
    while (got > 0 && (f.bytes_[got - 1] == '\n' || f.bytes_[got - 1] == '\r' ||
                       f.bytes_[got - 1] == ' ' || f.bytes_[got - 1] == '\t')) {
        --got;
    }
    sodium_memzero(f.bytes_.data() + got, f.bytes_.size() - got);
    f.bytes_.resize(got);
    if (got < psk_sealer::min_psk_size) {
        return error(errc::invalid_argument,
                     "psk.path: the PSK in " + path + " has " + std::to_string(got) +
                         " bytes; at least " + std::to_string(psk_sealer::min_psk_size) +
                         " are required (generate one with: head -c 32 /dev/urandom | base64)");
    }
    if (st.st_mode & S_IRGRP) {
        f.warning_ =
            "PSK file " + path + " is readable by its group; chmod 600 it unless that is intended";
    }
    return f;
}

}  // namespace mw::meshd
