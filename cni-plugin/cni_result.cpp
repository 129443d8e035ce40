#include "cni-plugin/cni_result.hpp"

#include "cni-plugin/cni_version.hpp"

namespace mw::cni {

using nlohmann::json;

json encode_result(const cni_result& r, const std::string& cni_version) {
    const bool has_ip_version = !version_at_least(cni_version, "1.0.0");
    const bool has_if_mtu = version_at_least(cni_version, "1.1.0");
    json out;
    out["cniVersion"] = cni_version;
    json ifs = json::array();
    for (const auto& i : r.interfaces) {
        json ji;
        ji["name"] = i.name;
        if (!i.mac.empty()) ji["mac"] = i.mac;
        if (!i.sandbox.empty()) ji["sandbox"] = i.sandbox;
        if (has_if_mtu && i.mtu) ji["mtu"] = *i.mtu;
        ifs.push_back(std::move(ji));
    }
    if (!ifs.empty()) out["interfaces"] = std::move(ifs);
    json ips = json::array();
    for (const auto& ip : r.ips) {
        json jp;
        if (has_ip_version) jp["version"] = ip.address.is_v4() ? "4" : "6";
        jp["address"] = ip.address.str();
        if (ip.gateway) jp["gateway"] = ip.gateway->str();
        if (ip.interface) jp["interface"] = *ip.interface;
        ips.push_back(std::move(jp));
    }
    if (!ips.empty()) out["ips"] = std::move(ips);
    json routes = json::array();
    for (const auto& rt : r.routes) {
        json jr;
        jr["dst"] = rt.dst.str();
        if (rt.gw) jr["gw"] = rt.gw->str();
        routes.push_back(std::move(jr));
    }
    if (!routes.empty()) out["routes"] = std::move(routes);
    out["dns"] = r.dns.is_object() ? r.dns : json::object();
    return out;
}

namespace {

error bad(const std::string& field, const std::string& why) {
    return error(errc::parse_error, "result field " + field + ": " + why);
}

}  // namespace

result<cni_result> decode_result(const json& j) {
    if (!j.is_object()) return bad("(top)", "not a JSON object");
    cni_result r;
    if (auto it = j.find("interfaces"); it != j.end() && !it->is_null()) {
        if (!it->is_array()) return bad("interfaces", "not an array");
        for (size_t i = 0; i < it->size(); ++i) {
            const json& ji = (*it)[i];
            std::string f = "interfaces[" + std::to_string(i) + "]";
            if (!ji.is_object()) return bad(f, "not an object");
            result_interface ri;
            auto str = [&](const char* k, std::string& dst) -> bool {
                auto v = ji.find(k);
                if (v == ji.end() || v->is_null()) return true;
                if (!v->is_string()) return false;
                dst = v->get<std::string>();
                return true;
            };
            if (!str("name", ri.name) || ri.name.empty())
                return bad(f + ".name", "missing or not a string");
            if (!str("mac", ri.mac)) return bad(f + ".mac", "not a string");
            if (!str("sandbox", ri.sandbox)) return bad(f + ".sandbox", "not a string");
            if (auto m = ji.find("mtu"); m != ji.end() && m->is_number_unsigned())
                ri.mtu = m->get<unsigned>();
            r.interfaces.push_back(std::move(ri));
        }
    }
    if (auto it = j.find("ips"); it != j.end() && !it->is_null()) {
        if (!it->is_array()) return bad("ips", "not an array");
        for (size_t i = 0; i < it->size(); ++i) {
            const json& jp = (*it)[i];
            std::string f = "ips[" + std::to_string(i) + "]";
            if (!jp.is_object()) return bad(f, "not an object");
            auto a = jp.find("address");
            if (a == jp.end() || !a->is_string())
                return bad(f + ".address", "missing or not a string");
            auto p = ip_prefix::parse(a->get<std::string>());
            if (!p) return bad(f + ".address", p.err().message);
            result_ip ri{*p, std::nullopt, std::nullopt};
            if (auto g = jp.find("gateway"); g != jp.end() && !g->is_null()) {
                if (!g->is_string()) return bad(f + ".gateway", "not a string");
                auto gw = ip_address::parse(g->get<std::string>());
                if (!gw) return bad(f + ".gateway", gw.err().message);
                ri.gateway = *gw;
            }
            if (auto n = jp.find("interface"); n != jp.end() && !n->is_null()) {
                if (!n->is_number_integer() || n->get<long long>() < 0 ||
                    n->get<long long>() >= static_cast<long long>(r.interfaces.size())) {
                    return bad(f + ".interface", "not an index into interfaces");
                }
                ri.interface = n->get<int>();
            }
            r.ips.push_back(ri);
        }
    }
    if (auto it = j.find("routes"); it != j.end() && !it->is_null()) {
        if (!it->is_array()) return bad("routes", "not an array");
        for (size_t i = 0; i < it->size(); ++i) {
            const json& jr = (*it)[i];
            std::string f = "routes[" + std::to_string(i) + "]";
            if (!jr.is_object()) return bad(f, "not an object");
            auto d = jr.find("dst");
            if (d == jr.end() || !d->is_string()) return bad(f + ".dst", "missing or not a string");
            auto dst = ip_prefix::parse(d->get<std::string>());
            if (!dst) return bad(f + ".dst", dst.err().message);
            result_route rr{*dst, std::nullopt};
            if (auto g = jr.find("gw"); g != jr.end() && !g->is_null()) {
                if (!g->is_string()) return bad(f + ".gw", "not a string");
                auto gw = ip_address::parse(g->get<std::string>());
                if (!gw) return bad(f + ".gw", gw.err().message);
                rr.gw = *gw;
            }
            r.routes.push_back(rr);
        }
    }
    if (auto it = j.find("dns"); it != j.end() && !it->is_null()) {
        if (!it->is_object()) return bad("dns", "not an object");
        r.dns = *it;
    }
    return r;
}

}  // namespace mw::cni
