#include "common/sysctl.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "common/unique_fd.hpp"

namespace mw {

result<std::string> read_sysctl(const std::string& key) {
    std::string path = "/proc/sys/" + key;
    unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return error::from_errno(errno, "reading sysctl " + key);
    char buf[256];
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) return error::from_errno(errno, "reading sysctl " + key);
    std::string v(buf, static_cast<size_t>(n));
    while (!v.empty() && (v.back() == '\n' || v.back() == ' ')) v.pop_back();
    return v;
}

status write_sysctl(const std::string& key, const std::string& value) {
    std::string path = "/proc/sys/" + key;
    unique_fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd.valid()) return error::from_errno(errno, "writing sysctl " + key);
    if (::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size())) {
        return error::from_errno(errno, "writing sysctl " + key + "=" + value);
    }
    return {};
}

status ensure_sysctl(const std::string& key, const std::string& value) {
    auto cur = read_sysctl(key);
    if (cur && *cur == value) return {};
    return write_sysctl(key, value);
}

}  // namespace mw
