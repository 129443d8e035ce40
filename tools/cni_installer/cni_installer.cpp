#include "tools/cni_installer/cni_installer.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <nlohmann/json.hpp>

#include "common/unique_fd.hpp"

namespace mw::tools {

namespace {

result<std::string> read_file(const std::string& path) {
    unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return error::from_errno(errno, "opening " + path);
    std::string out;
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            return error::from_errno(errno, "reading " + path);
        }
        if (n == 0) break;
        out.append(buf, static_cast<size_t>(n));
    }
    return out;
}

status write_all(int fd, const std::string& bytes, const std::string& path) {
    size_t off = 0;
    while (off < bytes.size()) {
        ssize_t n = ::write(fd, bytes.data() + off, bytes.size() - off);
        if (n < 0) {
            if (errno == EINTR) continue;
            return error::from_errno(errno, "writing " + path);
        }
        off += static_cast<size_t>(n);
    }
    return {};
}

// mkdir -p with 0755: a fresh node may not have /etc/cni/net.d yet. Existing directories (and
// their modes and owners) are left as they are.
status make_dirs(const std::string& dir) {
    if (dir.empty()) return error(errc::invalid_argument, "empty directory path");
    struct stat st {};
    if (::stat(dir.c_str(), &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            return error(errc::invalid_argument, dir + " exists and is not a directory");
        return {};
    }
    if (errno != ENOENT) return error::from_errno(errno, "stat " + dir);
    auto slash = dir.find_last_of('/');
    if (slash != std::string::npos && slash > 0) MW_TRY_STATUS(make_dirs(dir.substr(0, slash)));
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
        return error::from_errno(errno, "mkdir " + dir);
    return {};
}

// True when path is a regular file (not followed if a symlink) with exactly these bytes and mode.
bool same_file(const std::string& path, const std::string& bytes, unsigned mode) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
    if ((st.st_mode & 07777) != mode || static_cast<size_t>(st.st_size) != bytes.size())
        return false;
    auto cur = read_file(path);
    return cur && *cur == bytes;
}

}  // namespace

status cni_installer::validate_conf_name(const std::string& name) {
    const std::string ext = ".conflist";
    if (name.empty() || name.find('/') != std::string::npos || name[0] == '.' ||
        name.size() <= ext.size() || name.compare(name.size() - ext.size(), ext.size(), ext) != 0)
        return error(errc::invalid_argument,
                     "conf name \"" + name +
                         "\" must be a file name ending in .conflist, e.g. 10-meshwire.conflist");
    return {};
}

status cni_installer::validate_conflist(const std::string& text) {
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return error(errc::parse_error, "not a JSON object");
    if (!j.contains("cniVersion") || !j["cniVersion"].is_string())
        return error(errc::invalid_argument, "cniVersion: missing or not a string");
    if (!j.contains("name") || !j["name"].is_string() || j["name"].get<std::string>().empty())
        return error(errc::invalid_argument, "name: missing or not a non-empty string");
    if (!j.contains("plugins") || !j["plugins"].is_array() || j["plugins"].empty())
        return error(errc::invalid_argument, "plugins: missing or not a non-empty array");
    for (size_t i = 0; i < j["plugins"].size(); ++i) {
        const auto& p = j["plugins"][i];
        if (!p.is_object() || !p.contains("type") || !p["type"].is_string())
            return error(errc::invalid_argument,
                         "plugins[" + std::to_string(i) + "].type: missing or not a string");
    }
    if (j["plugins"][0]["type"] != "meshwire")
        return error(errc::invalid_argument,
                     "plugins[0].type: the first plugin must be meshwire (it takes no prevResult)");
    return {};
}

result<install_action> cni_installer::install_file(const std::string& dir, const std::string& name,
                                                   const std::string& bytes, unsigned mode) {
    const std::string dest = dir + "/" + name;
    if (same_file(dest, bytes, mode)) return install_action{dest, false};
    // A fixed temporary name: a run killed halfway leaves at most this one file, which the next
    // run reuses; a dot name is not loaded by CNI runtimes (they read *.conf, *.conflist, *.json).
    const std::string tmp = dir + "/." + name + ".meshwire-install.tmp";
    if (::unlink(tmp.c_str()) != 0 && errno != ENOENT)
        return error::from_errno(errno, "removing the stale " + tmp);
    unique_fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
    if (!fd.valid()) return error::from_errno(errno, "creating " + tmp);
    auto fail = [&](error e) {
        ::unlink(tmp.c_str());
        return e;
    };
    if (auto s = write_all(fd.get(), bytes, tmp); !s) return fail(s.err());
    // The umask may have cleared bits of `mode` at open().
    if (::fchmod(fd.get(), mode) != 0) return fail(error::from_errno(errno, "chmod " + tmp));
    if (::fsync(fd.get()) != 0) return fail(error::from_errno(errno, "fsync " + tmp));
    fd.reset();
    if (::rename(tmp.c_str(), dest.c_str()) != 0)
        return fail(error::from_errno(errno, "renaming " + tmp + " to " + dest));
    // The rename itself must survive a power cut, or the node could boot with neither file.
    unique_fd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dfd.valid()) ::fsync(dfd.get());
    return install_action{dest, true};
}

result<std::vector<install_action>> cni_installer::run() const {
    MW_TRY_STATUS(validate_conf_name(opts_.conf_name));
    // Everything is read and checked before anything is written: a bad ConfigMap must not leave a
    // new plugin beside an old conflist.
    auto plugin = MW_TRY(read_file(opts_.plugin_source));
    if (plugin.empty()) return error(errc::invalid_argument, opts_.plugin_source + " is empty");
    auto conflist = MW_TRY(read_file(opts_.conflist_source));
    if (auto s = validate_conflist(conflist); !s) return s.err().wrap(opts_.conflist_source);
    MW_TRY_STATUS(make_dirs(opts_.bin_dir));
    MW_TRY_STATUS(make_dirs(opts_.conf_dir));
    std::vector<install_action> done;
    // The plugin first: a conflist naming a plugin that is not there yet would fail pod creation.
    done.push_back(MW_TRY(install_file(opts_.bin_dir, "meshwire", plugin, 0755)));
    done.push_back(MW_TRY(install_file(opts_.conf_dir, opts_.conf_name, conflist, 0644)));
    return done;
}

}  // namespace mw::tools
