#include "common/netns.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <cerrno>
#include <thread>

namespace mw {

#ifndef NSFS_MAGIC
#define NSFS_MAGIC 0x6e736673
#endif

result<netns> netns::open(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return error::from_errno(errno, "opening network namespace " + path);
    unique_fd owned(fd);
    struct statfs sfs {};
    if (fstatfs(fd, &sfs) != 0) return error::from_errno(errno, "statfs " + path);
    if (sfs.f_type != NSFS_MAGIC && sfs.f_type != PROC_SUPER_MAGIC) {
        return error(errc::invalid_argument, path + " is not a network namespace (not on nsfs)");
    }
    int type = ioctl(fd, NS_GET_NSTYPE);
    if (type >= 0 && type != CLONE_NEWNET) {
        return error(errc::invalid_argument, path + " is a namespace, but not a network namespace");
    }
    if (type < 0 && errno != ENOTTY) {
        return error(errc::invalid_argument, path + " is not a network namespace");
    }
    return netns(std::move(owned), path);
}

result<netns> netns::current() {
    return open("/proc/thread-self/ns/net");
}

status netns::run(const std::function<status()>& fn) const {
    status out;  // set on both of the thread's paths
    std::thread t([&] {
        if (::setns(fd_.get(), CLONE_NEWNET) != 0) {
            out = error::from_errno(errno, "entering network namespace " + path_);
            return;
        }
        out = fn();
    });
    t.join();
    return out;
}

bool netns::same_as(const netns& other) const {
    struct stat a {
    }, b{};
    if (fstat(fd_.get(), &a) != 0 || fstat(other.fd_.get(), &b) != 0) return false;
    return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

}  // namespace mw
