#include "cni-plugin/ipam_store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace mw::cni {

namespace {

constexpr const char* k_lock_name = "lock";
constexpr const char* k_last_prefix = "last_reserved_ip.";
// Files being written: complete ones are link()ed or rename()d into place, so a reservation or a
// hint is never seen half-written. One found while holding the lock is a killed writer's: list()
// removes it (STATUS' probe, written without the lock, is swept the same way).
constexpr const char* k_temp_prefix = ".tmp.";
constexpr const char* k_probe_prefix = ".status-probe.";

bool is_debris_name(const std::string& name) {
    return name.rfind(k_temp_prefix, 0) == 0 || name.rfind(k_probe_prefix, 0) == 0;
}

status mkdir_p(const std::string& path) {
    std::string cur;
    size_t pos = 0;
    while (pos != std::string::npos) {
        pos = path.find('/', pos + 1);
        cur = path.substr(0, pos);
        if (cur.empty()) continue;
        if (::mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST) {
            return error::from_errno(errno, "creating directory " + cur);
        }
    }
    return {};
}

result<std::string> read_small_file(const std::string& path) {
    unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return error::from_errno(errno, "reading " + path);
    char buf[512];
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) return error::from_errno(errno, "reading " + path);
    return std::string(buf, static_cast<size_t>(n));
}

status write_file(const std::string& path, const std::string& content, int flags) {
    unique_fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC | flags, 0644));
    if (!fd.valid()) return error::from_errno(errno, "writing " + path);
    ssize_t n = ::write(fd.get(), content.data(), content.size());
    if (n != static_cast<ssize_t>(content.size())) {
        // A short write is a full disk, too.
        return error::from_errno(n < 0 ? errno : ENOSPC, "writing " + path);
    }
    return {};
}

// Writes `content` to a temporary file beside `path` and puts it in place with link() (fails
// with EEXIST if `path` exists: an exclusive create that is never seen empty) or rename()
// (replaces). The temporary file is gone afterwards, on success and on error.
status write_complete(const std::string& dir, const std::string& name, const std::string& content,
                      bool exclusive) {
    std::string tmp = dir + "/" + k_temp_prefix + name + "." + std::to_string(::getpid());
    std::string path = dir + "/" + name;
    if (auto st = write_file(tmp, content, O_CREAT | O_TRUNC); !st) {
        ::unlink(tmp.c_str());
        return st;
    }
    int rc = exclusive ? ::link(tmp.c_str(), path.c_str()) : ::rename(tmp.c_str(), path.c_str());
    int e = errno;
    if (exclusive || rc != 0) ::unlink(tmp.c_str());
    if (rc != 0) return error::from_errno(e, (exclusive ? "allocating " : "writing ") + path);
    return {};
}

// host-local writes "id\r\nifname"; very old versions wrote only the id.
attachment parse_owner(const std::string& content) {
    attachment a;
    auto nl = content.find('\n');
    if (nl == std::string::npos) {
        a.container_id = content;
    } else {
        a.container_id = content.substr(0, nl);
        a.ifname = content.substr(nl + 1);
    }
    while (!a.container_id.empty() &&
           (a.container_id.back() == '\r' || a.container_id.back() == ' '))
        a.container_id.pop_back();
    while (!a.ifname.empty() &&
           (a.ifname.back() == '\n' || a.ifname.back() == '\r' || a.ifname.back() == ' '))
        a.ifname.pop_back();
    return a;
}

bool same_owner(const attachment& stored, const attachment& who) {
    return stored.container_id == who.container_id &&
           (stored.ifname.empty() || stored.ifname == who.ifname);
}

}  // namespace

std::pair<u128, u128> ipam_store::usable_span(const ip_prefix& range) {
    u128 first = range.first().to_u128() + 2;  // skip network and gateway
    u128 last = range.last().to_u128();
    if (range.is_v4()) last -= 1;  // skip broadcast
    return {first, last};
}

result<ipam_store> ipam_store::open_locked(const std::string& data_dir,
                                           const std::string& network) {
    std::string dir = data_dir + "/" + network;
    MW_TRY_STATUS(mkdir_p(dir));
    std::string lock_path = dir + "/" + k_lock_name;
    unique_fd fd(::open(lock_path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0600));
    if (!fd.valid()) return error::from_errno(errno, "opening IPAM lock " + lock_path);
    while (::flock(fd.get(), LOCK_EX) != 0) {
        if (errno != EINTR) return error::from_errno(errno, "locking " + lock_path);
    }
    return ipam_store(std::move(dir), std::move(fd));
}

