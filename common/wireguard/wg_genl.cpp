#include "common/wireguard/wg_genl.hpp"

#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <linux/wireguard.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

#include "common/nl_attr.hpp"

namespace mw {

namespace {

// Starts a WireGuard genl message in buf (header only; the caller adds attributes).
nlmsghdr* start_message(char* buf, uint16_t family_id, uint8_t cmd, uint16_t flags) {
    std::memset(buf, 0, MNL_NLMSG_HDRLEN + MNL_ALIGN(sizeof(genlmsghdr)));
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = family_id;
    nlh->nlmsg_flags = NLM_F_REQUEST | flags;
    auto* g = static_cast<genlmsghdr*>(mnl_nlmsg_put_extra_header(nlh, sizeof(genlmsghdr)));
    g->cmd = cmd;
    g->version = WG_GENL_VERSION;
    return nlh;
}

// Appends one allowed-ip entry; false (and nothing appended) when it does not fit.
bool put_allowed_ip(nlmsghdr* nlh, size_t max, const ip_prefix& p) {
    nlattr* nest = mnl_attr_nest_start_check(nlh, max, 0);
    if (!nest) return false;
    auto net = p.network();
    if (!mnl_attr_put_u16_check(nlh, max, WGALLOWEDIP_A_FAMILY,
                                static_cast<uint16_t>(net.family())) ||
        !mnl_attr_put_check(nlh, max, WGALLOWEDIP_A_IPADDR, net.address().byte_len(),
                            net.address().data()) ||
        !mnl_attr_put_u8_check(nlh, max, WGALLOWEDIP_A_CIDR_MASK,
                               static_cast<uint8_t>(net.length()))) {
        mnl_attr_nest_cancel(nlh, nest);
        return false;
    }
    mnl_attr_nest_end(nlh, nest);
    return true;
}

// Appends a peer's header attributes. `continuation`: a later part of a split peer.
bool put_peer_header(nlmsghdr* nlh, size_t max, const wg_peer_update& p, bool continuation) {
    if (!mnl_attr_put_check(nlh, max, WGPEER_A_PUBLIC_KEY, wg_key::size, p.public_key.data())) {
        return false;
    }
    uint32_t flags = 0;
    if (continuation) {
        flags = WGPEER_F_UPDATE_ONLY;
    } else {
        if (p.remove) flags |= WGPEER_F_REMOVE_ME;
        if (p.update_only) flags |= WGPEER_F_UPDATE_ONLY;
        if (p.replace_allowed_ips) flags |= WGPEER_F_REPLACE_ALLOWEDIPS;
    }
    if (flags && !mnl_attr_put_u32_check(nlh, max, WGPEER_A_FLAGS, flags)) return false;
    if (continuation || p.remove) return true;
    if (p.preshared_key && !mnl_attr_put_check(nlh, max, WGPEER_A_PRESHARED_KEY, wg_key::size,
                                               p.preshared_key->data())) {
        return false;
    }
    if (p.endpoint) {
        sockaddr_storage ss;
        socklen_t len = p.endpoint->to_sockaddr(ss);
        if (!mnl_attr_put_check(nlh, max, WGPEER_A_ENDPOINT, len, &ss)) return false;
    }
    if (p.persistent_keepalive &&
        !mnl_attr_put_u16_check(nlh, max, WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL,
                                *p.persistent_keepalive)) {
        return false;
    }
    return true;
}

error bad(const std::string& why) {
    return error(errc::protocol_error, "malformed WireGuard netlink message: " + why);
}

result<wg_key> key_attr(const nlattr* a) {
    if (mnl_attr_get_payload_len(a) != wg_key::size) return bad("key attribute is not 32 bytes");
    return wg_key::from_bytes(mnl_attr_get_payload(a));
}

// The parts of one message, shared by the get and set decoders.
struct peer_chunk {
    wg_peer peer;
    uint32_t flags = 0;
    bool has_psk = false;
    bool has_keepalive = false;
};
struct message_parts {
    std::optional<wg_key> private_key, public_key;
    std::optional<uint16_t> listen_port;
    std::optional<uint32_t> fwmark;
    uint32_t flags = 0;
    std::string ifname;
    std::vector<peer_chunk> peers;
};

status parse_allowed_ip(const nlattr* nest, std::vector<ip_prefix>& out) {
    int family = -1, cidr = -1;
    const nlattr* addr = nullptr;
    nl::for_each_nested(nest, [&](const nlattr* a) {
        switch (mnl_attr_get_type(a)) {
            case WGALLOWEDIP_A_FAMILY:
                if (mnl_attr_get_payload_len(a) == 2) family = mnl_attr_get_u16(a);
                break;
            case WGALLOWEDIP_A_IPADDR:
                addr = a;
                break;
            case WGALLOWEDIP_A_CIDR_MASK:
                if (mnl_attr_get_payload_len(a) == 1) cidr = mnl_attr_get_u8(a);
                break;
            default:
                break;
        }
    });
    if ((family != AF_INET && family != AF_INET6) || !addr || cidr < 0) {
        return bad("allowed-ip without family, address or mask");
    }
    auto ip =
        ip_address::from_bytes(family, mnl_attr_get_payload(addr), mnl_attr_get_payload_len(addr));
    if (!ip || cidr > ip->bits()) return bad("allowed-ip address/mask does not match its family");
    out.emplace_back(*ip, cidr);
    return {};
}

status parse_peer(const nlattr* nest, peer_chunk& c) {
    status st;
    bool have_key = false;
    nl::for_each_nested(nest, [&](const nlattr* a) {
        if (!st) return;
        uint16_t len = mnl_attr_get_payload_len(a);
        switch (mnl_attr_get_type(a)) {
            case WGPEER_A_PUBLIC_KEY: {
                auto k = key_attr(a);
                if (!k) {
                    st = k.err();
                    return;
                }
                c.peer.public_key = *k;
                have_key = true;
                break;
            }
            case WGPEER_A_PRESHARED_KEY: {
                auto k = key_attr(a);
                if (!k) {
                    st = k.err();
                    return;
                }
                c.has_psk = true;
                if (!k->is_zero()) c.peer.preshared_key = *k;
                break;
            }
            case WGPEER_A_FLAGS:
                if (len != 4) {
                    st = bad("peer flags");
                    return;
                }
                c.flags = mnl_attr_get_u32(a);
                break;
            case WGPEER_A_ENDPOINT: {
                auto ep = wg_endpoint::from_sockaddr(mnl_attr_get_payload(a), len);
                if (!ep) {
                    st = bad("endpoint is not a sockaddr_in/in6");
                    return;
                }
                c.peer.endpoint = *ep;
                break;
            }
            case WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL:
                if (len != 2) {
                    st = bad("keepalive");
                    return;
                }
                c.peer.persistent_keepalive = mnl_attr_get_u16(a);
                c.has_keepalive = true;
                break;
            case WGPEER_A_LAST_HANDSHAKE_TIME: {
                // struct __kernel_timespec { int64 tv_sec; int64 tv_nsec; }
                if (len != 16) {
                    st = bad("handshake time");
                    return;
                }
                int64_t ts[2];
                std::memcpy(ts, mnl_attr_get_payload(a), sizeof ts);
                c.peer.last_handshake_sec = ts[0];
                c.peer.last_handshake_nsec = ts[1];
                break;
            }
            case WGPEER_A_RX_BYTES:
                if (len != 8) {
                    st = bad("rx bytes");
                    return;
                }
                c.peer.rx_bytes = mnl_attr_get_u64(a);
                break;
            case WGPEER_A_TX_BYTES:
                if (len != 8) {
                    st = bad("tx bytes");
                    return;
                }
                c.peer.tx_bytes = mnl_attr_get_u64(a);
                break;
            case WGPEER_A_ALLOWEDIPS:
                nl::for_each_nested(a, [&](const nlattr* ip) {
                    if (st) st = parse_allowed_ip(ip, c.peer.allowed_ips);
                });
                break;
            default:
                break;  // newer attributes (protocol version, …)
        }
    });
    if (!st) return st;
    if (!have_key) return bad("peer without public key");
    return {};
}

result<message_parts> parse_message(const nlmsghdr* nlh) {
    if (nlh->nlmsg_len < MNL_NLMSG_HDRLEN + sizeof(genlmsghdr)) return bad("too short");
    // Attribute walking runs up to the aligned end of the message; senders (the kernel, libmnl)
    // always pad, and an unpadded length would let the last attribute reach past the buffer.
    if (nlh->nlmsg_len % MNL_ALIGNTO != 0) return bad("length not padded to 4 bytes");
    message_parts m;
    status st;
    nl::for_each_attr(nlh, sizeof(genlmsghdr), [&](const nlattr* a) {
        if (!st) return;
        uint16_t len = mnl_attr_get_payload_len(a);
        switch (mnl_attr_get_type(a)) {
            case WGDEVICE_A_IFNAME:
                m.ifname = nl::attr_string(a);
                break;
            case WGDEVICE_A_PRIVATE_KEY: {
                auto k = key_attr(a);
                if (!k) {
                    st = k.err();
                    return;
                }
                m.private_key = *k;
                break;
            }
            case WGDEVICE_A_PUBLIC_KEY: {
                auto k = key_attr(a);
                if (!k) {
                    st = k.err();
                    return;
                }
                m.public_key = *k;
                break;
            }
            case WGDEVICE_A_LISTEN_PORT:
                if (len != 2) {
                    st = bad("listen port");
                    return;
                }
                m.listen_port = mnl_attr_get_u16(a);
                break;
            case WGDEVICE_A_FWMARK:
                if (len != 4) {
                    st = bad("fwmark");
                    return;
                }
                m.fwmark = mnl_attr_get_u32(a);
                break;
            case WGDEVICE_A_FLAGS:
                if (len != 4) {
                    st = bad("device flags");
                    return;
                }
                m.flags = mnl_attr_get_u32(a);
                break;
            case WGDEVICE_A_PEERS:
                nl::for_each_nested(a, [&](const nlattr* p) {
                    if (!st) return;
                    peer_chunk c;
                    st = parse_peer(p, c);
                    if (st) m.peers.push_back(std::move(c));
                });
                break;
            default:
                break;
        }
    });
    if (!st) return std::move(st).err();
    return m;
}

}  // namespace

result<std::vector<wg_genl::message>> wg_genl::encode_set(const wg_device_update& u,
                                                          const std::string& ifname,
                                                          uint16_t family_id, size_t max_size) {
    MW_TRY_STATUS(validate_ifname(ifname));
    if (max_size < min_message_size) {
        return error(errc::invalid_argument, "netlink message size limit below " +
                                                 std::to_string(min_message_size) + " bytes");
    }
    std::vector<message> out;
    std::vector<char> buf(max_size);
    size_t peer_i = 0, ip_i = 0;
    bool first = true;
    for (;;) {
        nlmsghdr* nlh = start_message(buf.data(), family_id, WG_CMD_SET_DEVICE, NLM_F_ACK);
        mnl_attr_put_strz(nlh, WGDEVICE_A_IFNAME, ifname.c_str());
        if (first) {
            // Fits: min_message_size leaves room for all device attributes.
            if (u.private_key)
                mnl_attr_put(nlh, WGDEVICE_A_PRIVATE_KEY, wg_key::size, u.private_key->data());
            if (u.listen_port) mnl_attr_put_u16(nlh, WGDEVICE_A_LISTEN_PORT, *u.listen_port);
            if (u.fwmark) mnl_attr_put_u32(nlh, WGDEVICE_A_FWMARK, *u.fwmark);
            if (u.replace_peers) mnl_attr_put_u32(nlh, WGDEVICE_A_FLAGS, WGDEVICE_F_REPLACE_PEERS);
        }
        if (peer_i < u.peers.size()) {
            nlattr* peers = mnl_attr_nest_start(nlh, WGDEVICE_A_PEERS);
            size_t in_this = 0;
            while (peer_i < u.peers.size()) {
                const wg_peer_update& p = u.peers[peer_i];
                nlattr* peer = mnl_attr_nest_start_check(nlh, max_size, 0);
                if (!peer || !put_peer_header(nlh, max_size, p, ip_i > 0)) {
                    if (peer) mnl_attr_nest_cancel(nlh, peer);
                    break;
                }
                size_t ips_before = ip_i;
                if (!p.remove && ip_i < p.allowed_ips.size()) {
                    nlattr* ips = mnl_attr_nest_start_check(nlh, max_size, WGPEER_A_ALLOWEDIPS);
                    if (ips) {
                        while (ip_i < p.allowed_ips.size() &&
                               put_allowed_ip(nlh, max_size, p.allowed_ips[ip_i])) {
                            ++ip_i;
                        }
                        mnl_attr_nest_end(nlh, ips);
                    }
                    if (ip_i == ips_before) {
                        // Not a single allowed-ip fits after the header: move the peer whole.
                        mnl_attr_nest_cancel(nlh, peer);
                        break;
                    }
                }
                mnl_attr_nest_end(nlh, peer);
                ++in_this;
                if (!p.remove && ip_i < p.allowed_ips.size()) break;  // continues in next message
                ++peer_i;
                ip_i = 0;
            }
            mnl_attr_nest_end(nlh, peers);
            if (in_this == 0) {
                return error(errc::invalid_argument,
                             "netlink message size limit too small for one peer");
            }
        }
        out.emplace_back(buf.data(), buf.data() + nlh->nlmsg_len);
        first = false;
        if (peer_i >= u.peers.size()) break;
    }
    return out;
}

wg_genl::message wg_genl::encode_get(const std::string& ifname, uint16_t family_id) {
    std::vector<char> buf(MNL_NLMSG_HDRLEN + 64 + ifname.size());
    nlmsghdr* nlh = start_message(buf.data(), family_id, WG_CMD_GET_DEVICE, NLM_F_ACK | NLM_F_DUMP);
    mnl_attr_put_strz(nlh, WGDEVICE_A_IFNAME, ifname.c_str());
    buf.resize(nlh->nlmsg_len);
    return buf;
}

status wg_genl::decode_get(const nlmsghdr* nlh, wg_device& dev) {
    auto m = MW_TRY(parse_message(nlh));
    if (m.private_key && !m.private_key->is_zero()) dev.private_key = m.private_key;
    if (m.public_key && !m.public_key->is_zero()) dev.public_key = m.public_key;
    if (m.listen_port) dev.listen_port = m.listen_port;
    if (m.fwmark) dev.fwmark = m.fwmark;
    for (auto& c : m.peers) {
        if (!dev.peers.empty() && dev.peers.back().public_key == c.peer.public_key) {
            auto& ips = dev.peers.back().allowed_ips;
            ips.insert(ips.end(), c.peer.allowed_ips.begin(), c.peer.allowed_ips.end());
            continue;
        }
        dev.peers.push_back(std::move(c.peer));
    }
    return {};
}

result<wg_device_update> wg_genl::decode_set(const std::vector<message>& messages) {
    wg_device_update u;
    bool first = true;
    for (const auto& msg : messages) {
        const auto* nlh = reinterpret_cast<const nlmsghdr*>(msg.data());
        if (msg.size() < MNL_NLMSG_HDRLEN || nlh->nlmsg_len != msg.size()) return bad("length");
        auto m = MW_TRY(parse_message(nlh));
        if (!first && (m.private_key || m.listen_port || m.fwmark || m.flags)) {
            return bad("device attributes after the first message");
        }
        if (first) {
            u.private_key = m.private_key;
            u.listen_port = m.listen_port;
            u.fwmark = m.fwmark;
            u.replace_peers = (m.flags & WGDEVICE_F_REPLACE_PEERS) != 0;
        }
        for (size_t i = 0; i < m.peers.size(); ++i) {
            auto& c = m.peers[i];
            bool continuation = i == 0 && !first && !u.peers.empty() &&
                                u.peers.back().public_key == c.peer.public_key;
            if (continuation) {
                auto& ips = u.peers.back().allowed_ips;
                ips.insert(ips.end(), c.peer.allowed_ips.begin(), c.peer.allowed_ips.end());
                continue;
            }
            wg_peer_update pu;
            pu.public_key = c.peer.public_key;
            pu.remove = (c.flags & WGPEER_F_REMOVE_ME) != 0;
            pu.update_only = (c.flags & WGPEER_F_UPDATE_ONLY) != 0;
            pu.replace_allowed_ips = (c.flags & WGPEER_F_REPLACE_ALLOWEDIPS) != 0;
            if (c.has_psk) pu.preshared_key = c.peer.preshared_key.value_or(wg_key{});
            pu.endpoint = c.peer.endpoint;
            if (c.has_keepalive) pu.persistent_keepalive = c.peer.persistent_keepalive;
            pu.allowed_ips = std::move(c.peer.allowed_ips);
            u.peers.push_back(std::move(pu));
        }
        first = false;
    }
    return u;
}

}  // namespace mw
