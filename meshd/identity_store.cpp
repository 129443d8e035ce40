#include "meshd/identity_store.hpp"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "common/unique_fd.hpp"
#include "meshd/directories.hpp"

namespace mw::meshd {

namespace {

// Wipes the seed copy on every path out of a function.
struct seed_guard {
    identity_seed seed{};
    ~seed_guard() { sodium_memzero(seed.data(), seed.size()); }
};

status write_all(int fd, const uint8_t* p, size_t n, const std::string& path) {
    while (n > 0) {
        ssize_t w = ::write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return error::from_errno(errno, "writing " + path);
        }
        p += w;
        n -= static_cast<size_t>(w);
    }
    return {};
}

}  // namespace

result<stored_identity> identity_store::load() const {
    const std::string p = path();
    if (auto d = check_private_directory(state_dir_, "stateDir"); !d) {
        if (d.err().is(errc::not_found)) return error(errc::not_found, "no node identity at " + p);
        return std::move(d).err();
    }
    unique_fd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd.valid()) {
        if (errno == ENOENT) return error(errc::not_found, "no node identity at " + p);
        if (errno == ELOOP) {
            return error(errc::invalid_argument,
                         "node identity " + p + " is a symbolic link; refusing it");
        }
        return error::from_errno(errno, "opening node identity " + p);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return error::from_errno(errno, "stat " + p);
    if (!S_ISREG(st.st_mode)) {
        return error(errc::invalid_argument, "node identity " + p + " is not a regular file");
    }
    if (st.st_uid != ::geteuid()) {
        return error(errc::invalid_argument,
                     "node identity " + p + " is owned by uid " + std::to_string(st.st_uid) +
                         ", not by meshd's uid " + std::to_string(::geteuid()) +
                         "; the seed is this node's private key: check who wrote it, then chown "
                         "it, or delete it to get a new node ID");
    }
    if (st.st_mode & 077) {
        return error(errc::invalid_argument,
                     "node identity " + p +
                         " is accessible by group or others (the seed is this node's private key); "
                         "check who read it, then chmod 600 it, or delete it to get a new node ID");
    }
    if (st.st_size != static_cast<off_t>(seed_size)) {
        return error(errc::invalid_argument,
                     "node identity " + p + " has " + std::to_string(st.st_size) +
                         " bytes, expected " + std::to_string(seed_size) +
                         "; it was not written by meshd. Restore it from a backup, or delete it to "
                         "get a new node ID");
    }
    seed_guard g;
    size_t got = 0;
    while (got < seed_size) {
        ssize_t n = ::read(fd.get(), g.seed.data() + got, seed_size - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return error::from_errno(errno, "reading node identity " + p);
        if (n == 0)
            return error(errc::io_error, "node identity " + p + " is shorter than its size");
        got += static_cast<size_t>(n);
    }
    return stored_identity{node_identity::from_seed(g.seed), p, false};
}

result<stored_identity> identity_store::load_or_create() const {
    auto loaded = load();
    if (loaded || !loaded.err().is(errc::not_found)) return loaded;

    // A new state dir is created 0700; an existing one must already be private (load() checked
    // it when it existed).
    MW_TRY_STATUS(make_directories(state_dir_, 0700));
    MW_TRY_STATUS(check_private_directory(state_dir_, "stateDir"));
    // randombytes needs sodium_init; a failure there means no trustworthy randomness, so no key.
    if (sodium_init() < 0)
        return error(errc::io_error, "libsodium failed to initialise; cannot draw a seed");

    const std::string p = path();
    // A random name, created exclusively: an existing file or link of that name (left by a crash,
    // or planted) is never reused or followed, so nobody else can hold it open or read the seed.
    uint8_t tag[8];
    randombytes_buf(tag, sizeof tag);
    std::string tmp = p + ".tmp.";
    for (uint8_t b : tag) {
        static constexpr char hex[] = "0123456789abcdef";
        tmp += hex[b >> 4];
        tmp += hex[b & 15];
    }
    seed_guard g;
    randombytes_buf(g.seed.data(), g.seed.size());
    {
        unique_fd fd(
            ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
        if (!fd.valid()) return error::from_errno(errno, "creating " + tmp);
        // The umask can only narrow 0600; fchmod makes the mode exact regardless.
        if (::fchmod(fd.get(), 0600) != 0) {
            int e = errno;
            ::unlink(tmp.c_str());
            return error::from_errno(e, "chmod " + tmp);
        }
        auto w = write_all(fd.get(), g.seed.data(), g.seed.size(), tmp);
        if (w && ::fsync(fd.get()) != 0) w = error::from_errno(errno, "fsync " + tmp);
        if (!w) {
            ::unlink(tmp.c_str());
            return std::move(w).err();
        }
    }
    // link() fails with EEXIST when another process stored its seed first; then that one is the
    // identity (rename() would silently replace it after the other process started using it).
    int rc = ::link(tmp.c_str(), p.c_str());
    int e = errno;
    ::unlink(tmp.c_str());
    if (rc != 0) {
        if (e == EEXIST) return load();
        return error::from_errno(e, "storing node identity " + p);
    }
    MW_TRY_STATUS(sync_directory(state_dir_));
    return stored_identity{node_identity::from_seed(g.seed), p, true};
}

}  // namespace mw::meshd
