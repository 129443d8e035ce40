#include "cni-plugin/plugin.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>

#include "cni-plugin/cni_version.hpp"
#include "cni-plugin/ipam_delegate.hpp"
#include "cni-plugin/ipam_store.hpp"
#include "cni-plugin/net_conf.hpp"
#include "cni-plugin/pod_wiring.hpp"
#include "common/log.hpp"

namespace mw::cni {

namespace {

using nlohmann::json;

// Carries a CNI error out of the command handlers.
struct outcome {
    bool ok = true;
    cni_error err;
    std::string out;  // success output
};

outcome fail(int code, std::string msg, std::string details = {}) {
    return outcome{false, cni_error{code, std::move(msg), std::move(details)}, {}};
}

outcome fail(int code, const error& e) {
    return fail(code, e.message, e.code.message());
}

// Opening CNI_NETNS: missing → 3 (container unknown), not a network namespace → 4.
outcome netns_error(const std::string& path, const error& e) {
    if (e.is_errno(ENOENT)) {
        return fail(container_unknown, "network namespace " + path + " does not exist", e.message);
    }
    if (e.is(errc::invalid_argument)) {
        return fail(invalid_env, "CNI_NETNS " + path + " is not a network namespace", e.message);
    }
    return fail(io_failure, "cannot open network namespace " + path, e.message);
}

bool dir_exists(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

class command_runner {
public:
    command_runner(const cni_env& env, const net_conf& conf, const std::string& raw)
        : env_(env), conf_(conf), raw_(raw) {}

    outcome add();
    outcome del();
    outcome check();
    outcome status();
    outcome gc();

private:
    struct pod_cidrs {
        std::vector<ip_prefix> cidrs;
        std::optional<outcome> failure;
    };
    pod_cidrs resolve_pod_cidrs() const;
    attachment who() const { return {env_.container_id, env_.ifname}; }

    const cni_env& env_;
    const net_conf& conf_;
    const std::string& raw_;
};

command_runner::pod_cidrs command_runner::resolve_pod_cidrs() const {
    if (!conf_.pod_cidrs.empty()) return {conf_.pod_cidrs, std::nullopt};
    auto r = read_node_file(conf_.node_file);
    if (r) return {std::move(*r), std::nullopt};
    if (r.err().is(errc::not_found)) {
        return {{},
                fail(try_again_later,
                     "pod CIDRs unknown: the config has no \"podCIDRs\" and " + conf_.node_file +
                         " does not exist yet (meshd writes it when it starts); set podCIDRs or "
                         "start meshd")};
    }
    if (r.err().is(errc::parse_error)) return {{}, fail(invalid_config, r.err().message)};
    return {{}, fail(io_failure, r.err())};
}

outcome command_runner::add() {
    if (conf_.prev_result) {
        return fail(
            unsupported_field,
            "\"prevResult\" is set: meshwire creates the pod interface and must be the first "
            "plugin of the conflist",
            "prevResult");
    }
    auto pod_ns = netns::open(env_.netns);
    if (!pod_ns) return netns_error(env_.netns, pod_ns.err());
    auto host_nl = rtnl::open();
    if (!host_nl) return fail(internal, host_nl.err());

    // 1. Addresses.
    cni_result ipam_res;
    std::vector<ip_address> created;  // built-in allocations made by this call (for rollback)
    if (conf_.ipam) {
        auto r = delegate_add(conf_.ipam_type, env_.path, raw_);
        if (!r) return fail(ipam_delegate_failed, r.err());
        ipam_res = std::move(*r);
    } else {
        auto cidrs = resolve_pod_cidrs();
        if (cidrs.failure) return *cidrs.failure;
        auto store = ipam_store::open_locked(conf_.data_dir, conf_.name);
        if (!store) return fail(io_failure, store.err());
        std::string exhausted;
        for (int family : {AF_INET, AF_INET6}) {
            bool wanted = false, got = false;
            for (size_t i = 0; i < cidrs.cidrs.size() && !got; ++i) {
                const auto& range = cidrs.cidrs[i];
                if (range.family() != family) continue;
                wanted = true;
                bool fresh = false;
                auto ip = store->allocate(range, static_cast<int>(i), who(), &fresh);
                if (ip) {
                    got = true;
                    if (fresh) created.push_back(*ip);
                    ipam_res.ips.push_back({ip_prefix(*ip, ip->bits()), gateway_for(family), 1});
                } else if (ip.err().is(errc::exhausted)) {
                    exhausted += (exhausted.empty() ? "" : "; ") + ip.err().message;
                } else {
                    for (const auto& c : created) (void)store->release(c);
                    return fail(io_failure, ip.err());
                }
            }
            if (wanted && !got) {
                for (const auto& c : created) (void)store->release(c);
                return fail(ipam_exhausted, "no free address for the pod: " + exhausted);
            }
        }
    }  // the IPAM lock is released here: wiring runs concurrently with other ADDs

    auto release_ipam = [&] {
        if (conf_.ipam) {
            if (auto st = delegate_simple(conf_.ipam_type, env_.path, "DEL", raw_); !st) {
                log::error("rollback: delegated IPAM DEL failed",
                           {{"container_id", env_.container_id}, {"error", st.err().message}});
            }
        } else if (!created.empty()) {
            if (auto store = ipam_store::open_locked(conf_.data_dir, conf_.name)) {
                for (const auto& c : created) (void)store->release(c);
            }
        }
    };

    // 2. Wiring.
    pod_wiring wiring(*host_nl);
    wiring_spec spec{conf_.name, env_.container_id, env_.ifname, conf_.mtu, {}};
    // meshd's interface MTU first: pod and WireGuard interface must agree (a pod MTU above the
    // interface's makes the host, not the pod, refuse full-size packets).
    if (!spec.mtu) spec.mtu = read_node_file_mtu(conf_.node_file).value_or(0);
    if (!spec.mtu) spec.mtu = wiring.default_mtu();
    for (const auto& ip : ipam_res.ips) spec.addresses.push_back(ip.address.address());
    auto wired = wiring.add(*pod_ns, spec);
    if (!wired) {
        release_ipam();
        int code = wired.err().is(errc::already_exists) ? interface_exists : internal;
        return fail(code, wired.err());
    }

    // 3. Result.
    cni_result res;
    res.interfaces.push_back({wired->host_veth, wired->host_mac, "", spec.mtu});
    res.interfaces.push_back({env_.ifname, wired->pod_mac, env_.netns, spec.mtu});
    std::set<int> families;
    for (const auto& ip : ipam_res.ips) {
        int fam = ip.address.family();
        // The pod holds its address as a host route; the gateway is always our link-local one.
        res.ips.push_back(
            {ip_prefix(ip.address.address(), ip.address.address().bits()), gateway_for(fam), 1});
        families.insert(fam);
    }
    for (int fam : families) {
        res.routes.push_back({ip_prefix(ip_address::from_u128(fam, 0), 0), gateway_for(fam)});
    }
    res.dns = conf_.dns.empty() ? ipam_res.dns : conf_.dns;

    std::string ips;
    for (const auto& ip : res.ips) ips += (ips.empty() ? "" : ",") + ip.address.str();
    log::info("pod wired", {{"container_id", env_.container_id},
                            {"ifname", env_.ifname},
                            {"netns", env_.netns},
                            {"veth", wired->host_veth},
                            {"ips", ips},
                            {"mtu", std::to_string(spec.mtu)}});
    return outcome{true, {}, encode_result(res, conf_.cni_version).dump()};
}

outcome command_runner::del() {
    auto host_nl = rtnl::open();
    if (!host_nl) return fail(internal, host_nl.err());
    pod_wiring wiring(*host_nl);
    if (auto st = wiring.del(env_.container_id, env_.ifname); !st) return fail(internal, st.err());
    if (conf_.ipam) {
        if (auto st = delegate_simple(conf_.ipam_type, env_.path, "DEL", raw_); !st) {
            return fail(ipam_delegate_failed, st.err());
        }
    } else if (dir_exists(conf_.data_dir + "/" + conf_.name)) {
        auto store = ipam_store::open_locked(conf_.data_dir, conf_.name);
        if (!store) return fail(io_failure, store.err());
        auto n = store->release_all(who());
        if (!n) return fail(io_failure, n.err());
        log::info("pod unwired", {{"container_id", env_.container_id},
                                  {"ifname", env_.ifname},
                                  {"released", std::to_string(*n)}});
    }
    return outcome{};
}

outcome command_runner::check() {
    if (!conf_.prev_result)
        return fail(invalid_config, "CHECK needs \"prevResult\" in the configuration");
    auto pod_ns = netns::open(env_.netns);
    if (!pod_ns) return netns_error(env_.netns, pod_ns.err());
    auto host_nl = rtnl::open();
    if (!host_nl) return fail(internal, host_nl.err());
    pod_wiring wiring(*host_nl);
    wiring_spec spec{conf_.name, env_.container_id, env_.ifname, conf_.mtu, {}};
    if (auto st = wiring.check(*pod_ns, spec, *conf_.prev_result); !st) {
        return fail(st.err().is(errc::state_mismatch) ? check_failed : internal, st.err());
    }
    if (conf_.ipam) {
        if (auto st = delegate_simple(conf_.ipam_type, env_.path, "CHECK", raw_); !st) {
            return fail(ipam_delegate_failed, st.err());
        }
        return outcome{};
    }
    auto store = ipam_store::open_locked(conf_.data_dir, conf_.name);
    if (!store) return fail(io_failure, store.err());
    auto held = store->find(who());
    if (!held) return fail(io_failure, held.err());
    for (const auto& ip : conf_.prev_result->ips) {
        bool found = false;
        for (const auto& h : *held) found |= h == ip.address.address();
        if (!found) {
            return fail(check_failed, "address " + ip.address.address().str() +
                                          " is not allocated to this container in " + store->dir());
        }
    }
    return outcome{};
}

outcome command_runner::status() {
    if (conf_.ipam) {
        if (auto st = delegate_simple(conf_.ipam_type, env_.path, "STATUS", raw_); !st) {
            return fail(plugin_not_available, st.err());
        }
        return outcome{};
    }
    auto cidrs = resolve_pod_cidrs();
    if (cidrs.failure) return fail(plugin_not_available, cidrs.failure->err.msg);
    if (auto st = check_store_writable(conf_.data_dir, conf_.name); !st) {
        return fail(plugin_not_available, "IPAM store is not writable: " + st.err().message);
    }
    return outcome{};
}

outcome command_runner::gc() {
    if (!conf_.valid_attachments) {
        return fail(invalid_config, "GC needs \"cni.dev/valid-attachments\" in the configuration");
    }
    std::set<attachment> valid(conf_.valid_attachments->begin(), conf_.valid_attachments->end());
    auto host_nl = rtnl::open();
    if (!host_nl) return fail(internal, host_nl.err());
    auto links = host_nl->list_links();
    if (!links) return fail(internal, links.err());
    int removed_links = 0, released = 0;
    std::set<std::string> valid_names;
    for (const auto& v : valid) valid_names.insert(host_veth_name(v.container_id, v.ifname));
    for (const auto& l : *links) {
        // A veth without alias is an ADD killed before it set the alias (GC, like the IPAM sweep
        // below, assumes no ADD for an attachment outside the valid list is in flight).
        if (looks_half_created_veth(l) && !valid_names.count(l.name)) {
            if (auto st = host_nl->delete_link(l.index); !st && !st.err().is_errno(ENODEV)) {
                return fail(internal, st.err());
            }
            log::info("GC removed a half-created veth", {{"veth", l.name}});
            ++removed_links;
            continue;
        }
        auto p = parse_alias(l.alias);
        if (!p || p->network != conf_.name || valid.count({p->container_id, p->ifname})) continue;
        if (auto st = host_nl->delete_link(l.index); !st && !st.err().is_errno(ENODEV)) {
            return fail(internal, st.err());
        }
        log::info("GC removed stale veth", {{"veth", l.name}, {"container_id", p->container_id}});
        ++removed_links;
    }
    if (conf_.ipam) {
        if (auto st = delegate_simple(conf_.ipam_type, env_.path, "GC", raw_); !st) {
            return fail(ipam_delegate_failed, st.err());
        }
    } else if (dir_exists(conf_.data_dir + "/" + conf_.name)) {
        auto store = ipam_store::open_locked(conf_.data_dir, conf_.name);
        if (!store) return fail(io_failure, store.err());
        auto all = store->list();
        if (!all) return fail(io_failure, all.err());
        for (const auto& [ip, owner] : *all) {
            bool keep = false;
            for (const auto& v : valid) {
                keep |= v.container_id == owner.container_id &&
                        (owner.ifname.empty() || v.ifname == owner.ifname);
            }
            if (keep) continue;
            if (auto st = store->release(ip); !st) return fail(io_failure, st.err());
            log::info("GC released address",
                      {{"ip", ip.str()}, {"container_id", owner.container_id}});
            ++released;
        }
    }
    log::info("GC done", {{"removed_links", std::to_string(removed_links)},
                          {"released", std::to_string(released)}});
    return outcome{};
}

// VmHWM of this process (the plugin's peak resident set), for the debug log and the benchmark.
long peak_rss_kb() {
    FILE* f = std::fopen("/proc/self/status", "re");
    if (!f) return -1;
    char line[256];
    long kb = -1;
    while (std::fgets(line, sizeof line, f)) {
        // "VmHWM:    1234 kB". strtol, not sscanf: a number that does not convert is no value.
        if (std::strncmp(line, "VmHWM:", 6) != 0) continue;
        char* end = nullptr;
        errno = 0;
        const long v = std::strtol(line + 6, &end, 10);
        if (end != line + 6 && errno == 0) {
            kb = v;
            break;
        }
    }
    std::fclose(f);
    return kb;
}

const char* command_name(command c) {
    switch (c) {
        case command::add:
            return "ADD";
        case command::del:
            return "DEL";
        case command::check:
            return "CHECK";
        case command::version:
            return "VERSION";
        case command::status:
            return "STATUS";
        case command::gc:
            return "GC";
    }
    return "?";
}

}  // namespace

invocation_output run_invocation(const env_lookup& get, const std::string& stdin_raw) {
    auto requested = peek_version(stdin_raw);
    std::string reply_version =
        requested && is_supported_version(*requested) ? *requested : std::string(k_latest_version);
    auto error_out = [&](const cni_error& e) {
        log::error("command failed", {{"code", std::to_string(e.code)}, {"error", e.msg}});
        return invocation_output{1, e.to_json(reply_version).dump()};
    };

    auto parsed_env = parse_env(get);
    if (!parsed_env.env) return error_out(parsed_env.err);
    const cni_env& env = *parsed_env.env;

    if (env.cmd == command::version) {
        json j;
        j["cniVersion"] = reply_version;
        j["supportedVersions"] = json::array();
        for (auto v : k_supported_versions) j["supportedVersions"].push_back(std::string(v));
        return {0, j.dump()};
    }

    auto parsed = parse_net_conf(stdin_raw);
    if (!parsed.conf) return error_out(parsed.err);
    const net_conf& conf = *parsed.conf;

    if (!conf.log_file.empty() && !log::set_file(conf.log_file)) {
        log::warn("cannot open logFile; logging to stderr", {{"path", conf.log_file}});
    }
    if (!conf.log_level.empty()) {
        log::level lvl;
        if (!log::parse_level(conf.log_level, lvl)) {
            return error_out(
                {invalid_config, "\"logLevel\" must be debug, info, warn, error or off", {}});
        }
        log::set_level(lvl);
    }

    if (env.cmd == command::check && !version_at_least(conf.cni_version, "0.4.0")) {
        return error_out(
            {incompatible_version,
             "CHECK is not defined for cniVersion " + conf.cni_version + " (needs 0.4.0 or later)",
             {}});
    }
    if ((env.cmd == command::status || env.cmd == command::gc) &&
        !version_at_least(conf.cni_version, "1.1.0")) {
        return error_out({incompatible_version,
                          std::string(command_name(env.cmd)) + " is not defined for cniVersion " +
                              conf.cni_version + " (needs 1.1.0)",
                          {}});
    }

    auto t0 = std::chrono::steady_clock::now();
    command_runner runner(env, conf, stdin_raw);
    outcome o;
    switch (env.cmd) {
        case command::add:
            o = runner.add();
            break;
        case command::del:
            o = runner.del();
            break;
        case command::check:
            o = runner.check();
            break;
        case command::status:
            o = runner.status();
            break;
        case command::gc:
            o = runner.gc();
            break;
        case command::version:
            break;
    }
    if (log::current_level() <= log::level::debug) {
        auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::steady_clock::now() - t0)
                      .count();
        log::debug("command finished", {{"command", command_name(env.cmd)},
                                        {"container_id", env.container_id},
                                        {"ok", o.ok ? "true" : "false"},
                                        {"duration_us", std::to_string(us)},
                                        {"peak_rss_kb", std::to_string(peak_rss_kb())}});
    }
    if (!o.ok) return error_out(o.err);
    return {0, o.out};
}

}  // namespace mw::cni
