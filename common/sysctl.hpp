// /proc/sys access. Writes under /proc/sys/net act on the network namespace of the calling thread,
// so callers run them inside netns::run() for another namespace.
#pragma once

#include <string>

#include "common/result.hpp"

namespace mw {

result<std::string> read_sysctl(const std::string& key);  // "net/ipv4/ip_forward"
status write_sysctl(const std::string& key, const std::string& value);
// Writes only when the current value differs (avoids needless writes on the hot ADD path).
status ensure_sysctl(const std::string& key, const std::string& value);

}  // namespace mw
