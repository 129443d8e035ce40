#include "meshd/node_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <nlohmann/json.hpp>

#include "common/unique_fd.hpp"
#include "meshd/directories.hpp"

namespace mw::meshd {

std::string node_file::to_json() const {
    nlohmann::json j = nlohmann::json::object();
    j["nodeName"] = node_name;
    nlohmann::json cidrs = nlohmann::json::array();
    for (const auto& p : pod_cidrs) cidrs.push_back(p.str());
    j["podCIDRs"] = std::move(cidrs);
    if (mtu) j["mtu"] = *mtu;
    return j.dump(2) + "\n";
}

status node_file::write(const std::string& path) const {
    auto slash = path.rfind('/');
    if (slash == std::string::npos || slash == 0) {
        return error(errc::invalid_argument,
                     "node file " + path + " must be an absolute path below a directory");
    }
    const std::string dir = path.substr(0, slash);
    MW_TRY_STATUS(make_directories(dir, 0755));

    const std::string tmp = path + ".tmp." + std::to_string(::getpid());
    const std::string text = to_json();
    {
        unique_fd fd(
            ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644));
        if (!fd.valid()) return error::from_errno(errno, "creating " + tmp);
        auto fail = [&](const std::string& what) {
            error e = error::from_errno(errno, what + " " + tmp);
            ::unlink(tmp.c_str());
            return e;
        };
        if (::fchmod(fd.get(), 0644) != 0) return fail("chmod");
        size_t off = 0;
        while (off < text.size()) {
            ssize_t n = ::write(fd.get(), text.data() + off, text.size() - off);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return fail("writing");
            off += static_cast<size_t>(n);
        }
        if (::fsync(fd.get()) != 0) return fail("fsync");
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        int e = errno;
        ::unlink(tmp.c_str());
        return error::from_errno(e, "renaming " + tmp + " to " + path);
    }
    return sync_directory(dir);
}

}  // namespace mw::meshd
