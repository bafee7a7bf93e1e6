// The load generator's view of a Redis Cluster: its masters and which one owns each key slot,
// read once from a seed with CLUSTER SLOTS. The bench never reshards while it publishes, so the
// map is not refreshed; a publication that lands on the wrong master comes back as a MOVED error
// and is counted as a publish error, which fails the phase.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sidecar::bench {

struct RedisAddress {
  std::string host;
  uint16_t port = 0;
};

struct ClusterMap {
  std::vector<RedisAddress> masters;
  std::vector<uint32_t> owner; // per slot (16384), an index into masters
  // The master that owns `channel`'s slot (CRC16 with hash tags, as Redis computes it).
  uint32_t master_of(std::string_view channel) const;
};

// Asks the seed for CLUSTER SLOTS. False, with `error` set, when the seed does not answer, is
// not in cluster mode, leaves a slot without a master or names a master outside 127.0.0.0/8.
bool read_cluster_map(const RedisAddress &seed, ClusterMap &map, std::string &error);

} // namespace sidecar::bench
