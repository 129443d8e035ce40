#include "meshd/transport.hpp"

#include <sys/socket.h>

#include <sodium.h>

#include <algorithm>

#include "common/log.hpp"
#include "meshd/host_addresses.hpp"
#include "meshd/io/udp_socket.hpp"

namespace mw::meshd {

result<relay_bind_state> transport::forwarder_binder::bind(uint64_t session_id, const node_id& from,
                                                           const node_id& to,
                                                           const wg_endpoint& observed,
                                                           uint16_t via) {
    if (!fwd) return error(errc::unsupported, "the relay forwarder is not running");
    return fwd->with_table([&](relay_session_table& t, uint64_t now) {
        return t.bind(session_id, from, to, relay_addr::from_endpoint(observed), now, via);
    });
}

void transport::forwarder_binder::heard(const node_id& node, const wg_endpoint& observed) {
    if (!fwd) return;
    fwd->with_table([&](relay_session_table& t, uint64_t now) {
        t.heard(node, relay_addr::from_endpoint(observed), now);
    });
}

transport::transport(const meshd_config& cfg, control_fn on_control)
    : cfg_(cfg), on_control_(std::move(on_control)) {}

transport::~transport() {
    stop();
}

status transport::start_forwarder() {
    const relay_node* self = cfg_.self_relay();
    relay_forwarder_config fc;
    // One socket per advertised address when they are all ours; an address that is not (the
    // public address of a NAT that forwards the port to us) needs the wildcard, which then
    // serves everything (the kernel picks reply sources; the NAT maps them back).
    std::vector<ip_address> local = host_addresses();
    // Not listed (relayNodes empty, the role taken at our own public address): the wildcard, as
    // our other addresses must keep answering too.
    bool all_local = self != nullptr;
    if (self) {
        for (const auto& a : self->advertise_address) {
            all_local &= std::find(local.begin(), local.end(), a) != local.end();
        }
    }
    if (all_local) {
        for (const auto& a : self->advertise_address) fc.listen.push_back({a, cfg_.listen_port});
    } else {
        fc.listen.push_back({ip_address::parse("::").value(), cfg_.listen_port});
    }
    fc.limits.max_sessions = cfg_.relay_max_sessions;
    fc.limits.max_sessions_per_node = cfg_.relay_max_sessions_per_node;
    // Session IDs come from the nodes: a keyed index, so nobody can pick IDs that collide.
    fc.limits.hash_seed = uint64_t(randombytes_random()) << 32 | randombytes_random();
    fc.on_control = [this](std::span<const uint8_t> d, const wg_endpoint& from, uint16_t sock) {
        on_control_(d, from, 0, sock);
    };
    auto f = relay_forwarder::start(std::move(fc));
    if (!f) {
        return error(f.err().code, "cannot start the relay service on port " +
                                       std::to_string(cfg_.listen_port) + ": " + f.err().message);
    }
    forwarder_ = std::move(*f);
    binder_.fwd = forwarder_.get();
    std::string eps;
    for (const auto& e : forwarder_->local_endpoints()) eps += (eps.empty() ? "" : ",") + e.str();
    log::info("relay forwarder listening", {{"relay", cfg_.node_name}, {"endpoint", eps}});
    return {};
}

status transport::start_proxy() {
    relay_proxy_config pc;
    pc.uplink = wg_endpoint{ip_address::parse("::").value(), cfg_.listen_port};
    pc.on_control = [this](std::span<const uint8_t> d, const wg_endpoint& from, uint64_t sid) {
        on_control_(d, from, sid, 0);
    };
    pc.on_wake = on_wake_;
    auto p = relay_proxy::start(std::move(pc));
    if (!p) {
        return error(p.err().code, "cannot open the control socket on port " +
                                       std::to_string(cfg_.listen_port) + ": " + p.err().message);
    }
    proxy_ = std::move(*p);
    log::info("control socket listening", {{"endpoint", proxy_->uplink_endpoint().str()}});
    return {};
}

result<bool> transport::sync(relay_role_state role, const std::function<void()>& proxy_gone) {
    bool want_forwarder = role == relay_role_state::active;
    if (want_forwarder && !forwarder_) {
        if (proxy_) {
            proxy_->stop();
            proxy_.reset();
            proxy_gone();
        }
        if (auto s = start_forwarder(); !s) {
            log::error("cannot take the relay role", {{"error", s.err().message}});
            // Keep the node reachable as a node. The proxy is new: relayed peers' sockets went
            // with the old one, so the data plane must be planned again (true).
            MW_TRY_STATUS(start_proxy());
            return true;
        }
        return true;  // relayed peers lost their proxy sockets
    }
    if (!want_forwarder && (forwarder_ || !proxy_)) {
        if (forwarder_) {
            forwarder_->stop();
            binder_.fwd = nullptr;
            forwarder_.reset();
        }
        MW_TRY_STATUS(start_proxy());
        return true;
    }
    return false;
}

void transport::send(const outgoing_datagram& o) {
    if (o.fresh_socket) return send_fresh(o);
    status s;
    if (o.session_id) {
        if (proxy_) s = proxy_->send_in_session(o.session_id, o.bytes);
    } else if (forwarder_) {
        s = forwarder_->send_control(o.bytes, o.to);
    } else if (proxy_) {
        s = proxy_->send_control(o.bytes, o.to);
    }
    if (!s && !s.err().is(errc::not_found)) {
        log::debug("control send failed", {{"endpoint", o.to.str()}, {"error", s.err().message}});
    }
}

void transport::send_fresh(const outgoing_datagram& o) {
    wg_endpoint any{ip_address::parse(o.to.address.is_v4() ? "0.0.0.0" : "::").value(), 0};
    auto fd = open_udp_socket(any, 1 << 16);
    if (!fd) return;
    sockaddr_storage ss;
    socklen_t len = o.to.to_sockaddr(ss);
    (void)::sendto(fd->get(), o.bytes.data(), o.bytes.size(), MSG_DONTWAIT,
                   reinterpret_cast<sockaddr*>(&ss), len);
}

void transport::stop() {
    if (forwarder_) forwarder_->stop();
    if (proxy_) proxy_->stop();
}

}  // namespace mw::meshd
