// libFuzzer target: decoding CNI results (prevResult, delegated IPAM answers) and CNI_* env text.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "cni-plugin/cni_env.hpp"
#include "cni-plugin/cni_result.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string in(reinterpret_cast<const char*>(data), size);
    auto j = nlohmann::json::parse(in, nullptr, false);
    if (!j.is_discarded()) {
        auto r = mw::cni::decode_result(j);
        if (r) (void)mw::cni::encode_result(*r, "0.3.1").dump();
    }
    // The same bytes as CNI_ARGS / CNI_CONTAINERID / CNI_IFNAME.
    std::map<std::string, std::string> vars = {{"CNI_COMMAND", "ADD"}, {"CNI_CONTAINERID", in},
                                               {"CNI_NETNS", "/x"},    {"CNI_IFNAME", in},
                                               {"CNI_PATH", in},       {"CNI_ARGS", in}};
    (void)mw::cni::parse_env([&](const char* k) -> std::optional<std::string> {
        auto it = vars.find(k);
        if (it == vars.end()) return std::nullopt;
        return it->second;
    });
    return 0;
}
