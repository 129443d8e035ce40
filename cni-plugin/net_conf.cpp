#include "cni-plugin/net_conf.hpp"

#include <fstream>
#include <sstream>

#include "cni-plugin/cni_env.hpp"
#include "cni-plugin/cni_version.hpp"

namespace mw::cni {

using nlohmann::json;

namespace {

cni_error invalid(std::string msg) {
    return cni_error{invalid_config, std::move(msg), {}};
}

std::optional<json> parse_json(const std::string& raw, std::string* why) {
    json j = json::parse(raw, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) {
        // Re-parse with exceptions (startup config parsing, the one place they are allowed) only
        // to obtain the position of the error for the message.
        try {
            json again = json::parse(raw);
            (void)again;
        } catch (const json::exception& e) {  // parse_error, or out_of_range for 1e999999
            *why = e.what();
        }
        return std::nullopt;
    }
    return j;
}

bool valid_network_name(const std::string& n) {
    // Also used as a directory name under dataDir: no path separators, no "..".
    return valid_container_id(n) && n != "." && n != "..";
}

}  // namespace

std::optional<std::string> peek_version(const std::string& raw) {
    json j = json::parse(raw, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return std::nullopt;
    auto it = j.find("cniVersion");
    if (it == j.end() || !it->is_string()) return std::nullopt;
    return it->get<std::string>();
}

result<std::vector<ip_prefix>> parse_pod_cidrs(const json& j, const std::string& where) {
    if (!j.is_array())
        return error(errc::invalid_argument, where + " must be an array of CIDR strings");
    if (j.empty()) return error(errc::invalid_argument, where + " is empty");
    std::vector<ip_prefix> out;
    for (size_t i = 0; i < j.size(); ++i) {
        std::string f = where + "[" + std::to_string(i) + "]";
        if (!j[i].is_string()) return error(errc::invalid_argument, f + " must be a string");
        auto p = ip_prefix::parse(j[i].get<std::string>());
        if (!p) return error(errc::invalid_argument, f + ": " + p.err().message);
        if (!(p->network() == *p)) {
            return error(errc::invalid_argument, f + " \"" + p->str() +
                                                     "\" has host bits set (did you mean " +
                                                     p->network().str() + "?)");
        }
        int max_len = p->is_v4() ? 30 : 126;
        if (p->length() > max_len) {
            return error(errc::invalid_argument, f + " \"" + p->str() +
                                                     "\" is too small to hold pods (at most /" +
                                                     std::to_string(max_len) + ")");
        }
        for (const auto& q : out) {
            if (q.contains(p->address()) || p->contains(q.address())) {
                return error(errc::invalid_argument,
                             f + " \"" + p->str() + "\" overlaps " + q.str());
            }
        }
        out.push_back(*p);
    }
    return out;
}

result<std::vector<ip_prefix>> read_node_file(const std::string& path) {
    std::ifstream in(path);
    if (!in) {
        return error(errno == ENOENT ? make_error_code(errc::not_found)
                                     : std::error_code(errno, std::system_category()),
                     "cannot read node file " + path);
    }
    std::stringstream ss;
    ss << in.rdbuf();
    json j = json::parse(ss.str(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
        return error(errc::parse_error, "node file " + path + " is not a JSON object");
    }
    auto it = j.find("podCIDRs");
    if (it == j.end()) return error(errc::parse_error, "node file " + path + " has no podCIDRs");
    auto r = parse_pod_cidrs(*it, path + ": podCIDRs");
    if (!r) return error(errc::parse_error, r.err().message);
    return r;
}

std::optional<unsigned> read_node_file_mtu(const std::string& path) {
    std::ifstream in(path);
    if (!in) return std::nullopt;
    std::stringstream ss;
    ss << in.rdbuf();
    json j = json::parse(ss.str(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) return std::nullopt;
    auto it = j.find("mtu");
    if (it == j.end() || !it->is_number_unsigned()) return std::nullopt;
    auto v = it->get<uint64_t>();
    if (v < 576 || v > 65535) return std::nullopt;
    return static_cast<unsigned>(v);
}

conf_result parse_net_conf(const std::string& raw) {
    auto fail = [](cni_error e) { return conf_result{std::nullopt, std::move(e)}; };
    if (raw.empty()) return fail({decode_failure, "no network configuration on stdin", {}});
    std::string why;
    auto parsed = parse_json(raw, &why);
    if (!parsed) return fail({decode_failure, "network configuration is not valid JSON", why});
    const json& j = *parsed;
    if (!j.is_object())
        return fail({decode_failure, "network configuration must be a JSON object", {}});

    net_conf c;
    auto v = j.find("cniVersion");
    if (v == j.end() || !v->is_string()) {
        return fail({incompatible_version, "cniVersion is missing from the network configuration",
                     "supported versions: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"});
    }
    c.cni_version = v->get<std::string>();
    if (!is_supported_version(c.cni_version)) {
        return fail({incompatible_version, "cniVersion \"" + c.cni_version + "\" is not supported",
                     "supported versions: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"});
    }

    auto get_string = [&](const char* key, std::string& dst,
                          bool required) -> std::optional<cni_error> {
        auto it = j.find(key);
        if (it == j.end() || it->is_null()) {
            if (required) return invalid(std::string("\"") + key + "\" is required");
            return std::nullopt;
        }
        if (!it->is_string()) return invalid(std::string("\"") + key + "\" must be a string");
        dst = it->get<std::string>();
        return std::nullopt;
    };
    if (auto e = get_string("name", c.name, true)) return fail(*e);
    if (!valid_network_name(c.name)) {
        return fail(invalid("\"name\" \"" + c.name +
                            "\" is invalid: use letters, digits, '_', '.' and '-' (it names a "
                            "directory under dataDir)"));
    }
    if (auto e = get_string("type", c.type, false)) return fail(*e);
    if (auto e = get_string("dataDir", c.data_dir, false)) return fail(*e);
    if (c.data_dir.empty() || c.data_dir[0] != '/') {
        return fail(invalid("\"dataDir\" must be an absolute path, got \"" + c.data_dir + "\""));
    }
    if (auto e = get_string("nodeFile", c.node_file, false)) return fail(*e);
    if (auto e = get_string("logFile", c.log_file, false)) return fail(*e);
    if (auto e = get_string("logLevel", c.log_level, false)) return fail(*e);

    if (auto it = j.find("mtu"); it != j.end() && !it->is_null()) {
        if (!it->is_number_integer() || it->get<long long>() < 576 ||
            it->get<long long>() > 65535) {
            return fail(
                invalid("\"mtu\" must be an integer between 576 and 65535, got " + it->dump()));
        }
        c.mtu = it->get<unsigned>();
    }
    if (auto it = j.find("podCIDRs"); it != j.end() && !it->is_null()) {
        auto r = parse_pod_cidrs(*it, "podCIDRs");
        if (!r) return fail(invalid(r.err().message));
        c.pod_cidrs = std::move(*r);
    }
    if (auto it = j.find("ipam");
        it != j.end() && !it->is_null() && !(it->is_object() && it->empty())) {
        if (!it->is_object()) return fail(invalid("\"ipam\" must be an object"));
        auto t = it->find("type");
        if (t == it->end() || !t->is_string() || t->get<std::string>().empty()) {
            return fail(
                invalid("\"ipam.type\" is required when \"ipam\" is given (e.g. \"host-local\")"));
        }
        c.ipam_type = t->get<std::string>();
        if (c.ipam_type.find('/') != std::string::npos) {
            return fail(
                invalid("\"ipam.type\" \"" + c.ipam_type + "\" must be a plugin name, not a path"));
        }
        if (!c.pod_cidrs.empty()) {
            return fail(
                invalid("both \"podCIDRs\" and \"ipam\" are set: give podCIDRs for meshwire's "
                        "built-in IPAM, or ipam to delegate, not both"));
        }
        c.ipam = *it;
    }
    if (auto it = j.find("dns"); it != j.end() && !it->is_null()) {
        if (!it->is_object()) return fail(invalid("\"dns\" must be an object"));
        c.dns = *it;
    }
    if (auto it = j.find("prevResult"); it != j.end() && !it->is_null()) {
        auto pr = decode_result(*it);
        if (!pr) return fail(invalid("\"prevResult\" is malformed: " + pr.err().message));
        c.prev_result = std::move(*pr);
    }
    if (auto it = j.find("cni.dev/valid-attachments"); it != j.end() && !it->is_null()) {
        if (!it->is_array()) return fail(invalid("\"cni.dev/valid-attachments\" must be an array"));
        std::vector<attachment> atts;
        for (const auto& a : *it) {
            auto id = a.is_object() ? a.find("containerID") : a.end();
            auto ifn = a.is_object() ? a.find("ifname") : a.end();
            if (!a.is_object() || id == a.end() || !id->is_string() || ifn == a.end() ||
                !ifn->is_string()) {
                return fail(invalid(
                    "\"cni.dev/valid-attachments\" entries need string containerID and ifname"));
            }
            atts.push_back({id->get<std::string>(), ifn->get<std::string>()});
        }
        c.valid_attachments = std::move(atts);
    }
    return {std::move(c), {}};
}

}  // namespace mw::cni
