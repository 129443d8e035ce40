#include "cni-plugin/cni_error.hpp"

namespace mw::cni {

nlohmann::json cni_error::to_json(const std::string& cni_version) const {
    nlohmann::json j;
    j["cniVersion"] = cni_version;
    j["code"] = code;
    j["msg"] = msg;
    if (!details.empty()) j["details"] = details;
    return j;
}

}  // namespace mw::cni
