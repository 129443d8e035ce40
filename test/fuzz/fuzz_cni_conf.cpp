// libFuzzer target: the CNI network configuration parser (the plugin's stdin) and the result
// encoder behind it. Must never crash, hang or throw, whatever the bytes.
#include <cstddef>
#include <cstdint>
#include <string>

#include "cni-plugin/net_conf.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string in(reinterpret_cast<const char*>(data), size);
    auto r = mw::cni::parse_net_conf(in);
    (void)mw::cni::peek_version(in);
    if (r.conf && r.conf->prev_result) {
        // Whatever parsed must encode again in its own version.
        (void)mw::cni::encode_result(*r.conf->prev_result, r.conf->cni_version).dump();
    }
    return 0;
}
