#include "meshd/core/core_types.hpp"

namespace mw::meshd {

const char* to_string(learned_via v) noexcept {
    switch (v) {
        case learned_via::relay:
            return "relay";
        case learned_via::bootstrap:
            return "bootstrap";
        case learned_via::mdns:
            return "mdns";
        case learned_via::cache:
            return "cache";
        case learned_via::dht:
            return "dht";
        case learned_via::kubernetes:
            return "kubernetes";
        case learned_via::registration:
            return "registration";
        case learned_via::neighbour:
            return "neighbour";
    }
    return "?";
}

std::vector<std::string> learned_via_names(learned_via_set s) {
    std::vector<std::string> v;
    for (uint8_t bit = 1; bit != 0 && bit <= static_cast<uint8_t>(learned_via::neighbour);
         bit = static_cast<uint8_t>(bit << 1)) {
        if (s & bit) v.emplace_back(to_string(static_cast<learned_via>(bit)));
    }
    return v;
}

const char* to_string(path_kind k) noexcept {
    switch (k) {
        case path_kind::none:
            return "none";
        case path_kind::direct:
            return "direct";
        case path_kind::relay:
            return "relay";
    }
    return "?";
}

const char* to_string(path_reason r) noexcept {
    switch (r) {
        case path_reason::none:
            return "none";
        case path_reason::waiting:
            return "waiting";
        case path_reason::lan:
            return "lan";
        case path_reason::public_address:
            return "public";
        case path_reason::learned:
            return "learned";
        case path_reason::kept:
            return "kept";
        case path_reason::no_direct_answer:
            return "no_direct_answer";
        case path_reason::relayed_before_restart:
            return "relayed_before_restart";
        case path_reason::symmetric_nat_here:
            return "symmetric_nat_here";
    }
    return "none";
}

const char* to_string(relay_role_cause c) noexcept {
    switch (c) {
        case relay_role_cause::none:
            return "none";
        case relay_role_cause::not_listed:
            return "not_listed";
        case relay_role_cause::no_public_address:
            return "no_public_address";
        case relay_role_cause::listed:
            return "listed";
        case relay_role_cause::offering:
            return "offering";
        case relay_role_cause::rechecking:
            return "rechecking";
        case relay_role_cause::reachable:
            return "reachable";
        case relay_role_cause::partly_reachable:
            return "partly_reachable";
        case relay_role_cause::still_reachable:
            return "still_reachable";
        case relay_role_cause::no_helper:
            return "no_helper";
        case relay_role_cause::unreachable:
            return "unreachable";
        case relay_role_cause::restarted:
            return "restarted";
    }
    return "?";
}

const char* to_string(relay_role_state s) noexcept {
    switch (s) {
        case relay_role_state::none:
            return "none";
        case relay_role_state::verifying:
            return "verifying";
        case relay_role_state::active:
            return "active";
        case relay_role_state::refused:
            return "refused";
    }
    return "?";
}

const char* to_string(relay_origin o) noexcept {
    switch (o) {
        case relay_origin::configured:
            return "configured";
        case relay_origin::bootstrap:
            return "bootstrap";
        case relay_origin::discovered:
            return "discovered";
    }
    return "?";
}

const char* to_string(relay_state s) noexcept {
    switch (s) {
        case relay_state::refusing:
            return "refusing";
        case relay_state::unknown:
            return "unknown";
        case relay_state::up:
            return "up";
        case relay_state::down:
            return "down";
        case relay_state::self:
            return "self";
    }
    return "?";
}

}  // namespace mw::meshd
