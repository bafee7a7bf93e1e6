// CLUSTER SLOTS into a slot -> master table; see cluster_map.h.
#include "cluster_map.h"

#include "sidecar/cluster_slot.h"

#include <hiredis/hiredis.h>

namespace sidecar::bench {

uint32_t ClusterMap::master_of(std::string_view channel) const {
  return owner[sidecar::cluster_slot(channel)];
}

bool read_cluster_map(const RedisAddress &seed, ClusterMap &map, std::string &error) {
  timeval tv{2, 0};
  redisContext *c = redisConnectWithTimeout(seed.host.c_str(), seed.port, tv);
  if (c == nullptr || c->err != 0) {
    error = "cluster seed connect: " + std::string(c != nullptr ? c->errstr : "no memory");
    if (c != nullptr) {
      redisFree(c);
    }
    return false;
  }
  auto *reply = static_cast<redisReply *>(redisCommand(c, "CLUSTER SLOTS"));
  map.masters.clear();
  map.owner.assign(sidecar::kClusterSlots, UINT32_MAX);
  if (reply == nullptr) {
    error = std::string("CLUSTER SLOTS: ") + c->errstr;
  } else if (reply->type == REDIS_REPLY_ERROR) {
    error = "CLUSTER SLOTS: " + std::string(reply->str, reply->len);
  } else if (reply->type != REDIS_REPLY_ARRAY) {
    error = "CLUSTER SLOTS: not an array";
  }
  // Each entry is [first slot, last slot, [ip, port, id, ...] of the master, replicas...].
  for (size_t i = 0; error.empty() && i < reply->elements; ++i) {
    const redisReply *e = reply->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
        e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2) {
      error = "CLUSTER SLOTS: unexpected entry";
      break;
    }
    const redisReply *node = e->element[2];
    RedisAddress a{std::string(node->element[0]->str, node->element[0]->len),
                   static_cast<uint16_t>(node->element[1]->integer)};
    // A one-node cluster may not know its own address; it is the seed then.
    if (a.host.empty()) {
      a.host = seed.host;
    }
    if (!a.host.starts_with("127.")) {
      error = "CLUSTER SLOTS names " + a.host + ": the bench only uses 127.0.0.0/8";
      break;
    }
    uint32_t index = 0;
    while (index < map.masters.size() &&
           (map.masters[index].host != a.host || map.masters[index].port != a.port)) {
      ++index;
    }
    if (index == map.masters.size()) {
      map.masters.push_back(a);
    }
    const auto first = static_cast<uint32_t>(e->element[0]->integer);
    const auto last = static_cast<uint32_t>(e->element[1]->integer);
    for (uint32_t s = first; s <= last && s < sidecar::kClusterSlots; ++s) {
      map.owner[s] = index;
    }
  }
  if (error.empty()) {
    for (uint32_t s = 0; s < sidecar::kClusterSlots; ++s) {
      if (map.owner[s] == UINT32_MAX) {
        error = "CLUSTER SLOTS: slot " + std::to_string(s) + " has no master";
        break;
      }
    }
  }
  if (reply != nullptr) {
    freeReplyObject(reply);
  }
  redisFree(c);
  return error.empty();
}

} // namespace sidecar::bench
