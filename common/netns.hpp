// Network namespaces. A namespace switch (setns) only ever happens on a short-lived thread created
// for it, so the calling thread — and every other thread of the process — stays where it was, and
// no code path can forget to switch back.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "common/result.hpp"
#include "common/unique_fd.hpp"

namespace mw {

class netns {
public:
    // Opens a namespace by path (/var/run/netns/x, /proc/<pid>/ns/net). Fails with ENOENT when the
    // path does not exist and with errc::invalid_argument when it is not a network namespace.
    static result<netns> open(const std::string& path);
    // The namespace of the calling thread.
    static result<netns> current();

    int fd() const noexcept { return fd_.get(); }
    const std::string& path() const noexcept { return path_; }

    // Runs fn on a new thread that has joined this namespace and waits for it. fn's result (or the
    // setns failure) is returned; the caller's thread never changes namespace.
    status run(const std::function<status()>& fn) const;

    // Same as run(), for functions that produce a value.
    template <class T>
    result<T> run_value(const std::function<result<T>()>& fn) const {
        std::optional<result<T>> out;
        auto st = run([&]() -> status {
            out.emplace(fn());
            return {};
        });
        // out is unset exactly when run() failed before fn ran (setns): tested directly, so
        // that the dereference below is visibly checked.
        if (!out) return std::move(st).err();
        return std::move(*out);
    }

    // True when both handles refer to the same namespace (same nsfs inode).
    bool same_as(const netns& other) const;

private:
    netns(unique_fd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
    unique_fd fd_;
    std::string path_;
};

}  // namespace mw
