// The node side of a relayed path (DESIGN §5): WireGuard talks to a local socket as if it were the
// peer; this class carries those packets to the relay and back.
//
// For each relayed peer B there is one local UDP socket on loopback (127.0.0.1 or ::1, ephemeral
// port); meshd sets B's WireGuard endpoint to it. Then
//   WG -> peer socket:   recvmmsg into buffers with relay_data_header_size bytes of headroom,
//                        write the RELAY_DATA header in place in front of the packet, sendmmsg
//                        (UDP GSO for same-size runs) to the relay from the uplink socket;
//   relay -> uplink:     recvmmsg; a RELAY_DATA frame from the session's relay address has its
//                        header skipped (the iovec starts after it) and is sent to the local
//                        WireGuard port from that peer's socket, so WireGuard sees it come from the
//                        endpoint it knows for B.
// The uplink is the node's control socket (UDP 51821): the relay binds a session to the address the
// RELAY_SESSION_REQUEST came from, so data must leave from that same socket. Control datagrams
// arriving on it go to `on_control` (copied by the callback, not here).
//
// In-band probes: the node core probes a relayed path end to end (DESIGN §7: liveness measured on
// the path data actually uses) by sending a probe frame as the payload of a RELAY_DATA frame of
// the session (send_in_session), so it takes exactly the data path through the relay. The frame
// is sealed with the pair's key and shaped like WireGuard transport data (probe_frame.hpp), so the
// relay cannot tell it from the WireGuard packets it carries. On receipt, a payload of probe shape
// whose receiver index is the peer's `probe_index` (add_peer) goes to `on_control` with the
// session id instead of to WireGuard: one size check and a 4-byte compare per frame, no crypto on
// this thread (the core opens it; a WireGuard frame that happens to carry that index, a 2^-32
// chance per WireGuard handshake, fails to open there and is counted). In a session this proxy
// does not know, any probe-shaped payload goes to the core, which finds the pair by the session
// and checks the source (it is how it learns the session the peer sends through). Old-style
// in-band probes (control datagrams, "MW...", from nodes before sealed probes) still go to the
// core as well, for rolling upgrades; no WireGuard packet starts with "MW".
//
// Failover is one call: retarget_peer() moves a peer to a new relay and session id and keeps its
// local socket, so WireGuard's endpoint for B never changes (make before break).
//
// Handshakes of a pair that was idle (issue 18: an idle relayed pair has no keepalive, so its
// session keys expire and its next packet starts with a handshake, possibly through a relay that
// died meanwhile). A handshake initiation (type 1, 148 bytes) wakes the pair like data, whichever
// way it goes (on_wake), so the core probes the relay at once and fails over. WireGuard -> relay:
// the last initiation to each peer is kept (bytes, time); when the peer is retarget_peer()ed
// within REKEY_TIMEOUT (5 s) of it and no handshake response (type 2) came back since, the copy
// goes again through the new session at once, instead of WireGuard's retry 5 s later (its
// timestamp is still the newest the peer saw if the original was lost; if not, the peer drops it
// as a replay). Relay -> WireGuard: the response WireGuard sends within REKEY_TIMEOUT of an
// initiation that came in on another session than the primary (a warm standby) goes back
// through that session: its relay just proved it carries the pair, the primary's may be dead.
// Data keeps using the primary.
//
// Packets WireGuard did not send (anything on loopback can reach a peer socket) and frames not
// from the session's relay are dropped and counted.
//
// Threading as in relay_forwarder: one loop thread; peers are added and removed from other threads
// under a mutex that the loop holds while it handles one batch (the peer sockets it uses must not
// close under it). Memory: batch × (headroom + buffer_size) plus max_peers fixed slots.
#pragma once

#include <sys/types.h>

#include <array>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "common/result.hpp"
#include "common/unique_fd.hpp"
#include "common/wireguard/wg_endpoint.hpp"
#include "meshd/core/fixed_u64_map.hpp"
#include "meshd/core/relay_addr.hpp"
#include "meshd/io/recv_batch.hpp"
#include "meshd/io/send_batch.hpp"

