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

    MW_TRY_STATUS(make_directories(state_dir_, 0700));
    const std::string p = path();
    const std::string tmp = p + ".tmp";
    // O_EXCL: a leftover temporary file (a crash between create and rename) is removed first,
    // never written through (it could be a link planted by someone else).
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
    if (::fchmod(fd.get(), 0600) != 0) return fail("chmod " + tmp);
    const std::string text = std::to_string(epoch) + "\n";
    size_t off = 0;
    while (off < text.size()) {
        ssize_t w = ::write(fd.get(), text.data() + off, text.size() - off);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return fail("writing " + tmp);
        off += static_cast<size_t>(w);
    }
    if (::fsync(fd.get()) != 0) return fail("fsync " + tmp);
    fd.reset();
    if (::rename(tmp.c_str(), p.c_str()) != 0) return fail("storing " + p);
    MW_TRY_STATUS(sync_directory(state_dir_));
    return epoch;
}

}  // namespace mw::meshd
