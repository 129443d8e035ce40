// The cluster pre-shared key file (`psk.path`). Whoever holds the PSK can join the mesh, discover
// nodes and use relays (BRIEF scenario 6), so the file's permissions are checked, not trusted:
//   - readable or writable by others, or writable by group: refused ("chmod 600 it"). A Kubernetes
//     Secret volume must therefore set defaultMode 0400 (or 0440); its default 0644 is refused.
//   - readable by group: accepted with a warning (e.g. a Secret with fsGroup), reported to the
//     caller to log.
// Content: the file's bytes, minus trailing newlines and spaces (so `echo KEY > file` and
// `printf KEY > file` are the same key), at most max_size. The bytes themselves are the key (a
// base64 text is not decoded: every cluster's key stays what it was). Generate one with
// `head -c 32 /dev/urandom | base64` (44 characters, 256 bits).
//
// Strength (check_strength): one captured control datagram lets anyone test PSK guesses offline
// at AEAD speed, so the key must not be guessable. Refused, with the generator command:
//   - fewer than min_bytes (32) bytes;
//   - printable text (every byte 0x20..0x7e) of fewer than min_text_chars (44) characters: the
//     generator's output is 44, and text carries at most ~6.5 bits per character;
//   - fewer than min_distinct (12) distinct byte values (one byte repeated, "abcabc...", a
//     keyboard run); random hex (16 symbols) or base64 of that length always has more;
//   - a repetition of a shorter pattern (a period of at most half the length).
// These catch accidents (a placeholder, a short password), not every weak key: a long English
// sentence passes. The generator command is the supported way.
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
    static constexpr size_t min_bytes = 32;
    static constexpr size_t min_text_chars = 44;
    static constexpr size_t min_distinct = 12;

    // Why `key` is too weak for a cluster PSK (a sentence without the key), or "" when it is not.
    static std::string check_strength(std::span<const uint8_t> key);

    // Reads and checks the file at path; errors name `field` (psk.path, psk.acceptPaths[i]).
    static result<psk_file> read(const std::string& path, const std::string& field = "psk.path");

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
