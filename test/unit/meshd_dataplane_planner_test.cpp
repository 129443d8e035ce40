// The data-plane planner's rules (meshd/dataplane_planner.hpp): kept peers across a path loss,
// staged keepalive, relay proxy sockets (add, failover, standby aliases, linger), the relay-role
// switch. Each case is one of the WireGuard-stall fixes (faff364, 648b5aa, a892593).
#include <doctest/doctest.h>

#include <algorithm>

#include "meshd/dataplane_planner.hpp"
#include "meshd_test_util.hpp"

using meshd_test::ep;
using namespace mw;
using namespace mw::meshd;
using meshd_test::identity;
using meshd_test::t0;

namespace {

using K = proxy_op::kind;

ip_prefix pfx(const char* s) {
    return ip_prefix::parse(s).value();
}

peer_dataplane peer(uint8_t n, path_kind path) {
    peer_dataplane d;
    d.id = identity(n).id();
    d.name = "node-" + std::to_string(n);
    d.wg_public_key = identity(n).wg_public_key();
    d.allowed_ips = {pfx(("10.244." + std::to_string(n) + ".0/24").c_str())};
    d.path = path;
    if (path == path_kind::direct) {
        d.endpoint = ep(("192.168.1." + std::to_string(n) + ":51820").c_str());
    }
    if (path == path_kind::relay) {
        d.relay = identity(200).id();
        d.relay_endpoint = ep("203.0.113.1:51821");
        d.session_id = 0x1000 + n;
    }
    return d;
}

const wg_peer* find(const wireguard_plan& p, const peer_dataplane& d) {
    auto it = std::find_if(p.peers.begin(), p.peers.end(),
                           [&](const wg_peer& w) { return w.public_key == d.wg_public_key; });
    return it == p.peers.end() ? nullptr : &*it;
}

// Runs the three steps the way the daemon does, with the relay proxy answering `ok` and giving
// peer sockets 127.0.0.1:40000+n. Returns the operations for inspection.
struct runner {
    dataplane_planner& pl;
    std::vector<proxy_op> ops;
    wireguard_plan plan;
    bool proxy_ok = true;
    uint16_t next_port = 40000;

    wireguard_plan& step(const std::vector<peer_dataplane>& want, bool proxy_up, uint64_t now) {
        ops = pl.proxy_ops(want, proxy_up, now);
        std::set<node_id> failed;
        for (const auto& op : ops) {
            bool alias = op.op == K::add_alias || op.op == K::remove_alias;
            if (alias && failed.count(op.peer)) continue;
            bool ok = proxy_ok || op.op == K::remove_peer || op.op == K::remove_alias;
            if (!ok && (op.op == K::add_peer || op.op == K::retarget_peer)) failed.insert(op.peer);
            wg_endpoint local{ip_address::parse("127.0.0.1").value(), next_port};
            if (op.op == K::add_peer && ok) ++next_port;
            pl.proxy_done(op, ok, local);
        }
        plan = pl.wireguard(want, proxy_up, now);
        return plan;
    }
    size_t count(K k) const {
        return static_cast<size_t>(
            std::count_if(ops.begin(), ops.end(), [&](const proxy_op& o) { return o.op == k; }));
    }
};

}  // namespace

TEST_CASE("planner: a peer is configured once it has a path; direct gets its endpoint") {
    dataplane_planner pl(identity(1).id());
    runner r{pl};
    auto none = peer(2, path_kind::none);
    auto& p = r.step({none}, true, t0);
    CHECK(p.peers.empty());  // no endpoint yet: a handshake now would wait REKEY_TIMEOUT
    auto no_ips = peer(3, path_kind::direct);
    no_ips.allowed_ips.clear();
    auto direct = peer(2, path_kind::direct);
    r.step({direct, no_ips}, true, t0 + 100);
    REQUIRE(r.plan.peers.size() == 1);
    CHECK(r.plan.peers[0].endpoint == direct.endpoint);
    CHECK(r.plan.peers[0].allowed_ips == direct.allowed_ips);
    CHECK(r.ops.empty());
}

