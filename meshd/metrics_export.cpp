#include "meshd/metrics_export.hpp"

#include <tuple>
#include <utility>

#include "meshd/io/prometheus_text.hpp"

namespace mw::meshd {

std::string metrics_text(const node_snapshot& s) {
    prometheus_text t;
    using L = prometheus_text::labels;
    for (auto [k, v] : {std::pair{"direct", s.paths.direct}, std::pair{"none", s.paths.none},
                        std::pair{"relay", s.paths.relay}}) {
        t.gauge("meshwire_peers", "Peer nodes by the path in use.", {{"path", k}},
                static_cast<double>(v));
    }
    t.counter("meshwire_relay_selections_total",
              "Relayed pairs that chose (or changed) the relay they send through.", L{},
              s.relay_selections);
    t.counter("meshwire_relay_failovers_total",
              "Relay changes because the relay in use stopped answering.", L{}, s.relay_failovers);
    t.counter("meshwire_relay_wg_stalls_total",
              "Relays a pair left because its WireGuard made no progress through them (the "
              "probes may still have answered).",
              L{}, s.relay_wg_stalls);
    t.counter("meshwire_pmtu_probes_total",
              "Padded path MTU probes of relayed pairs, by result (sent, acked; the difference "
              "includes sizes above the path MTU, which the search expects to lose).",
              {{"result", "sent"}}, s.pmtu.probes_sent);
    t.counter("meshwire_pmtu_probes_total", "", {{"result", "acked"}}, s.pmtu.probes_acked);
    t.counter("meshwire_pmtu_black_holes_total",
              "A pair's confirmed path MTU stopped carrying its probes (it fell to 1280 and was "
              "searched again).",
              L{}, s.pmtu.black_holes);
    t.counter("meshwire_pmtu_changes_total",
              "Changes of a pair's path MTU as applied to the routes of its pod CIDRs.", L{},
              s.pmtu.changes);
    for (size_t i = 0; i < resign_reason_count; ++i) {
        t.counter("meshwire_record_resigns_total",
                  "Our peer record signed again (a record to every node), by reason: start, "
                  "relays, content, relay_rtt, refresh, forced.",
                  {{"reason", to_string(static_cast<resign_reason>(i))}}, s.record_resigns[i]);
    }
    t.counter("meshwire_probe_frames_dropped_total",
              "Sealed in-band probe frames dropped: no pair for the session, not from its "
              "relay, or not opening with the pair's key.",
              L{}, s.probe_frames_dropped);
    for (auto [dir, packets, bytes] :
         {std::tuple{"in", s.traffic.rx_packets, s.traffic.rx_bytes},
          std::tuple{"out", s.traffic.tx_packets, s.traffic.tx_bytes}}) {
        t.counter("meshwire_control_packets_total",
                  "Control datagrams this node's core took in / sent (in-band probes included; "
                  "WireGuard not).",
                  {{"direction", dir}}, packets);
        t.counter("meshwire_control_bytes_total",
                  "UDP payload bytes of this node's control datagrams, in / out.",
                  {{"direction", dir}}, bytes);
    }
    t.gauge("meshwire_active_pairs",
            "Peers with traffic now (or just found or changed): probed fast; the others idle.", L{},
            static_cast<double>(s.active_pairs));
    t.counter("meshwire_stalls_total",
              "Wakeups over 150 ms late (meshd itself stalled); relay liveness was paused.", L{},
              s.stalls);
    for (const auto& [fam, v] : {std::pair{"ipv4", &s.nat.ipv4}, std::pair{"ipv6", &s.nat.ipv6}}) {
        for (size_t i = 0; i < nat_mapping_count; ++i) {
            const auto m = static_cast<nat_mapping>(i);
            t.gauge("meshwire_nat_mapping",
                    "1 for how the NAT in front of the control socket maps it, per family (from "
                    "the relays' reports: none, endpoint-independent, endpoint-dependent, "
                    "single-observer, unknown).",
                    {{"family", fam}, {"mapping", to_string(m)}}, v->mapping == m ? 1 : 0);
        }
    }
    for (const auto& r : s.relays) {
        L l{{"relay", r.name}};
        t.gauge("meshwire_relay_up", "1 if the relay answers our probes.", l,
                relay_is_up(r) ? 1 : 0);
        if (r.rtt_ms)
            t.gauge("meshwire_relay_rtt_ms",
                    "RTT to the relay: the minimum of the last 3 s of probes.", l, *r.rtt_ms);
        t.gauge("meshwire_relay_load", "Our relayed pairs that send through the relay.", l,
                static_cast<double>(r.load));
    }
    for (size_t i = 0; i < cidr_refusal_count; ++i) {
        L l{{"reason", to_string(static_cast<cidr_refusal>(i))}};
        t.counter("meshwire_pod_cidrs_refused_total",
                  "Peers' pod CIDRs refused by the route authority (never routed), by reason; "
                  "each (peer, CIDR, reason) counted once.",
                  l, s.cidrs_refused_total[i]);
        t.gauge("meshwire_pod_cidrs_refused", "Peers' pod CIDRs refused now, by reason.", l,
                static_cast<double>(s.cidrs_refused_now[i]));
    }
    const auto& pl = s.probe_losses;
    for (auto [kind, v] :
         {std::pair{"relay", pl.relay}, std::pair{"direct", pl.direct},
          std::pair{"inband", pl.inband}, std::pair{"user", pl.user}, std::pair{"pmtu", pl.pmtu}}) {
        t.counter("meshwire_probe_losses_total", "PINGs without an answer, by what they probed.",
                  {{"probe", kind}}, v);
    }
    for (size_t i = 1; i < endpoint_refusal_count; ++i) {
        t.counter("meshwire_endpoints_refused_total",
                  "Endpoints from records, offers or requests not sent to (not a unicast address "
                  "at the cluster's port), and datagrams dropped for a destination's send budget.",
                  {{"reason", to_string(static_cast<endpoint_refusal>(i))}},
                  s.endpoint_refusals[i]);
    }
    t.gauge("meshwire_relay_role", "This node's relay role (1 for the current state).",
            {{"state", to_string(s.role)}, {"reason", to_string(s.role_cause)}}, 1);
    if (s.service) {
        const auto& st = s.service->stats;
        t.gauge("meshwire_relay_sessions", "Sessions in this relay's table.", L{},
                static_cast<double>(s.service->sessions));
        t.counter("meshwire_relay_forwarded_packets_total", "Packets this relay forwarded.", L{},
                  st.forwarded_packets);
        t.counter("meshwire_relay_forwarded_bytes_total", "Bytes this relay forwarded.", L{},
                  st.forwarded_bytes);
        for (size_t i = 0; i < relay_drop_count; ++i) {
            t.counter("meshwire_relay_dropped_packets_total",
                      "Frames this relay refused to forward, by reason.",
                      {{"reason", to_string(static_cast<relay_drop>(i))}}, st.table_drops[i]);
        }
        t.counter("meshwire_relay_kept_sessions_evicted_total",
                  "Idle sessions this relay kept (both nodes still heard) and evicted because the "
                  "table was full.",
                  L{}, st.kept_evicted);
        for (size_t i = 0; i < relay_refusal_count; ++i) {
            t.counter("meshwire_relay_sessions_refused_total",
                      "Session requests this relay refused for a limit of its session table "
                      "(relayService.maxSessions, maxSessionsPerNode, the node table).",
                      {{"reason", to_string(static_cast<relay_refusal>(i))}}, st.table_refusals[i]);
        }
        t.counter("meshwire_relay_malformed_total",
                  "Datagrams at the relay port that were neither a frame nor a control message, "
                  "or larger than any legal frame (truncated), dropped.",
                  L{}, st.malformed);
    }
    // meshd's sockets set don't-fragment: what exceeded the route's (path) MTU was dropped here,
    // never fragmented. Fixed labels: the relay service forwarding, our frames to a relay.
    constexpr const char* oversize_help =
        "Datagrams not sent because they exceeded the route's MTU (don't-fragment is set).";
    t.counter("meshwire_oversize_drops_total", oversize_help, {{"socket", "relay_forward"}},
              s.service ? s.service->stats.oversize : 0);
    t.counter("meshwire_oversize_drops_total", oversize_help, {{"socket", "relay_uplink"}},
              s.proxy ? s.proxy->oversize : 0);
    // Whichever owns the port counts them (one of the two at a time).
    t.counter("meshwire_nat_keepalives_received_total",
              "NAT_KEEPALIVEs received (nodes keeping their NAT mapping to this relay open); "
              "dropped unanswered.",
              L{},
              (s.service ? s.service->stats.nat_keepalives : 0) +
                  (s.proxy ? s.proxy->nat_keepalives : 0));
    const auto& c = s.control;
    t.counter("meshwire_control_accepted_total", "Control datagrams accepted.", L{}, c.accepted);
    for (auto [why, v] :
         {std::pair{"auth_failed", c.auth_failed}, std::pair{"malformed", c.malformed},
          std::pair{"old_version", c.old_version}, std::pair{"unknown_type", c.unknown_type},
          std::pair{"wrong_recipient", c.wrong_recipient},
          std::pair{"pair_auth_failed", c.pair_auth_failed},
          std::pair{"stale_epoch", c.stale_epoch}, std::pair{"replayed", c.replayed},
          std::pair{"not_control", c.not_control}, std::pair{"bad_record", c.bad_record},
          std::pair{"revoked", c.revoked}}) {
        t.counter("meshwire_control_dropped_total", "Control datagrams dropped, by reason.",
                  {{"reason", why}}, v);
    }
    // Not a reason of its own under meshwire_control_dropped_total: these are auth_failed
    // datagrams too, and the reasons there add up to the drops.
    t.counter("meshwire_control_retired_key_total",
              "Control datagrams refused (counted in auth_failed) that were sealed with the "
              "cluster key this node dropped last: a node left out of a key roll.",
              L{}, c.retired_key);
    // Key roll (issue 14 §2): which slot opened what; the fingerprint sealing is a label that
    // changes only with the key (one series per key, not per event).
    t.counter("meshwire_control_opened_total",
              "Control datagrams accepted, by the key slot that opened them (seal: psk.path; "
              "accept: psk.acceptPaths).",
              {{"slot", "seal"}}, c.opened_seal);
    t.counter("meshwire_control_opened_total",
              "Control datagrams accepted, by the key slot that opened them (seal: psk.path; "
              "accept: psk.acceptPaths).",
              {{"slot", "accept"}}, c.opened_accept);
    if (!s.key_fingerprints.empty()) {
        t.gauge("meshwire_cluster_key_info",
                "1, labelled with the fingerprint of the cluster key this node seals with.",
                {{"fingerprint", s.key_fingerprints[0]}}, 1);
    }
    t.gauge("meshwire_cluster_keys_accepted", "Keys accepted besides the sealing key.", L{},
            s.key_fingerprints.empty() ? 0 : double(s.key_fingerprints.size() - 1));
    t.counter("meshwire_control_cookie_replies_total",
              "COOKIE_REPLYs: sent (a request from an unproven address) and received (ours).",
              {{"direction", "sent"}}, c.cookie_sent);
    t.counter("meshwire_control_cookie_replies_total",
              "COOKIE_REPLYs: sent (a request from an unproven address) and received (ours).",
              {{"direction", "received"}}, c.cookie_required);
    t.gauge("meshwire_records", "Peer records known.", L{}, static_cast<double>(s.records));
    // Fixed label values (the learned_via names), never free text.
    for (size_t i = 0; i < node_snapshot::learned_via_bits; ++i) {
        t.gauge("meshwire_peers_learned",
                "Peers by how their record reached us (a peer learned through two sources "
                "counts under both).",
                {{"via", to_string(static_cast<learned_via>(1u << i))}},
                static_cast<double>(s.peers_learned[i]));
    }
    if (s.cache) {
        const auto& c = *s.cache;
        for (auto [what, v] : {std::pair{"loaded", c.loaded}, std::pair{"expired", c.expired},
                               std::pair{"refused", c.refused}}) {
            t.gauge("meshwire_record_cache_loaded_records",
                    "Records in the on-disk cache at start: offered to the core, run out "
                    "meanwhile, refused on verification.",
                    {{"outcome", what}}, static_cast<double>(v));
        }
        t.counter("meshwire_record_cache_writes_total", "Writes of the on-disk record cache.",
                  {{"result", "ok"}}, c.writes);
        t.counter("meshwire_record_cache_writes_total", "Writes of the on-disk record cache.",
                  {{"result", "failed"}}, c.write_failures);
        t.gauge("meshwire_record_cache_records", "Records in the last write of the cache.", L{},
                static_cast<double>(c.records_written));
    }
    // Admission (issue 17): fixed label sets, so a flood cannot grow the metrics either.
    const auto& a = s.admission;
    for (auto [why, v] : {std::pair{"new_identity_rate", a.new_identity_rate_limited},
                          std::pair{"store_full", a.store_full},
                          std::pair{"session_unknown_sender", a.session_unknown_sender},
                          std::pair{"dialback_requester", a.dialback_requester_limited},
                          std::pair{"dialback_global", a.dialback_limited}}) {
        t.counter("meshwire_admission_refused_total",
                  "Requests refused before any state was allocated for them, by reason.",
                  {{"reason", why}}, v);
    }
    t.counter("meshwire_records_evicted_total",
              "Records of young or silent nodes evicted to make room for a new node.", L{},
              a.records_evicted);
    t.counter("meshwire_log_lines_suppressed_total",
              "Refusal log lines not written (one per node and reason per minute).", L{},
              a.log_lines_suppressed);
    const auto& in = s.inbox;
    for (auto [why, v] :
         {std::pair{"rate_limited", in.rate_limited}, std::pair{"new_source", in.shared_limited},
          std::pair{"queue_full", in.queue_full}, std::pair{"oversize", in.oversize}}) {
        t.counter("meshwire_control_inbox_dropped_total",
                  "Control datagrams dropped before the AEAD check, by reason.", {{"reason", why}},
                  v);
    }
    t.counter("meshwire_control_inbox_queued_total",
              "Control datagrams queued for the core's thread.", L{}, in.queued);
    t.gauge("meshwire_control_inbox_depth", "Control datagrams waiting for the core's thread.", L{},
            static_cast<double>(in.depth));
    t.gauge("meshwire_control_inbox_high_water",
            "The most control datagrams that waited at once since meshd started.", L{},
            static_cast<double>(in.high_water));
    if (s.mdns) {
        const auto& m = *s.mdns;
        t.gauge("meshwire_mdns_interfaces", "Interfaces mDNS runs on.", L{},
                static_cast<double>(m.interfaces.size()));
        t.counter("meshwire_mdns_announcements_total",
                  "mDNS announcement packets sent (per interface and address family).", L{},
                  m.announcements);
        t.counter("meshwire_mdns_answers_total", "mDNS responses sent to questions.", L{},
                  m.answers);
        t.counter("meshwire_mdns_queries_total", "mDNS browse and resolve queries sent.", L{},
                  m.queries);
        t.counter("meshwire_mdns_peers_found_total",
                  "Nodes found by mDNS (new, or with changed endpoints).", L{}, m.peers_found);
        t.counter("meshwire_mdns_conflicts_total",
                  "Renames after another responder claimed our mDNS names.", L{}, m.conflicts);
        for (auto [why, v] : {std::pair{"malformed", m.malformed}, std::pair{"ignored", m.ignored}})
            t.counter("meshwire_mdns_dropped_total", "mDNS packets dropped, by reason.",
                      {{"reason", why}}, v);
    }
    if (t.invalid_samples()) {
        t.counter("meshwire_metrics_invalid_samples_total", "Samples skipped as invalid.", L{},
                  static_cast<uint64_t>(t.invalid_samples()));
    }
    return t.str();
}

}  // namespace mw::meshd
