#include "meshd/core/pair_key_cache.hpp"

#include <sodium.h>

#include "meshd/core/sodium_init.hpp"

namespace mw::meshd {

pair_key_cache::pair_key_cache(const symmetric_key& pair_cluster_key, const wg_key& own_private,
                               const wg_key& own_public, size_t capacity)
    : cluster_key_(pair_cluster_key),
      own_private_(own_private),
      own_public_(own_public),
      own_id_(node_id::of(own_public)),
      capacity_(capacity ? capacity : 1) {
    ensure_sodium();
}

pair_key_cache::~pair_key_cache() {
    sodium_memzero(cluster_key_.data(), cluster_key_.size());
    own_private_.wipe();
    for (auto& e : lru_) sodium_memzero(e.key.data(), e.key.size());
}

result<const symmetric_key*> pair_key_cache::key_for(const wg_key& peer_public) {
    const node_id id = node_id::of(peer_public);
    if (auto it = by_id_.find(id); it != by_id_.end()) {
        lru_.splice(lru_.begin(), lru_, it->second);
        return &it->second->key;
    }
    if (id == own_id_) return error(errc::protocol_error, "a control message under our own key");
    ++computed_;
    auto k = MW_TRY(pair_key(cluster_key_, own_private_, own_public_, peer_public));
    if (by_id_.size() >= capacity_) {
        auto& old = lru_.back();
        sodium_memzero(old.key.data(), old.key.size());
        by_id_.erase(old.id);
        lru_.pop_back();
    }
    lru_.push_front(entry{id, peer_public, k});
    sodium_memzero(k.data(), k.size());
    by_id_.emplace(id, lru_.begin());
    return &lru_.front().key;
}

std::optional<wg_key> pair_key_cache::public_key_of(const node_id& id) const {
    auto it = by_id_.find(id);
    if (it == by_id_.end()) return std::nullopt;
    return it->second->public_key;
}

}  // namespace mw::meshd