namespace mw::meshd {

struct relay_proxy_config {
    wg_endpoint uplink;  // the node's control/relay socket address, e.g. [::]:51821
    size_t batch = 64;
    size_t buffer_size = 2048;  // largest WireGuard packet / RELAY_DATA frame carried
    size_t max_peers = 1024;
    // Control datagrams from the uplink, called on the loop thread (copy what you keep, return
    // quickly). `session_id` is 0 for a plain control datagram sent to the uplink, and the
    // session's id for one that came in-band inside a RELAY_DATA frame (already checked to come
    // from that session's relay; `from` is then the relay's address).
    std::function<void(std::span<const uint8_t> datagram, const wg_endpoint& from,
                       uint64_t session_id)>
        on_control;
    // WireGuard sent data (a transport packet larger than a keepalive) or a handshake initiation
    // to a peer after wake_quiet_ms without any, or an initiation for it came in from a relay:
    // the pair turns active at once (node_core::on_traffic), not at the next 2 s device read.
    // Called on the loop thread with the peer's (primary) session id (return quickly).
    // Keepalives do not count (an active pair sends them; no relayed pair does at idle);
    // initiations do: an idle relayed pair sends none (no keepalive), so one means traffic.
    std::function<void(uint64_t session_id)> on_wake;
    uint64_t wake_quiet_ms = 1000;
};

struct relay_proxy_stats {
    uint64_t to_relay_packets = 0, to_relay_bytes = 0;  // WireGuard -> relay (frame bytes)
    uint64_t to_wg_packets = 0, to_wg_bytes = 0;        // relay -> WireGuard (payload bytes)
    uint64_t control_packets = 0;                       // plain control datagrams on the uplink
    uint64_t inband_control_packets = 0;  // control datagrams inside a session's RELAY_DATA
    uint64_t unknown_session = 0;         // RELAY_DATA for a session we have no peer for
    uint64_t wrong_source = 0;            // RELAY_DATA not from that session's relay
    uint64_t foreign_local = 0;           // a peer socket got a packet not from the WireGuard port
    uint64_t malformed = 0;               // neither RELAY_DATA nor control, or truncated
    uint64_t nat_keepalives = 0;          // NAT_KEEPALIVEs (wire_codec.hpp): dropped, counted
    uint64_t send_failed = 0;
    uint64_t oversize = 0;  // of send_failed: frames to a relay above the route's MTU (EMSGSIZE)
    // A kept handshake initiation sent again through the session a peer was retargeted to.
    uint64_t init_resent = 0;
    // A handshake response sent through the (standby) session its initiation came in on, not
    // the primary.
    uint64_t response_via_initiation_session = 0;
};

class relay_proxy {
public:
    static result<std::unique_ptr<relay_proxy>> start(relay_proxy_config config);
    ~relay_proxy();
    relay_proxy(const relay_proxy&) = delete;
    relay_proxy& operator=(const relay_proxy&) = delete;

    void stop();

    // A relayed peer: frames for `session_id` go to `relay`; what comes back goes to the local
    // WireGuard listening at `wg` (127.0.0.1:51820 or [::1]:51820). Returns the loopback endpoint
    // to set as the peer's WireGuard endpoint. Session id 0 is refused (on_control uses it for "not
    // in a session"). Errors: invalid_argument, already_exists, exhausted, socket errors.
    // `probe_index`: the receiver index of the pair's sealed probes to us (0: none).
    result<wg_endpoint> add_peer(uint64_t session_id, const wg_endpoint& relay,
                                 const wg_endpoint& wg, uint32_t probe_index = 0);
    // Moves a peer to another relay / session, keeping its local socket and so its WG endpoint.
    status retarget_peer(uint64_t old_session_id, uint64_t new_session_id,
                         const wg_endpoint& relay);
    bool remove_peer(uint64_t session_id);
    // Warm standby sessions (make before break): frames arriving on `alias_session` from `relay`
    // are delivered to the peer whose primary session is `peer_session`, as if they came through
    // the primary, so the remote end may send on whichever relay it prefers and both directions
    // fail over independently. Sending uses the primary; retarget_peer() to an alias promotes it
    // (one table update). Errors: not_found (no such peer), already_exists (id in use),
    // exhausted. remove_peer() drops the peer's aliases too.
    status add_alias(uint64_t peer_session, uint64_t alias_session, const wg_endpoint& relay);
    bool remove_alias(uint64_t alias_session);

