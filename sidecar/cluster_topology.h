// ClusterTopology: which master (and replicas) serve each of Redis Cluster's 16384 slots, as
// CLUSTER SHARDS (Redis 7) or CLUSTER SLOTS (older, and our fallback) tell it, and the MOVED and
// ASK redirections that say a slot has moved. Pure: a parsed reply in, a table out. The cluster
// bus asks for it again whenever a reply or a push says the table is stale.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "result.h"

struct redisReply;

namespace sidecar {

struct ClusterNode {
  std::string host; // as the cluster announces it: the endpoint, else the ip
  uint16_t port = 0;
  std::string id;           // the node id ("" when CLUSTER SLOTS omitted it)
  bool online = true;       // CLUSTER SHARDS' health; CLUSTER SLOTS lists only what it considers up
  std::string addr() const; // "host:port", "[v6]:port"; the key nodes are known by
};

struct ClusterShard {
  std::vector<std::pair<uint16_t, uint16_t>> slots; // inclusive ranges
  ClusterNode master;
  std::vector<ClusterNode> replicas;
};

class ClusterTopology {
public:
  // Shards without a master (every node failed) are dropped; their slots have no owner.
  std::vector<ClusterShard> shards;

  // The shard serving `slot`, or null when no shard claims it (a cluster that is not ok).
  const ClusterShard *shard_of(uint16_t slot) const;
  // How many slots have an owner; 16384 for a healthy cluster.
  size_t covered_slots() const;
  // Fills the slot table from `shards`; the parsers call it. A slot claimed twice goes to the
  // later shard (both cannot be true; the next refresh settles it).
  void index();

private:
  static constexpr int16_t kNone = -1;
  std::array<int16_t, 16384> owner_{};
  bool indexed_ = false;
};

// CLUSTER SHARDS: an array of shards, each a flat map with "slots" (a flat list of range
// bounds) and "nodes" (flat maps with id, port, ip, endpoint, hostname, role, health, ...).
// `answered_by` is the host the reply came from: Redis reports an empty address for the answering
// node when it does not know its own (a one-node cluster that never met a peer).
Result<ClusterTopology> parse_cluster_shards(const redisReply &reply,
                                             std::string_view answered_by = {});
// CLUSTER SLOTS: an array of [start, end, master, replica...], each node [host, port, id, ...].
Result<ClusterTopology> parse_cluster_slots(const redisReply &reply,
                                            std::string_view answered_by = {});

// "MOVED 3999 127.0.0.1:6381" or "ASK 3999 127.0.0.1:6381".
struct ClusterRedirect {
  bool ask = false;
  uint16_t slot = 0;
  std::string host;
  uint16_t port = 0;
  std::string addr() const;
};
std::optional<ClusterRedirect> parse_cluster_redirect(std::string_view error);

} // namespace sidecar
