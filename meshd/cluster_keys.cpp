#include "meshd/cluster_keys.hpp"

#include "meshd/psk_file.hpp"

namespace mw::meshd {

result<cluster_keys> cluster_keys::load(const meshd_config& c) {
    auto seal = MW_TRY(psk_file::read(c.psk_path, "psk.path"));
    std::vector<psk_file> accepted;
    std::vector<std::string> warnings;
    if (!seal.warning().empty()) warnings.push_back(seal.warning());
    for (size_t i = 0; i < c.psk_accept_paths.size(); ++i) {
        auto f = MW_TRY(
            psk_file::read(c.psk_accept_paths[i], "psk.acceptPaths[" + std::to_string(i) + "]"));
        if (!f.warning().empty()) warnings.push_back(f.warning());
        accepted.push_back(std::move(f));
    }
    std::vector<std::span<const uint8_t>> spans;
    spans.reserve(accepted.size());
    for (const auto& f : accepted) spans.push_back(f.bytes());
    auto sealer = MW_TRY(psk_sealer::create(seal.bytes(), spans));
    cluster_keys k{
        std::move(sealer), record_cache::key_from_psk(seal.bytes()), {}, {}, std::move(warnings)};
    for (size_t i = 0; i < k.sealer.slots(); ++i) k.fingerprints.push_back(k.sealer.fingerprint(i));
    for (const auto& f : accepted) k.cache_accept.push_back(record_cache::key_from_psk(f.bytes()));
    return k;
}

std::string cluster_keys::accepted_list() const {
    std::string out;
    for (size_t i = 1; i < fingerprints.size(); ++i) out += (i > 1 ? "," : "") + fingerprints[i];
    return out.empty() ? "-" : out;
}

}  // namespace mw::meshd
