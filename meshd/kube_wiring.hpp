// kubernetes.enable in the daemon (see docs/architecture.md "Kubernetes"): starts kube_client
// (the API client, on its own thread) and turns each node set it posts to the core's thread into
// node_core calls. What a Node means is kube_discovery's (pure) read; this part only feeds it to
// the core: the Nodes' addresses as endpoints learned_via::kubernetes (the 4 nearest by node ID
// also as rendezvous), the listed node IDs for kubernetes.requireNode, and a warning when our own
// Node's spec.podCIDRs differ from the config's. Its own file so that meshd_runtime.cpp's daemon
// only wires the parts together.
#pragma once

#include <boost/asio.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "meshd/core/node_core.hpp"
#include "meshd/core/node_identity.hpp"
#include "meshd/kube_client.hpp"
#include "meshd/kube_discovery.hpp"
#include "meshd/meshd_config.hpp"

namespace mw::meshd {

class kube_wiring {
public:
    // Resolves the API's access (kube_access: the config, else the in-cluster service account)
    // and starts the client. Updates run on `io`'s thread (the core's); after each one fed the
    // core, `after_core` runs (the daemon flushes sends, logs and the data plane). `cfg`,
    // `identity` and `core` must outlive this.
    static result<std::unique_ptr<kube_wiring>> start(const meshd_config& cfg,
                                                      const node_identity& identity,
                                                      node_core& core, boost::asio::io_context& io,
                                                      std::function<void()> after_core);

    kube_wiring(const kube_wiring&) = delete;
    kube_wiring& operator=(const kube_wiring&) = delete;

    // At shutdown: a request in progress is closed; nothing is torn down, and no later update
    // reaches the core.
    void stop();

private:
    kube_wiring(const meshd_config& cfg, const node_identity& identity, node_core& core,
                std::function<void()> after_core);
    // The API's node set (after a LIST, and after each batch of watch events).
    void on_nodes(const std::shared_ptr<const kube_node_map>& nodes);

    const meshd_config& cfg_;
    const node_identity& identity_;
    node_core& core_;
    std::function<void()> after_core_;
    std::unique_ptr<kube_client> client_;
    std::vector<kube_offer> offers_;  // what the core was last offered from the API
    std::string cidr_warned_;         // the Node's pod CIDRs last warned about
    bool stopped_ = false;
};

}  // namespace mw::meshd