TEST_CASE(
    "planner: a peer whose path is lost keeps its configuration (keys stay) until its "
    "record goes") {
    dataplane_planner pl(identity(1).id());
    runner r{pl};
    auto direct = peer(2, path_kind::direct);
    r.step({direct}, true, t0);
    r.step({direct}, true, t0 + 10'000);  // keepalive on by now
    REQUIRE(r.plan.peers.size() == 1);
    wg_peer before = r.plan.peers[0];
    CHECK(before.persistent_keepalive == 25);

    auto lost = peer(2, path_kind::none);
    r.step({lost}, true, t0 + 11'000);
    REQUIRE(r.plan.peers.size() == 1);
    CHECK(r.plan.peers[0].same_config(before));  // same endpoint, keepalive: not removed

    // The record's pod CIDRs change while the path is still lost: the kept peer follows them.
    lost.allowed_ips = {pfx("10.244.2.0/24"), pfx("10.245.2.0/24")};
    r.step({lost}, true, t0 + 12'000);
    REQUIRE(r.plan.peers.size() == 1);
    CHECK(r.plan.peers[0].allowed_ips == lost.allowed_ips);
    CHECK(r.plan.peers[0].endpoint == before.endpoint);

    // The record goes: removed and forgotten (a later "none" does not bring it back).
    r.step({}, true, t0 + 13'000);
    CHECK(r.plan.peers.empty());
    r.step({lost}, true, t0 + 14'000);
    CHECK(r.plan.peers.empty());
}

TEST_CASE("planner: keepalive is staged, the lower node ID at 3 s, the other at 5 s") {
    auto a = identity(1).id(), b = identity(2).id();
    auto lower = std::min(a, b), higher = std::max(a, b);
    uint8_t lower_n = lower == a ? 1 : 2, higher_n = lower == a ? 2 : 1;

    // This node is the lower one: its peer (higher) gets keepalive 3 s after its first path.
    dataplane_planner first(lower);
    runner r1{first};
    auto to_higher = peer(higher_n, path_kind::direct);
    CHECK(r1.step({to_higher}, true, t0).keepalive_pending);
    CHECK(r1.plan.peers[0].persistent_keepalive == 0);
    CHECK(r1.step({to_higher}, true, t0 + 2999).keepalive_pending);
    CHECK(r1.plan.peers[0].persistent_keepalive == 0);
    CHECK_FALSE(r1.step({to_higher}, true, t0 + 3000).keepalive_pending);
    CHECK(r1.plan.peers[0].persistent_keepalive == 25);

    // The higher one waits 5 s.
    dataplane_planner second(higher);
    runner r2{second};
    auto to_lower = peer(lower_n, path_kind::direct);
    r2.step({to_lower}, true, t0);
    CHECK(r2.step({to_lower}, true, t0 + 3000).keepalive_pending);
    CHECK(r2.plan.peers[0].persistent_keepalive == 0);
    CHECK(r2.step({to_lower}, true, t0 + 4999).keepalive_pending);
    CHECK_FALSE(r2.step({to_lower}, true, t0 + 5000).keepalive_pending);
    CHECK(r2.plan.peers[0].persistent_keepalive == 25);

    // The time counts from the first path, not from each path change: a relayed path without
    // the proxy (we serve as a relay) keeps it at once.
    auto relayed = peer(lower_n, path_kind::relay);
    r2.step({relayed}, false, t0 + 6000);
    CHECK(r2.plan.peers[0].persistent_keepalive == 25);
}

TEST_CASE("planner: keepalive only where a NAT mapping needs it (issue 18)") {
    auto a = identity(1).id(), b = identity(2).id();
    auto lower = std::min(a, b);
    uint8_t higher_n = lower == a ? 2 : 1;
    dataplane_planner pl(lower);
    runner r{pl};
    // A direct path the core found NAT-free: the slow one (120 s), staged like the other.
    auto lan = peer(higher_n, path_kind::direct);
    lan.keepalive = false;
    CHECK(r.step({lan}, true, t0).keepalive_pending);
    CHECK(r.plan.peers[0].persistent_keepalive == 0);
    CHECK_FALSE(r.step({lan}, true, t0 + 10'000).keepalive_pending);
    CHECK(r.plan.peers[0].persistent_keepalive == 120);
    // The same peer behind a NAT (the core says so): switched on (staged time already passed).
    lan.keepalive = true;
    r.step({lan}, true, t0 + 12'000);
    CHECK(r.plan.peers[0].persistent_keepalive == 25);
    // Relayed through the proxy, an active pair: 55 s (the relay probes keep the control
    // socket's mapping; this keeps the session keys valid), whatever the core's NAT flag says.
    auto relayed = peer(higher_n, path_kind::relay);
    relayed.keepalive = true;
    relayed.active = true;
    CHECK_FALSE(r.step({relayed}, true, t0 + 14'000).keepalive_pending);
    REQUIRE(r.plan.peers.size() == 1);
    CHECK(r.plan.peers[0].persistent_keepalive == 55);
    // Relayed while we serve as a relay (no proxy, endpoint learned by roaming): on.
    r.step({relayed}, false, t0 + 16'000);
    REQUIRE(r.plan.peers.size() == 1);
    CHECK(r.plan.peers[0].persistent_keepalive == 25);
}

TEST_CASE("planner: a relayed pair through the proxy has keepalive only while active") {
    auto a = identity(1).id(), b = identity(2).id();
    auto lower = std::min(a, b);
    uint8_t higher_n = lower == a ? 2 : 1;
    dataplane_planner pl(lower);
    runner r{pl};
    // A fresh relayed path is active (the core holds it so): staged, then on, so that its first
    // handshake happens.
    auto rel = peer(higher_n, path_kind::relay);
    rel.active = true;
    CHECK(r.step({rel}, true, t0).keepalive_pending);
    REQUIRE(r.plan.peers.size() == 1);
    CHECK(r.plan.peers[0].persistent_keepalive == 0);
    CHECK_FALSE(r.step({rel}, true, t0 + 3000).keepalive_pending);
    CHECK(r.plan.peers[0].persistent_keepalive == 55);
    const auto local = r.plan.peers[0].endpoint;
    // Idle: none, and nothing pending (no plan every poll for it); same endpoint, no proxy op.
    rel.active = false;
    CHECK_FALSE(r.step({rel}, true, t0 + 13'000).keepalive_pending);
    CHECK(r.ops.empty());
    REQUIRE(r.plan.peers.size() == 1);
    CHECK(r.plan.peers[0].persistent_keepalive == 0);
    CHECK(r.plan.peers[0].endpoint == local);
    // Still idle: the same plan (the reconciler writes nothing).
    auto idle = r.plan.peers[0];
    r.step({rel}, true, t0 + 60'000);
    CHECK(r.plan.peers[0].same_config(idle));
    CHECK(r.plan.peers[0].persistent_keepalive == 0);
    // Traffic again: on at once (the staging was for the first path only).
    rel.active = true;
    CHECK_FALSE(r.step({rel}, true, t0 + 300'000).keepalive_pending);
    CHECK(r.plan.peers[0].persistent_keepalive == 55);
    // Idle while we serve as a relay (no proxy: the endpoint is learned, its NAT mapping is
    // WireGuard's own): the NAT rate, active or not.
    rel.active = false;
    r.step({rel}, false, t0 + 310'000);
    REQUIRE(r.plan.peers.size() == 1);
    CHECK(r.plan.peers[0].persistent_keepalive == 25);
}

TEST_CASE("planner: a relayed peer gets a proxy socket as its endpoint; failover retargets it") {
    dataplane_planner pl(identity(1).id());
    runner r{pl};
    auto rel = peer(2, path_kind::relay);
    r.step({rel}, true, t0);
    REQUIRE(r.ops.size() == 1);
    CHECK(r.ops[0].op == K::add_peer);
    CHECK(r.ops[0].session_id == rel.session_id);
    CHECK(r.ops[0].relay == rel.relay_endpoint);
    REQUIRE(r.plan.peers.size() == 1);
    auto local = ep("127.0.0.1:40000");
    CHECK(r.plan.peers[0].endpoint == local);
    CHECK(pl.proxied().at(rel.id).local == local);

    // Same session again: nothing to do.
    r.step({rel}, true, t0 + 100);
    CHECK(r.ops.empty());

    // Failover to another relay with a warm standby on the first: one retarget, one alias; the
    // WireGuard endpoint does not change.
    auto moved = rel;
    moved.relay_endpoint = ep("203.0.113.2:51821");
    moved.session_id = 0x2002;
    moved.standby = {{rel.session_id, rel.relay_endpoint}};
    r.step({moved}, true, t0 + 200);
    REQUIRE(r.ops.size() == 2);
    CHECK(r.ops[0] == proxy_op{K::retarget_peer, rel.id, rel.name, rel.session_id, 0x2002,
                               moved.relay_endpoint});
    CHECK(r.ops[1] ==
          proxy_op{K::add_alias, rel.id, rel.name, 0x2002, rel.session_id, rel.relay_endpoint});
    CHECK(r.plan.peers[0].endpoint == local);
    CHECK(pl.proxied().at(rel.id).aliases == std::set<uint64_t>{rel.session_id});

    // Promote the standby back: the alias becomes the session, no alias left to remove.
    r.step({rel}, true, t0 + 300);
    REQUIRE(r.ops.size() == 1);
    CHECK(r.ops[0].op == K::retarget_peer);
    CHECK(pl.proxied().at(rel.id).aliases.empty());
    CHECK(pl.proxied().at(rel.id).session_id == rel.session_id);

    // A standby that is no longer offered is removed.
    auto with_standby = rel;
    with_standby.standby = {{0x3003, ep("203.0.113.3:51821")}};
    r.step({with_standby}, true, t0 + 400);
    CHECK(r.count(K::add_alias) == 1);
    r.step({rel}, true, t0 + 500);
    REQUIRE(r.ops.size() == 1);
    CHECK(r.ops[0] == proxy_op{K::remove_alias, rel.id, rel.name, rel.session_id, 0x3003, {}});
    CHECK(pl.proxied().at(rel.id).aliases.empty());
}

TEST_CASE("planner: a failed proxy operation leaves the peer unconfigured and is tried again") {
    dataplane_planner pl(identity(1).id());
    runner r{pl};
    r.proxy_ok = false;
    auto rel = peer(2, path_kind::relay);
    rel.standby = {{0x3003, ep("203.0.113.3:51821")}};
    r.step({rel}, true, t0);
    CHECK(r.plan.peers.empty());
    CHECK(pl.proxied().empty());
    r.proxy_ok = true;
    r.step({rel}, true, t0 + 2000);
    CHECK(r.count(K::add_peer) == 1);
    REQUIRE(r.plan.peers.size() == 1);
    CHECK(pl.proxied().at(rel.id).aliases == std::set<uint64_t>{0x3003});
}

TEST_CASE(
    "planner: a peer that leaves the relay path keeps its proxy socket 60 s; a gone one "
    "loses it at once") {
    dataplane_planner pl(identity(1).id());
    runner r{pl};
    auto rel2 = peer(2, path_kind::relay), rel3 = peer(3, path_kind::relay);
    r.step({rel2, rel3}, true, t0);
    CHECK(r.count(K::add_peer) == 2);
    CHECK_FALSE(pl.lingering());

    // 2 goes direct (learned), 3's record goes.
    auto direct2 = peer(2, path_kind::direct);
    direct2.endpoint.reset();
    r.step({direct2}, true, t0 + 1000);
    REQUIRE(r.ops.size() == 1);
    CHECK(r.ops[0].op == K::remove_peer);
    CHECK(r.ops[0].peer == rel3.id);
    CHECK(pl.proxied().count(rel2.id) == 1);
    CHECK(pl.lingering());
    REQUIRE(r.plan.peers.size() == 1);
    CHECK_FALSE(r.plan.peers[0].endpoint);  // learned by WireGuard, left alone

    r.step({direct2}, true, t0 + 1000 + 59'999);
    CHECK(r.ops.empty());
    r.step({direct2}, true, t0 + 1000 + 60'000);
    REQUIRE(r.ops.size() == 1);
    CHECK(r.ops[0] == proxy_op{K::remove_peer, rel2.id, {}, rel2.session_id, 0, {}});
    CHECK(pl.proxied().empty());
    CHECK_FALSE(pl.lingering());

    // Back on a relay before the linger ends: the same socket, lingering stops.
    r.step({rel2}, true, t0 + 70'000);
    auto local = pl.proxied().at(rel2.id).local;
    r.step({direct2}, true, t0 + 71'000);
    CHECK(pl.lingering());
    r.step({rel2}, true, t0 + 72'000);
    CHECK(r.ops.empty());
    CHECK_FALSE(pl.lingering());
    CHECK(r.plan.peers[0].endpoint == local);
}

TEST_CASE("planner: a relayed peer that loses its path keeps the proxy socket it uses") {
    dataplane_planner pl(identity(1).id());
    runner r{pl};
    auto rel = peer(2, path_kind::relay);
    r.step({rel}, true, t0);
    auto local = pl.proxied().at(rel.id).local;
    auto lost = peer(2, path_kind::none);
    for (uint64_t t = 1; t <= 5; ++t) {
        r.step({lost}, true, t0 + t * 30'000);  // well past the linger time
        CHECK(r.ops.empty());
        REQUIRE(r.plan.peers.size() == 1);
        CHECK(r.plan.peers[0].endpoint == local);
    }
    CHECK_FALSE(pl.lingering());
}

TEST_CASE("planner: taking the relay role keeps relayed peers' keys without an endpoint") {
    dataplane_planner pl(identity(1).id());
    runner r{pl};
    auto rel = peer(2, path_kind::relay), direct = peer(3, path_kind::direct);
    rel.active = true;
    r.step({rel, direct}, true, t0);
    r.step({rel, direct}, true, t0 + 10'000);
    REQUIRE(r.plan.peers.size() == 2);

    // The proxy stops (the forwarder takes the port); the relayed peer's path is lost meanwhile.
    pl.proxy_gone();
    CHECK(pl.proxied().empty());
    auto lost = peer(2, path_kind::none);
    r.step({lost, direct}, false, t0 + 10'100);
    CHECK(r.ops.empty());
    REQUIRE(r.plan.peers.size() == 2);
    const wg_peer* kept = find(r.plan, rel);
    REQUIRE(kept);
    CHECK_FALSE(kept->endpoint);              // learned from the peer's first packet (roaming)
    CHECK(kept->persistent_keepalive == 55);  // as it was: relayed through the proxy
    const wg_peer* d = find(r.plan, direct);
    REQUIRE(d);
    CHECK(d->endpoint == direct.endpoint);  // other peers untouched

    // A relay path while we serve as a relay: configured without an endpoint, no proxy socket.
    r.step({rel, direct}, false, t0 + 10'200);
    CHECK(r.ops.empty());
    kept = find(r.plan, rel);
    REQUIRE(kept);
    CHECK_FALSE(kept->endpoint);

    // The role ends, the proxy is back: the relayed peer gets a new socket.
    r.step({rel, direct}, true, t0 + 20'000);
    CHECK(r.count(K::add_peer) == 1);
    CHECK(find(r.plan, rel)->endpoint == pl.proxied().at(rel.id).local);
}

// Issue 17: one peer whose allowed-ips repeat another's made validate() refuse the whole device,
// so the apply failed every time and froze every other peer's updates. The plan now always
// passes validate(): the contested prefix stays with the peer that has it configured, and the
// rest of that peer and every other peer still apply.
TEST_CASE("planner: a peer repeating another's allowed-ip cannot make the whole apply fail") {
    dataplane_planner pl(identity(1).id());
    runner r{pl};
    auto a = peer(2, path_kind::direct), b = peer(3, path_kind::direct);
    r.step({a, b}, true, t0);
    REQUIRE(r.plan.dropped.empty());
    // b now also wants a's /24 (and a new one of its own); c, new, wants a's too.
    b.allowed_ips.push_back(pfx("10.244.2.0/24"));
    b.allowed_ips.push_back(pfx("10.244.33.0/24"));
    auto c = peer(4, path_kind::direct);
    c.allowed_ips = {pfx("10.244.2.0/24"), pfx("10.244.4.0/24")};
    auto& plan = r.step({a, b, c}, true, t0 + 1000);
    wg_device dev;
    dev.peers = plan.peers;
    auto st = validate(dev);
    CHECK_MESSAGE(st.ok(), (st.ok() ? "" : st.err().message));
    REQUIRE(find(plan, a));
    REQUIRE(find(plan, b));
    REQUIRE(find(plan, c));
    CHECK(find(plan, a)->allowed_ips == std::vector<ip_prefix>{pfx("10.244.2.0/24")});
    CHECK(find(plan, b)->allowed_ips ==
          std::vector<ip_prefix>{pfx("10.244.3.0/24"), pfx("10.244.33.0/24")});
    CHECK(find(plan, c)->allowed_ips == std::vector<ip_prefix>{pfx("10.244.4.0/24")});
    CHECK(plan.dropped.size() == 2);
    // Without an incumbent the first in the desired list keeps it (the core lists peers in node
    // ID order).
    dataplane_planner fresh(identity(1).id());
    runner r2{fresh};
    auto& p2 = r2.step({a, b, c}, true, t0);
    dev.peers = p2.peers;
    CHECK(validate(dev).ok());
    CHECK(p2.dropped.size() == 2);
    CHECK(find(p2, a)->allowed_ips == std::vector<ip_prefix>{pfx("10.244.2.0/24")});
}

TEST_CASE("planner: a peer from the record cache is installed at once, before it has a path") {
    dataplane_planner pl(identity(1).id());
    runner r{pl};
    auto a = peer(2, path_kind::none);  // seeded: its last direct endpoint
    auto b = peer(3, path_kind::none);  // seeded without one
    auto c = peer(4, path_kind::none);  // not from the cache: waits for a path as before
    // Seeded before the core has turned the records into peers: a plan without them keeps the
    // seeds.
    pl.seed(a.id, ep("192.168.1.2:51820"));
    pl.seed(b.id, std::nullopt);
    r.step({}, true, t0);
    CHECK(pl.seeds() == 2);

    auto& plan = r.step({a, b, c}, true, t0 + 10);
    REQUIRE(find(plan, a));
    CHECK(find(plan, a)->endpoint == ep("192.168.1.2:51820"));
    CHECK(find(plan, a)->allowed_ips == a.allowed_ips);
    CHECK(find(plan, a)->persistent_keepalive == 0);  // no handshakes towards a guess
    REQUIRE(find(plan, b));
    CHECK_FALSE(find(plan, b)->endpoint);
    CHECK_FALSE(find(plan, c));
    CHECK(r.ops.empty());  // no relay proxy socket for a guess

    // Still no path: kept as installed (the pod CIDRs follow the record).
    a.allowed_ips.push_back(pfx("10.244.22.0/24"));
    r.step({a, b, c}, true, t0 + 2000);
    REQUIRE(find(r.plan, a));
    CHECK(find(r.plan, a)->allowed_ips.size() == 2);
    CHECK(find(r.plan, a)->endpoint == ep("192.168.1.2:51820"));

    // A real path replaces the guess and ends the seed; losing it again keeps the peer as the
    // path configured it (the kept-peer rule).
    auto a_direct = peer(2, path_kind::direct);
    a_direct.endpoint = ep("192.168.7.2:51820");
    r.step({a_direct, b, c}, true, t0 + 3000);
    CHECK(find(r.plan, a)->endpoint == ep("192.168.7.2:51820"));
    CHECK(pl.seeds() == 1);
    r.step({a, b, c}, true, t0 + 4000);
    CHECK(find(r.plan, a)->endpoint == ep("192.168.7.2:51820"));

    // b's record goes: removed, and the seed with it; the record back later (from a relay,
    // no path) waits for a path like any new peer.
    r.step({a, c}, true, t0 + 5000);
    CHECK_FALSE(find(r.plan, b));
    CHECK(pl.seeds() == 0);
    r.step({a, b, c}, true, t0 + 6000);
    CHECK_FALSE(find(r.plan, b));
}
