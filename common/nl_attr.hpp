// Attribute iteration for libmnl in C++ (libmnl's for_each macros assign void* and do not compile
// as C++). Shared by rtnetlink and the WireGuard generic-netlink code.
#pragma once

#include <libmnl/libmnl.h>

#include <cstring>
#include <string>

namespace mw::nl {

// Calls fn(const nlattr*) for every attribute of nlh after a fixed header of `offset` bytes.
template <class F>
void for_each_attr(const nlmsghdr* nlh, size_t offset, F&& fn) {
    const auto* a = static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(nlh, offset));
    const char* tail = static_cast<const char*>(mnl_nlmsg_get_payload_tail(nlh));
    while (mnl_attr_ok(a, static_cast<int>(tail - reinterpret_cast<const char*>(a)))) {
        fn(a);
        a = mnl_attr_next(a);
    }
}

// Calls fn(const nlattr*) for every attribute nested in `nest`.
template <class F>
void for_each_nested(const nlattr* nest, F&& fn) {
    const char* start = static_cast<const char*>(mnl_attr_get_payload(nest));
    const char* end = start + mnl_attr_get_payload_len(nest);
    const auto* a = reinterpret_cast<const nlattr*>(start);
    while (mnl_attr_ok(a, static_cast<int>(end - reinterpret_cast<const char*>(a)))) {
        fn(a);
        a = mnl_attr_next(a);
    }
}

// A string attribute without trusting the sender's NUL terminator.
inline std::string attr_string(const nlattr* a) {
    const char* s = static_cast<const char*>(mnl_attr_get_payload(a));
    return std::string(s, strnlen(s, mnl_attr_get_payload_len(a)));
}

}  // namespace mw::nl
