// The owner of the UDP listenPort. It follows the relay role: the relay forwarder while this node
// serves as a relay (RELAY_DATA hot path on its own thread, one socket per advertised address),
// the node's relay proxy otherwise (its uplink is the control socket, so a relay binds a session
// to the address control comes from). Switching closes one before opening the other. Both loop
// threads hand received control datagrams to `on_control`, which must copy and post them to the
// core's thread; everything else here is called on the core's thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>

#include "common/result.hpp"
#include "common/wireguard/wg_endpoint.hpp"
#include "meshd/core/node_core.hpp"
#include "meshd/io/relay_forwarder.hpp"
#include "meshd/io/relay_proxy.hpp"
#include "meshd/meshd_config.hpp"

namespace mw::meshd {

class transport {
public:
    // A control datagram: `session_id` non-zero when it came in-band through the proxy, `via` the
    // forwarder's socket tag. Called on a loop thread.
    using control_fn =
        std::function<void(std::span<const uint8_t> datagram, const wg_endpoint& from,
                           uint64_t session_id, uint16_t via)>;

    // `cfg` (listenPort, relayNodes) is read at each switch and must outlive this object.
    transport(const meshd_config& cfg, control_fn on_control);
    ~transport();
    transport(const transport&) = delete;
    transport& operator=(const transport&) = delete;

    // Opens the socket the role needs. `proxy_gone` is called after the proxy stopped (its peer
    // sockets are gone) and before the forwarder starts. Returns true when the data plane must be
    // planned again: the owner changed, or a failed forwarder start replaced the proxy.
    result<bool> sync(relay_role_state role, const std::function<void()>& proxy_gone);
    void send(const outgoing_datagram& o);
    // A dial-back probe: from a new ephemeral port, not the control socket.
    static void send_fresh(const outgoing_datagram& o);
    void stop();
    // The proxy's first data packet to a quiet peer (relay_proxy_config::on_wake), on its loop
    // thread. Set before the proxy starts.
    void set_on_wake(std::function<void(uint64_t session_id)> f) { on_wake_ = std::move(f); }

    relay_proxy* proxy() noexcept { return proxy_.get(); }
    relay_forwarder* forwarder() noexcept { return forwarder_.get(); }
    // The relay service's session table, for node_core's relay role.
    relay_binder* binder() noexcept { return &binder_; }

private:
    // The relay service's session table lives in the forwarder (under its lock).
    struct forwarder_binder : relay_binder {
        relay_forwarder* fwd = nullptr;
        result<relay_bind_state> bind(uint64_t session_id, const node_id& from, const node_id& to,
                                      const wg_endpoint& observed, uint16_t via) override;
        void heard(const node_id& node, const wg_endpoint& observed) override;
    };

    status start_forwarder();
    status start_proxy();

    const meshd_config& cfg_;
    control_fn on_control_;
    std::function<void(uint64_t)> on_wake_;
    forwarder_binder binder_;
    std::unique_ptr<relay_forwarder> forwarder_;
    std::unique_ptr<relay_proxy> proxy_;
};

}  // namespace mw::meshd
