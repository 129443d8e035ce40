#include "meshd/directories.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "common/unique_fd.hpp"

namespace mw::meshd {

status make_directories(const std::string& path, mode_t final_mode) {
    if (path.empty() || path[0] != '/') {
        return error(errc::invalid_argument, "directory " + path + " is not an absolute path");
    }
    size_t pos = 1;
    for (;;) {
        size_t slash = path.find('/', pos);
        bool last = slash == std::string::npos || slash == path.size() - 1;
        std::string part = last ? path : path.substr(0, slash);
        if (::mkdir(part.c_str(), last ? final_mode : 0755) != 0 && errno != EEXIST) {
            return error::from_errno(errno, "creating directory " + part);
        }
        if (last) break;
        pos = slash + 1;
    }
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return error::from_errno(errno, "stat " + path);
    if (!S_ISDIR(st.st_mode))
        return error(errc::invalid_argument, path + " exists and is not a directory");
    return {};
}

status check_private_directory(const std::string& path, const std::string& what) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return error(errc::not_found, what + " " + path + " does not exist");
        return error::from_errno(errno, what + " " + path);
    }
    if (!S_ISDIR(st.st_mode))
        return error(errc::invalid_argument, what + " " + path + " is not a directory");
    if (st.st_uid != ::geteuid()) {
        return error(errc::invalid_argument,
                     what + " " + path + " is owned by uid " + std::to_string(st.st_uid) +
                         ", not by meshd's uid " + std::to_string(::geteuid()) +
                         "; it holds this node's private key: check who else had it, then chown "
                         "it (and what is inside) to meshd's user");
    }
    if (st.st_mode & 077) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
        return error(errc::invalid_argument,
                     what + " " + path + " is accessible by group or others (mode " + mode +
                         "); it holds this node's private key: chmod 700 " + path);
    }
    return {};
}

status sync_directory(const std::string& dir) {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return error::from_errno(errno, "opening directory " + dir);
    int rc = ::fsync(fd);
    int e = errno;
    ::close(fd);
    if (rc != 0) return error::from_errno(e, "fsync of directory " + dir);
    return {};
}

status replace_file(const std::string& dir, const std::string& path,
                    std::span<const uint8_t> bytes) {
    MW_TRY_STATUS(make_directories(dir, 0700));
    const std::string tmp = path + ".tmp";
    if (::unlink(tmp.c_str()) != 0 && errno != ENOENT) {
        return error::from_errno(errno, "removing " + tmp);
    }
    unique_fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd.valid()) return error::from_errno(errno, "creating " + tmp);
    auto fail = [&](const std::string& what) -> error {
        int e = errno;
        ::unlink(tmp.c_str());
        return error::from_errno(e, what);
    };
    // The umask can only narrow 0600; fchmod makes the mode exact regardless.
    if (::fchmod(fd.get(), 0600) != 0) return fail("chmod " + tmp);
    size_t off = 0;
    while (off < bytes.size()) {
        ssize_t w = ::write(fd.get(), bytes.data() + off, bytes.size() - off);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return fail("writing " + tmp);
        off += static_cast<size_t>(w);
    }
    if (::fsync(fd.get()) != 0) return fail("fsync " + tmp);
    fd.reset();
    if (::rename(tmp.c_str(), path.c_str()) != 0) return fail("storing " + path);
    return sync_directory(dir);
}

}  // namespace mw::meshd
