// result<T>: a value or an mw::error. gcc 12 has no std::expected, so this is the small subset we
// need: construct from either side, test, access, and propagate with MW_TRY.
#pragma once

#include <cassert>
#include <utility>
#include <variant>

#include "common/error.hpp"

namespace mw {

template <class T>
class [[nodiscard]] result {
public:
    result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
    result(error err) : v_(std::in_place_index<1>, std::move(err)) {}

    bool ok() const noexcept { return v_.index() == 0; }
    explicit operator bool() const noexcept { return ok(); }

    T& value() & {
        assert(ok());
        return std::get<0>(v_);
    }
    const T& value() const& {
        assert(ok());
        return std::get<0>(v_);
    }
    T&& value() && {
        assert(ok());
        return std::get<0>(std::move(v_));
    }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }

    const error& err() const& {
        assert(!ok());
        return std::get<1>(v_);
    }
    error&& err() && {
        assert(!ok());
        return std::get<1>(std::move(v_));
    }

private:
    std::variant<T, error> v_;
};

// result<void>: success or an error.
template <>
class [[nodiscard]] result<void> {
public:
    result() = default;
    result(error err) : err_(std::move(err)), failed_(true) {}

    bool ok() const noexcept { return !failed_; }
    explicit operator bool() const noexcept { return ok(); }
    const error& err() const& {
        assert(failed_);
        return err_;
    }
    error&& err() && {
        assert(failed_);
        return std::move(err_);
    }

private:
    error err_;
    bool failed_ = false;
};

using status = result<void>;

}  // namespace mw

// Propagate a failed result from the enclosing function; yields the value otherwise.
#define MW_TRY(expr)                                            \
    ({                                                          \
        auto mw_try_r_ = (expr);                                \
        if (!mw_try_r_.ok()) return std::move(mw_try_r_).err(); \
        std::move(mw_try_r_).value();                           \
    })

// Same for result<void> / status.
#define MW_TRY_STATUS(expr)                                     \
    do {                                                        \
        auto mw_try_s_ = (expr);                                \
        if (!mw_try_s_.ok()) return std::move(mw_try_s_).err(); \
    } while (0)
