#include "meshd/directories.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

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

}  // namespace mw::meshd
