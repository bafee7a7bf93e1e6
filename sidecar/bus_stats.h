// What a message bus reports of its nodes for /metrics (MessageBus::node_stats, cluster_stats),
// apart so that metrics.h needs none of the bus.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace sidecar {

// One Redis node a bus has links to, for /metrics (a cluster's masters and its global
// subscriber; nothing on a single Redis, whose totals say it all).
struct RedisNodeStats {
  std::string node;            // host:port
  const char *role = "master"; // "master" or "subscriber" (the cluster's global subscriber)
  bool up = false;             // every link of it is connected
  uint64_t reconnects = 0;
  size_t subscriptions = 0;
};

// A cluster's own counters for /metrics; all zero on a single Redis.
struct ClusterStats {
  uint64_t topology_refreshes = 0; // CLUSTER SHARDS/SLOTS answers read
  uint64_t appends_redirected = 0; // inbound XADDs sent on after MOVED/ASK/TRYAGAIN
  uint64_t appends_lost = 0;       // inbound XADDs given up (redirects, deadline, no reply)
};

} // namespace sidecar
