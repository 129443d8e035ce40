#include "meshd/boot_epoch.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>

#include "common/unique_fd.hpp"
#include "meshd/directories.hpp"

namespace mw::meshd {

result<uint64_t> boot_epoch::load() const {
    const std::string p = path();
    unique_fd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd.valid()) {
        if (errno == ENOENT) return error(errc::not_found, "no boot epoch at " + p);
        return error::from_errno(errno, "opening boot epoch " + p);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return error::from_errno(errno, "stat " + p);
    const std::string fix = "; remove it (rm " + p + ") and restart meshd";
    if (!S_ISREG(st.st_mode)) return error(errc::invalid_argument, p + " is not a regular file");
    if (st.st_mode & 077) {
        return error(errc::invalid_argument, p + " is accessible by group or others" + fix);
    }
    char buf[32];
    ssize_t n = 0;
    do {
        n = ::read(fd.get(), buf, sizeof buf);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return error::from_errno(errno, "reading " + p);
    const char* end = buf + n;
    if (n > 0 && buf[n - 1] == '\n') --end;
    uint64_t v = 0;
    auto [ptr, ec] = std::from_chars(buf, end, v);
    if (n == 0 || n == static_cast<ssize_t>(sizeof buf) || ec != std::errc{} || ptr != end) {
        return error(errc::invalid_argument, p + " does not hold a boot epoch" + fix);
    }
    return v;
}

result<uint64_t> boot_epoch::next(uint64_t now_unix_s) const {
    uint64_t stored = 0;
    if (auto l = load()) {
        stored = *l;
    } else if (!l.err().is(errc::not_found)) {
        return std::move(l).err();
    }
    if (stored == UINT64_MAX) return error(errc::invalid_argument, path() + " is exhausted");
    const uint64_t epoch = std::max(stored + 1, now_unix_s);

    const std::string text = std::to_string(epoch) + "\n";
    MW_TRY_STATUS(replace_file(
        state_dir_, path(), std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size())));
    return epoch;
}

}  // namespace mw::meshd