    wg_endpoint uplink_endpoint() const;
    status send_control(std::span<const uint8_t> datagram, const wg_endpoint& to);
    // A control datagram in-band: framed as RELAY_DATA of `session_id` and sent from the uplink to
    // that session's relay, so it follows the data path to the peer's proxy (which hands it to its
    // on_control with the session id). Thread-safe. Errors: not_found (no peer for the session),
    // invalid_argument (empty or larger than max_relay_payload), socket errors.
    status send_in_session(uint64_t session_id, std::span<const uint8_t> datagram);
    relay_proxy_stats stats() const;
    pid_t thread_id() const noexcept { return tid_.load(); }

private:
    static constexpr size_t wg_initiation_size = 148, wg_response_size = 92;
    struct peer_slot {
        bool used = false;
        uint32_t generation = 0;  // bumped on removal: stale epoll events are recognised
        uint64_t session_id = 0;
        relay_addr relay, wg;
        unique_fd fd;
        int family = 0;
        uint32_t probe_index = 0;
        uint64_t last_data_ms = 0;  // WireGuard's last data packet to the peer (on_wake)
        // WireGuard's last handshake initiation to the peer, while no response came back.
        uint64_t init_sent_ms = 0;  // 0: none kept
        std::array<uint8_t, wg_initiation_size> init{};
        // The last initiation from the peer: when, and the session it came in on.
        uint64_t init_in_ms = 0;
        uint64_t init_in_session = 0;
    };
    static constexpr uint64_t rekey_timeout_ms = 5000;  // WireGuard's REKEY_TIMEOUT

    explicit relay_proxy(relay_proxy_config config);
    void run() noexcept;
    void drain_uplink() noexcept;
    void drain_peer(uint32_t slot) noexcept;

    relay_proxy_config config_;
    unique_fd uplink_, epoll_, stop_event_;
    int uplink_family_ = 0;
    bool uplink_dual_stack_ = false;

    mutable std::mutex mutex_;  // guards peers_, index_, free_ (and peer fds)
    std::vector<peer_slot> peers_;
    std::vector<uint32_t> free_;
    fixed_u64_map index_;  // session id -> slot
    struct alias_slot {
        bool used = false;
        uint64_t session_id = 0;
        uint32_t peer = 0;  // peer slot
        relay_addr relay;
    };
    std::vector<alias_slot> aliases_;
    std::vector<uint32_t> free_aliases_;
    fixed_u64_map alias_index_;  // alias session id -> alias slot
    // Under mutex_: the slot and the relay address frames for `session` must come from.
    bool lookup(uint64_t session, uint32_t& slot, relay_addr& relay) const noexcept;
    void erase_alias(uint32_t a) noexcept;

    recv_batch rx_;
    send_batch tx_;
    std::vector<uint32_t> slot_of_;  // per received frame: its peer slot (uplink path)
    std::vector<uint32_t> control_idx_;
    std::vector<uint64_t> control_session_;  // per control_idx_ entry: 0 or the in-band session
    std::vector<uint64_t> wake_sessions_;    // on_wake calls after a batch from the uplink

    struct counters {
        std::atomic<uint64_t> to_relay_packets{0}, to_relay_bytes{0}, to_wg_packets{0},
            to_wg_bytes{0}, control_packets{0}, inband_control_packets{0}, unknown_session{0},
            wrong_source{0}, foreign_local{0}, malformed{0}, nat_keepalives{0}, send_failed{0},
            oversize{0}, init_resent{0}, response_via_initiation_session{0};
    } counters_;

    std::atomic<pid_t> tid_{0};
    std::thread thread_;
};

}  // namespace mw::meshd
