// libFuzzer target: WireGuard UAPI answers (what wireguard-go sends back) and endpoint/key text.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/wireguard/wg_uapi.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string in(reinterpret_cast<const char*>(data), size);
    auto d = mw::wg_uapi::parse_get(in);
    if (d) {
        // Whatever parses must encode back without trouble.
        (void)mw::wg_uapi::encode_set(mw::wg_device_update::full(*d));
    }
    (void)mw::wg_uapi::parse_set(in);
    (void)mw::wg_endpoint::parse(in);
    (void)mw::wg_key::from_base64(in);
    (void)mw::wg_key::from_hex(in);
    return 0;
}
