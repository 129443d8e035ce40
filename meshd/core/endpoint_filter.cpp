#include "meshd/core/endpoint_filter.hpp"

#include <algorithm>

namespace mw::meshd {

const char* to_string(endpoint_refusal r) noexcept {
    switch (r) {
        case endpoint_refusal::none:
            return "none";
        case endpoint_refusal::unspecified:
            return "unspecified";
        case endpoint_refusal::loopback:
            return "loopback";
        case endpoint_refusal::link_local:
            return "link_local";
        case endpoint_refusal::multicast:
            return "multicast";
        case endpoint_refusal::broadcast:
            return "broadcast";
        case endpoint_refusal::reserved:
            return "reserved";
        case endpoint_refusal::port:
            return "port";
        case endpoint_refusal::budget:
            return "budget";
    }
    return "none";
}

namespace {

endpoint_refusal classify_v4(const uint8_t* b) noexcept {
    if (b[0] == 0) return endpoint_refusal::unspecified;  // 0.0.0.0/8 "this network"
    if (b[0] == 127) return endpoint_refusal::loopback;
    if (b[0] == 169 && b[1] == 254) return endpoint_refusal::link_local;
    if ((b[0] & 0xf0) == 224) return endpoint_refusal::multicast;
    if (b[0] == 255 && b[1] == 255 && b[2] == 255 && b[3] == 255)
        return endpoint_refusal::broadcast;
    if ((b[0] & 0xf0) == 240) return endpoint_refusal::reserved;
    return endpoint_refusal::none;
}

}  // namespace

endpoint_refusal endpoint_filter::classify(const ip_address& a) noexcept {
    const uint8_t* b = a.data();
    if (a.is_v4()) return classify_v4(b);
    if (!a.is_v6()) return endpoint_refusal::unspecified;
    static constexpr uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::equal(mapped, mapped + 12, b)) return classify_v4(b + 12);
    if (std::all_of(b, b + 15, [](uint8_t x) { return x == 0; })) {
        if (b[15] == 0) return endpoint_refusal::unspecified;
        if (b[15] == 1) return endpoint_refusal::loopback;
    }
    if (b[0] == 0xff) return endpoint_refusal::multicast;
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return endpoint_refusal::link_local;
    return endpoint_refusal::none;
}

endpoint_refusal endpoint_filter::check(const wg_endpoint& ep, uint16_t cluster_port) noexcept {
    if (auto r = classify(ep.address); r != endpoint_refusal::none) return r;
    if (ep.port != cluster_port) return endpoint_refusal::port;
    return endpoint_refusal::none;
}

}  // namespace mw::meshd
