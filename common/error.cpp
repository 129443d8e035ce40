#include "common/error.hpp"

#include <cstring>

namespace mw {

namespace {

class category_impl final : public std::error_category {
public:
    const char* name() const noexcept override { return "meshwire"; }
    std::string message(int v) const override {
        switch (static_cast<errc>(v)) {
            case errc::ok:
                return "success";
            case errc::invalid_argument:
                return "invalid argument";
            case errc::parse_error:
                return "parse error";
            case errc::not_found:
                return "not found";
            case errc::already_exists:
                return "already exists";
            case errc::exhausted:
                return "resource exhausted";
            case errc::unsupported:
                return "unsupported";
            case errc::io_error:
                return "I/O error";
            case errc::protocol_error:
                return "protocol error";
            case errc::timeout:
                return "timed out";
            case errc::state_mismatch:
                return "state mismatch";
        }
        return "unknown meshwire error";
    }
};

}  // namespace

const std::error_category& mw_category() noexcept {
    static const category_impl instance;
    return instance;
}

error error::from_errno(int err, const std::string& what) {
    return {std::error_code(err, std::system_category()), what + ": " + std::strerror(err)};
}

}  // namespace mw
