// Bounds-checked big-endian reading and writing of wire bytes. Every decoder in meshd/core goes
// through byte_reader so that no parser indexes a buffer by hand: a read past the end sets a
// sticky failure flag and returns zeros instead of touching memory, and the caller checks ok()
// (and at_end(), so trailing garbage is rejected) once at the end of a message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

namespace mw::meshd {

class byte_writer {
public:
    explicit byte_writer(std::vector<uint8_t>& out) : out_(out) {}

    void u8(uint8_t v) { out_.push_back(v); }
    void u16(uint16_t v) {
        out_.push_back(static_cast<uint8_t>(v >> 8));
        out_.push_back(static_cast<uint8_t>(v));
    }
    void u32(uint32_t v) { big_endian(v); }
    void u64(uint64_t v) { big_endian(v); }
    void bytes(std::span<const uint8_t> b) { out_.insert(out_.end(), b.begin(), b.end()); }
    void bytes(const void* p, size_t n) {
        const auto* b = static_cast<const uint8_t*>(p);
        out_.insert(out_.end(), b, b + n);
    }
    void text(std::string_view s) { bytes(s.data(), s.size()); }
    size_t size() const noexcept { return out_.size(); }

private:
    template <class T>
    void big_endian(T v) {
        for (int shift = 8 * int(sizeof(T)) - 8; shift >= 0; shift -= 8)
            out_.push_back(static_cast<uint8_t>(v >> shift));
    }

    std::vector<uint8_t>& out_;
};

class byte_reader {
public:
    explicit byte_reader(std::span<const uint8_t> in) : in_(in) {}

    uint8_t u8() {
        if (!need(1)) return 0;
        return in_[pos_++];
    }
    uint16_t u16() {
        if (!need(2)) return 0;
        uint16_t v = static_cast<uint16_t>(in_[pos_] << 8 | in_[pos_ + 1]);
        pos_ += 2;
        return v;
    }
    uint32_t u32() { return big_endian<uint32_t>(); }
    uint64_t u64() { return big_endian<uint64_t>(); }
    // Copies n bytes into dst; on a short buffer dst is zero-filled and the reader fails.
    void copy(void* dst, size_t n) {
        if (!need(n)) {
            std::memset(dst, 0, n);
            return;
        }
        std::memcpy(dst, in_.data() + pos_, n);
        pos_ += n;
    }
    // A view of the next n bytes (empty on failure); valid as long as the input buffer is.
    std::span<const uint8_t> view(size_t n) {
        if (!need(n)) return {};
        auto s = in_.subspan(pos_, n);
        pos_ += n;
        return s;
    }
    std::span<const uint8_t> rest() {
        auto s = in_.subspan(pos_);
        pos_ = in_.size();
        return s;
    }
    void fail() noexcept { failed_ = true; }

    bool ok() const noexcept { return !failed_; }
    bool at_end() const noexcept { return pos_ == in_.size(); }
    size_t remaining() const noexcept { return in_.size() - pos_; }
    size_t position() const noexcept { return pos_; }

private:
    template <class T>
    T big_endian() {
        if (!need(sizeof(T))) return 0;
        T v = 0;
        for (size_t i = 0; i < sizeof(T); ++i) v = static_cast<T>(v << 8 | in_[pos_ + i]);
        pos_ += sizeof(T);
        return v;
    }
    bool need(size_t n) {
        if (failed_ || n > in_.size() - pos_) {
            failed_ = true;
            return false;
        }
        return true;
    }

    std::span<const uint8_t> in_;
    size_t pos_ = 0;
    bool failed_ = false;
};

}  // namespace mw::meshd
