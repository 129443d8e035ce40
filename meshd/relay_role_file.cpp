#include "meshd/relay_role_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>

#include "common/unique_fd.hpp"

namespace mw::meshd {

namespace {

constexpr std::string_view k_role_magic = "meshwire-relay-role 1";

result<uint64_t> parse_u64(std::string_view v) {
    uint64_t n = 0;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (v.empty() || ec != std::errc{} || p != v.data() + v.size()) {
        return error(errc::protocol_error, "not a number: " + std::string(v));
    }
    return n;
}

std::string hex(std::span<const uint8_t> b) {
    static const char* d = "0123456789abcdef";
    std::string s;
    for (uint8_t c : b) {
        s += d[c >> 4];
        s += d[c & 15];
    }
    return s;
}

}  // namespace

std::string relay_role_file::encode(const saved_role_file& r) {
    std::string s(k_role_magic);
    s += "\nboot " + hex(r.at.boot) + "\nboottime_ms " + std::to_string(r.at.boottime_ms) +
         "\nunix_ms " + std::to_string(r.at.unix_ms) + "\nmode " +
         (r.listed ? "listed" : "offering") + "\n";
    for (const auto& e : r.advertised) s += "advertised " + e.str() + "\n";
    for (const auto& e : r.verified) s += "verified " + e.str() + "\n";
    return s;
}

result<saved_role_file> relay_role_file::decode(std::string_view text) {
    auto bad = [](const std::string& why) {
        return error(errc::protocol_error, "not a relay role file: " + why);
    };
    if (text.size() > max_file_size) return bad("larger than " + std::to_string(max_file_size));
    saved_role_file r;
    bool boot = false, bt = false, wall = false, mode = false, first = true;
    while (!text.empty()) {
        const size_t nl = text.find('\n');
        if (nl == std::string_view::npos) return bad("no newline at the end");
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl + 1);
        if (first) {
            if (line != k_role_magic)
                return bad("first line is not \"" + std::string(k_role_magic) + "\"");
            first = false;
            continue;
        }
        const size_t sp = line.find(' ');
        if (sp == std::string_view::npos) return bad("line without a value");
        std::string_view key = line.substr(0, sp), val = line.substr(sp + 1);
        if (key == "boot") {
            auto b = parse_boot_id(val);  // dashes are skipped
            if (val.size() != 32 || !b) return bad("bad boot ID");
            r.at.boot = *b;
            boot = true;
        } else if (key == "boottime_ms" || key == "unix_ms") {
            auto n = parse_u64(val);
            if (!n) return bad(std::string(key) + ": " + n.err().message);
            (key == "unix_ms" ? r.at.unix_ms : r.at.boottime_ms) = *n;
            (key == "unix_ms" ? wall : bt) = true;
        } else if (key == "mode") {
            if (val != "listed" && val != "offering") return bad("mode " + std::string(val));
            r.listed = val == "listed";
            mode = true;
        } else if (key == "advertised" || key == "verified") {
            auto e = wg_endpoint::parse(val);
            if (!e) return bad("bad endpoint " + std::string(val));
            (key == "verified" ? r.verified : r.advertised).push_back(*e);
        } else {
            return bad("unknown line " + std::string(key));
        }
    }
    if (first) return bad("empty");
    if (!boot || !bt || !wall || !mode) return bad("a line is missing");
    if (r.advertised.empty() || r.verified.empty()) return bad("no address");
    return r;
}

result<saved_role_file> relay_role_file::load() const {
    const std::string p = path();
    unique_fd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd.valid()) {
        if (errno == ENOENT) return error(errc::not_found, "no relay role file at " + p);
        return error::from_errno(errno, "opening " + p);
    }
    std::string text(max_file_size + 1, '\0');
    size_t got = 0;
    while (got < text.size()) {
        ssize_t n = ::read(fd.get(), text.data() + got, text.size() - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return error::from_errno(errno, "reading " + p);
        if (n == 0) break;
        got += static_cast<size_t>(n);
    }
    text.resize(got);
    return decode(text);
}

status relay_role_file::save(const saved_role_file& r) const {
    const std::string p = path(), tmp = p + ".tmp";
    const std::string text = encode(r);
    ::unlink(tmp.c_str());  // a leftover of a crash between create and rename
    unique_fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd.valid()) return error::from_errno(errno, "creating " + tmp);
    size_t done = 0;
    while (done < text.size()) {
        ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            auto e = error::from_errno(errno, "writing " + tmp);
            ::unlink(tmp.c_str());
            return e;
        }
        done += static_cast<size_t>(n);
    }
    if (::rename(tmp.c_str(), p.c_str()) != 0) {
        auto e = error::from_errno(errno, "renaming " + tmp);
        ::unlink(tmp.c_str());
        return e;
    }
    return {};
}

status relay_role_file::remove() const {
    const std::string p = path();
    if (::unlink(p.c_str()) != 0 && errno != ENOENT) {
        return error::from_errno(errno, "removing " + p);
    }
    return {};
}

}  // namespace mw::meshd
