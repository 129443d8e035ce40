// libFuzzer target: WireGuard generic-netlink answers (WG_CMD_GET_DEVICE dump messages) and set
// messages, decoded from arbitrary bytes.
#include <libmnl/libmnl.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/wireguard/wg_genl.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    // The buffer a netlink receive would fill, walked as the kernel backend walks it.
    std::vector<char> buf(data, data + size);
    const auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.data());
    int len = static_cast<int>(buf.size());
    mw::wg_device dev;
    // decode_get's contract: nlmsg_len bytes are readable (the receive loop checks that; libmnl's
    // mnl_nlmsg_ok alone accepts lengths above INT_MAX, so the bound is checked unsigned here).
    while (len >= static_cast<int>(sizeof(nlmsghdr)) && nlh->nlmsg_len >= sizeof(nlmsghdr) &&
           nlh->nlmsg_len <= static_cast<unsigned>(len)) {
        if (!mw::wg_genl::decode_get(nlh, dev)) break;
        nlh = mnl_nlmsg_next(nlh, &len);
    }
    (void)mw::wg_genl::decode_set({std::vector<char>(data, data + size)});
    return 0;
}
