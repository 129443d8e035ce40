// The cluster pre-shared key file (`psk.path`). Whoever holds the PSK can join the mesh, discover
// nodes and use relays (BRIEF scenario 6), so the file's permissions are checked, not trusted:
//   - readable or writable by others, or writable by group: refused ("chmod 600 it"). A Kubernetes
//     Secret volume must therefore set defaultMode 0400 (or 0440); its default 0644 is refused.
//   - readable by group: accepted with a warning (e.g. a Secret with fsGroup), reported to the
//     caller to log.
// Content: the file's bytes, minus trailing newlines and spaces (so `echo KEY > file` and
// `printf KEY > file` are the same key), at least psk_sealer::min_psk_size (16) bytes and at most
// max_size. Generate one with `head -c 32 /dev/urandom | base64`.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/result.hpp"

namespace mw::meshd {

class psk_file {
public:
    static constexpr size_t max_size = 4096;

    // Reads and checks the file at path.
    static result<psk_file> read(const std::string& path);

    psk_file(psk_file&&) = default;
    psk_file& operator=(psk_file&&) = default;
    psk_file(const psk_file&) = delete;
    psk_file& operator=(const psk_file&) = delete;
    ~psk_file();

    std::span<const uint8_t> bytes() const { return bytes_; }
    // Non-empty when the file was accepted with a caveat worth logging.
    const std::string& warning() const { return warning_; }

private:
    psk_file() = default;
    std::vector<uint8_t> bytes_;
    std::string warning_;
};

}  // namespace mw::meshd