result<std::vector<std::pair<ip_address, attachment>>> ipam_store::list() const {
    std::vector<std::pair<ip_address, attachment>> out;
    DIR* d = ::opendir(dir_.c_str());
    if (!d) return error::from_errno(errno, "listing " + dir_);
    while (dirent* e = ::readdir(d)) {
        std::string name = e->d_name;
        if (name == "." || name == ".." || name == k_lock_name ||
            name.rfind(k_last_prefix, 0) == 0) {
            continue;
        }
        if (is_debris_name(name)) {
            ::unlink((dir_ + "/" + name).c_str());  // we hold the lock: its writer was killed
            continue;
        }
        auto ip = ip_address::parse(name);
        if (!ip) continue;  // not ours (e.g. an editor's backup file)
        auto content = read_small_file(dir_ + "/" + name);
        if (!content) continue;  // released concurrently by a lock-ignoring writer
        out.emplace_back(*ip, parse_owner(*content));
    }
    ::closedir(d);
    return out;
}

result<std::vector<ip_address>> ipam_store::find(const attachment& who) const {
    auto all = MW_TRY(list());
    std::vector<ip_address> out;
    for (auto& [ip, owner] : all) {
        if (same_owner(owner, who)) out.push_back(ip);
    }
    return out;
}

result<ip_address> ipam_store::allocate(const ip_prefix& range, int range_id, const attachment& who,
                                        bool* created) {
    if (created) *created = false;
    for (const auto& ip : MW_TRY(find(who))) {
        if (range.contains(ip)) return ip;
    }
    auto [first, last] = usable_span(range);
    if (last < first) {
        return error(errc::exhausted, "pod CIDR " + range.str() + " has no usable addresses");
    }
    u128 span = last - first + 1;
    std::string last_path = dir_ + "/" + k_last_prefix + std::to_string(range_id);
    u128 start = first;
    if (auto prev = read_small_file(last_path)) {
        std::string s = *prev;
        while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
        if (auto ip = ip_address::parse(s); ip && range.contains(*ip)) {
            u128 v = ip->to_u128();
            start = (v >= first && v < last) ? v + 1 : first;
        }
    }
    std::string content = who.container_id + "\r\n" + who.ifname;
    for (u128 i = 0; i < span; ++i) {
        u128 v = first + (start - first + i) % span;
        ip_address ip = ip_address::from_u128(range.family(), v);
        if (::access((dir_ + "/" + ip.str()).c_str(), F_OK) == 0) continue;
        // Written whole, then linked into place: a plugin killed midway leaves no empty
        // reservation that DEL could not attribute (only a temporary file, swept by list()).
        auto st = write_complete(dir_, ip.str(), content, /*exclusive=*/true);
        if (!st) {
            if (st.err().is_errno(EEXIST)) continue;  // taken by a writer that ignores the lock
            return std::move(st).err();
        }
        // Best effort: a lost hint only means the next search starts earlier.
        (void)write_complete(dir_, std::string(k_last_prefix) + std::to_string(range_id), ip.str(),
                             /*exclusive=*/false);
        if (created) *created = true;
        return ip;
    }
    return error(errc::exhausted, "pod CIDR " + range.str() + " is exhausted: all " +
                                      std::to_string(static_cast<unsigned long long>(span)) +
                                      " usable addresses are allocated");
}

status ipam_store::release(const ip_address& ip) {
    std::string path = dir_ + "/" + ip.str();
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        return error::from_errno(errno, "releasing " + path);
    }
    return {};
}

result<int> ipam_store::release_all(const attachment& who) {
    int n = 0;
    for (const auto& ip : MW_TRY(find(who))) {
        MW_TRY_STATUS(release(ip));
        ++n;
    }
    return n;
}

status check_store_writable(const std::string& data_dir, const std::string& network) {
    std::string dir = data_dir + "/" + network;
    MW_TRY_STATUS(mkdir_p(dir));
    std::string probe = dir + "/" + k_probe_prefix + std::to_string(::getpid());
    MW_TRY_STATUS(write_file(probe, "ok", O_CREAT | O_TRUNC));
    ::unlink(probe.c_str());
    return {};
}

}  // namespace mw::cni
