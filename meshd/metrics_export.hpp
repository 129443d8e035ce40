// The Prometheus text served on metrics.listen, rendered from one node_snapshot (the same counts
// meshctl status shows).
#pragma once

#include <string>

#include "meshd/node_snapshot.hpp"

namespace mw::meshd {

std::string metrics_text(const node_snapshot& s);

}  // namespace mw::meshd
