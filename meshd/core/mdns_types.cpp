#include "meshd/core/mdns_types.hpp"

namespace mw::meshd {

const mdns_name& mdns_service_type() {
    static const mdns_name n = mdns_name::from_dotted("_meshwire._udp.local");
    return n;
}

const mdns_name& mdns_services_meta() {
    static const mdns_name n = mdns_name::from_dotted("_services._dns-sd._udp.local");
    return n;
}

wg_endpoint mdns_group(int family) {
    static const wg_endpoint v4{ip_address::parse("224.0.0.251").value(), mdns_port};
    static const wg_endpoint v6{ip_address::parse("ff02::fb").value(), mdns_port};
    return family == AF_INET6 ? v6 : v4;
}

bool is_mdns_group(const ip_address& a) noexcept {
    return a == mdns_group(AF_INET).address || a == mdns_group(AF_INET6).address;
}

}  // namespace mw::meshd
