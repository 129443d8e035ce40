#include "cni-plugin/cni_env.hpp"

#include <cctype>
#include <cstdlib>

namespace mw::cni {

env_lookup process_env() {
    return [](const char* name) -> std::optional<std::string> {
        const char* v = std::getenv(name);
        if (!v) return std::nullopt;
        return std::string(v);
    };
}

bool valid_container_id(const std::string& id) {
    if (id.empty() || !std::isalnum(static_cast<unsigned char>(id[0]))) return false;
    for (char c : id) {
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') {
            return false;
        }
    }
    return true;
}

bool valid_ifname(const std::string& name) {
    if (name.empty() || name.size() > 15 || name == "." || name == "..") return false;
    for (char c : name) {
        if (c == '/' || c == ':' || std::isspace(static_cast<unsigned char>(c)) || c == '\0') {
            return false;
        }
    }
    return true;
}

static std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    size_t start = 0;
    while (start <= s.size()) {
        size_t end = s.find(sep, start);
        if (end == std::string::npos) end = s.size();
        if (end > start) out.push_back(s.substr(start, end - start));
        start = end + 1;
    }
    return out;
}

env_result parse_env(const env_lookup& get) {
    auto fail = [](std::string msg) {
        return env_result{std::nullopt, cni_error{invalid_env, std::move(msg), {}}};
    };
    cni_env env;
    auto cmd = get("CNI_COMMAND");
    if (!cmd || cmd->empty())
        return fail("CNI_COMMAND is not set (expected ADD, DEL, CHECK, VERSION, STATUS or GC)");
    if (*cmd == "ADD")
        env.cmd = command::add;
    else if (*cmd == "DEL")
        env.cmd = command::del;
    else if (*cmd == "CHECK")
        env.cmd = command::check;
    else if (*cmd == "VERSION")
        env.cmd = command::version;
    else if (*cmd == "STATUS")
        env.cmd = command::status;
    else if (*cmd == "GC")
        env.cmd = command::gc;
    else
        return fail("unknown CNI_COMMAND \"" + *cmd +
                    "\" (expected ADD, DEL, CHECK, VERSION, STATUS or GC)");

    if (env.cmd == command::version) return {env, {}};

    bool per_container =
        env.cmd == command::add || env.cmd == command::del || env.cmd == command::check;
    if (per_container) {
        auto id = get("CNI_CONTAINERID");
        if (!id || id->empty()) return fail("CNI_CONTAINERID is not set");
        if (!valid_container_id(*id)) {
            return fail("CNI_CONTAINERID \"" + *id +
                        "\" is invalid: it must start with a letter or digit and contain only "
                        "letters, digits, '_', '.' and '-'");
        }
        env.container_id = *id;
        auto ifn = get("CNI_IFNAME");
        if (!ifn || ifn->empty()) return fail("CNI_IFNAME is not set");
        if (!valid_ifname(*ifn)) {
            return fail("CNI_IFNAME \"" + *ifn +
                        "\" is invalid: 1-15 characters, not '.' or '..', no '/', ':' or spaces");
        }
        env.ifname = *ifn;
        auto ns = get("CNI_NETNS");
        if (ns) env.netns = *ns;
        if (env.cmd != command::del && env.netns.empty()) {
            return fail(
                "CNI_NETNS is not set (ADD and CHECK need the container's network namespace path)");
        }
        auto path = get("CNI_PATH");
        if (!path || path->empty()) return fail("CNI_PATH is not set");
    }
    if (auto path = get("CNI_PATH")) env.path = split(*path, ':');

    if (auto args = get("CNI_ARGS")) {
        for (const auto& kv : split(*args, ';')) {
            auto eq = kv.find('=');
            if (eq == std::string::npos || eq == 0) {
                return fail("CNI_ARGS is malformed at \"" + kv +
                            "\" (expected K=V pairs separated by ';')");
            }
            env.args[kv.substr(0, eq)] = kv.substr(eq + 1);
        }
    }
    return {env, {}};
}

}  // namespace mw::cni
