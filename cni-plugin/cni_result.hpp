// The CNI result (interfaces, ips, routes, dns) and its JSON form for each spec version.
// 0.3.x/0.4.0 carry "version": "4"|"6" on each IP; 1.0.0 drops it; 1.1.0 adds interface "mtu".
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/ip_address.hpp"
#include "common/result.hpp"

namespace mw::cni {

struct result_interface {
    std::string name;
    std::string mac;
    std::string sandbox;  // empty for host-side interfaces
    std::optional<unsigned> mtu;
};

struct result_ip {
    ip_prefix address;
    std::optional<ip_address> gateway;
    std::optional<int> interface;  // index into interfaces
};

struct result_route {
    ip_prefix dst;
    std::optional<ip_address> gw;
};

struct cni_result {
    std::vector<result_interface> interfaces;
    std::vector<result_ip> ips;
    std::vector<result_route> routes;
    nlohmann::json dns = nlohmann::json::object();
};

nlohmann::json encode_result(const cni_result& r, const std::string& cni_version);

// Decodes a result of any supported version (prevResult, a delegated IPAM plugin's answer).
// Never throws; a malformed result is an errc::parse_error naming the bad field.
result<cni_result> decode_result(const nlohmann::json& j);

}  // namespace mw::cni
