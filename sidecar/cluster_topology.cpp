// ClusterTopology; see cluster_topology.h.
#include "cluster_topology.h"

#include <hiredis/hiredis.h>

#include "cluster_slot.h"
#include "text.h"

namespace sidecar {
namespace {

std::string_view text_of(const redisReply *r) {
  return r != nullptr && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)
             ? std::string_view(r->str, r->len)
             : std::string_view();
}

// An integer reply in [lo, hi]; CLUSTER SHARDS sends ports and slots as integers.
std::optional<long long> int_of(const redisReply *r, long long lo, long long hi) {
  if (r == nullptr || r->type != REDIS_REPLY_INTEGER || r->integer < lo || r->integer > hi)
    return std::nullopt;
  return r->integer;
}

std::string host_port(std::string_view host, uint16_t port) {
  std::string h(host);
  if (h.find(':') != std::string::npos)
    h = "[" + h + "]";
  return h + ":" + std::to_string(port);
}

// Endpoints a client cannot use: "?" (unknown) and "" (Redis announces no endpoint, meaning
// "the address you reached me on", which for a topology read from another node is unknown).
bool usable_endpoint(std::string_view e) { return !e.empty() && e != "?"; }

// A node that has never met a peer does not know its own address (a one-node cluster without
// cluster-announce-ip): Redis then reports "" for it, and it can only be the node that answered,
// at the address we reached it on.
Result<ClusterNode> parse_shard_node(const redisReply &n, bool &master,
                                     std::string_view answered_by) {
  if (n.type != REDIS_REPLY_ARRAY || n.elements % 2 != 0)
    return Result<ClusterNode>::fail("a node is not a flat map");
  ClusterNode node;
  std::string_view ip, endpoint, role;
  std::optional<long long> port;
  for (size_t i = 0; i + 1 < n.elements; i += 2) {
    std::string_view key = text_of(n.element[i]);
    const redisReply *v = n.element[i + 1];
    if (key == "id")
      node.id = std::string(text_of(v));
    else if (key == "port")
      port = int_of(v, 1, 65535);
    else if (key == "ip")
      ip = text_of(v);
    else if (key == "endpoint")
      endpoint = text_of(v);
    else if (key == "role")
      role = text_of(v);
    else if (key == "health")
      node.online = text_of(v) == "online";
  }
  // A TLS-only node has "tls-port" and no "port": we do not speak TLS, so it is unusable.
  if (!port)
    return Result<ClusterNode>::fail("a node without a plain-text port (id " + node.id + ")");
  node.port = static_cast<uint16_t>(*port);
  node.host = std::string(usable_endpoint(endpoint) ? endpoint : ip);
  if (node.host.empty())
    node.host = std::string(answered_by);
  if (node.host.empty())
    return Result<ClusterNode>::fail("a node without an address (id " + node.id + ")");
  master = role == "master";
  return node;
}

Result<ClusterNode> parse_slots_node(const redisReply &n, std::string_view answered_by) {
  if (n.type != REDIS_REPLY_ARRAY || n.elements < 2)
    return Result<ClusterNode>::fail("a node is not [host, port, ...]");
  std::optional<long long> port = int_of(n.element[1], 1, 65535);
  if (!port)
    return Result<ClusterNode>::fail("a node's port is not 1..65535");
  ClusterNode node;
  node.host = std::string(text_of(n.element[0]));
  node.port = static_cast<uint16_t>(*port);
  if (n.elements >= 3)
    node.id = std::string(text_of(n.element[2]));
  if (node.host.empty())
    node.host = std::string(answered_by);
  if (!usable_endpoint(node.host))
    return Result<ClusterNode>::fail("a node without an address (id " + node.id + ")");
  return node;
}

} // namespace

std::string ClusterNode::addr() const { return host_port(host, port); }
std::string ClusterRedirect::addr() const { return host_port(host, port); }

void ClusterTopology::index() {
  owner_.fill(kNone);
  for (size_t s = 0; s < shards.size(); ++s) {
    for (auto [lo, hi] : shards[s].slots) {
      for (unsigned slot = lo; slot <= hi && slot < kClusterSlots; ++slot)
        owner_[slot] = static_cast<int16_t>(s);
    }
  }
  indexed_ = true;
}

const ClusterShard *ClusterTopology::shard_of(uint16_t slot) const {
  if (!indexed_ || slot >= kClusterSlots || owner_[slot] == kNone)
    return nullptr;
  return &shards[static_cast<size_t>(owner_[slot])];
}

size_t ClusterTopology::covered_slots() const {
  size_t n = 0;
  for (int16_t o : owner_)
    n += indexed_ && o != kNone ? 1 : 0;
  return n;
}

Result<ClusterTopology> parse_cluster_shards(const redisReply &reply, std::string_view answered_by) {
  if (reply.type == REDIS_REPLY_ERROR)
    return Result<ClusterTopology>::fail(std::string(reply.str, reply.len));
  if (reply.type != REDIS_REPLY_ARRAY)
    return Result<ClusterTopology>::fail("CLUSTER SHARDS: not an array");
  ClusterTopology t;
  for (size_t i = 0; i < reply.elements; ++i) {
    const redisReply &s = *reply.element[i];
    if (s.type != REDIS_REPLY_ARRAY || s.elements % 2 != 0)
      return Result<ClusterTopology>::fail("CLUSTER SHARDS: a shard is not a flat map");
    ClusterShard shard;
    bool has_master = false;
    for (size_t k = 0; k + 1 < s.elements; k += 2) {
      std::string_view key = text_of(s.element[k]);
      const redisReply &v = *s.element[k + 1];
      if (key == "slots") {
        if (v.type != REDIS_REPLY_ARRAY || v.elements % 2 != 0)
          return Result<ClusterTopology>::fail("CLUSTER SHARDS: slots is not a list of ranges");
        for (size_t r = 0; r + 1 < v.elements; r += 2) {
          auto lo = int_of(v.element[r], 0, kClusterSlots - 1);
          auto hi = int_of(v.element[r + 1], 0, kClusterSlots - 1);
          if (!lo || !hi || *lo > *hi)
            return Result<ClusterTopology>::fail("CLUSTER SHARDS: a slot range out of 0..16383");
          shard.slots.emplace_back(static_cast<uint16_t>(*lo), static_cast<uint16_t>(*hi));
        }
      } else if (key == "nodes") {
        if (v.type != REDIS_REPLY_ARRAY)
          return Result<ClusterTopology>::fail("CLUSTER SHARDS: nodes is not a list");
        for (size_t n = 0; n < v.elements; ++n) {
          bool master = false;
          Result<ClusterNode> node = parse_shard_node(*v.element[n], master, answered_by);
          if (!node)
            return Result<ClusterTopology>::fail("CLUSTER SHARDS: " + node.error);
          // A failed master stays listed (health "fail") until it is forgotten; the promoted
          // replica is then the shard's master.
          if (master && (!has_master || !shard.master.online)) {
            if (has_master)
              shard.replicas.push_back(std::move(shard.master));
            shard.master = std::move(*node);
            has_master = true;
          } else {
            shard.replicas.push_back(std::move(*node));
          }
        }
      }
    }
    // A shard with no slots (an empty master, a replica group being set up) serves nothing.
    if (has_master && !shard.slots.empty())
      t.shards.push_back(std::move(shard));
  }
  t.index();
  return t;
}

Result<ClusterTopology> parse_cluster_slots(const redisReply &reply, std::string_view answered_by) {
  if (reply.type == REDIS_REPLY_ERROR)
    return Result<ClusterTopology>::fail(std::string(reply.str, reply.len));
  if (reply.type != REDIS_REPLY_ARRAY)
    return Result<ClusterTopology>::fail("CLUSTER SLOTS: not an array");
  ClusterTopology t;
  for (size_t i = 0; i < reply.elements; ++i) {
    const redisReply &r = *reply.element[i];
    if (r.type != REDIS_REPLY_ARRAY || r.elements < 3)
      return Result<ClusterTopology>::fail("CLUSTER SLOTS: a range is not [start, end, master]");
    auto lo = int_of(r.element[0], 0, kClusterSlots - 1);
    auto hi = int_of(r.element[1], 0, kClusterSlots - 1);
    if (!lo || !hi || *lo > *hi)
      return Result<ClusterTopology>::fail("CLUSTER SLOTS: a slot range out of 0..16383");
    Result<ClusterNode> master = parse_slots_node(*r.element[2], answered_by);
    if (!master)
      return Result<ClusterTopology>::fail("CLUSTER SLOTS: " + master.error);
    // One entry per range: ranges of the same master are joined into one shard.
    ClusterShard *shard = nullptr;
    for (ClusterShard &s : t.shards) {
      if (s.master.addr() == master->addr())
        shard = &s;
    }
    if (shard == nullptr) {
      t.shards.emplace_back();
      shard = &t.shards.back();
      shard->master = std::move(*master);
      for (size_t n = 3; n < r.elements; ++n) {
        Result<ClusterNode> replica = parse_slots_node(*r.element[n], answered_by);
        if (!replica)
          return Result<ClusterTopology>::fail("CLUSTER SLOTS: " + replica.error);
        shard->replicas.push_back(std::move(*replica));
      }
    }
    shard->slots.emplace_back(static_cast<uint16_t>(*lo), static_cast<uint16_t>(*hi));
  }
  t.index();
  return t;
}

std::optional<ClusterRedirect> parse_cluster_redirect(std::string_view error) {
  ClusterRedirect r;
  if (error.starts_with("MOVED "))
    error.remove_prefix(6);
  else if (error.starts_with("ASK "))
    error.remove_prefix(4), r.ask = true;
  else
    return std::nullopt;
  size_t space = error.find(' ');
  if (space == std::string_view::npos)
    return std::nullopt;
  uint64_t slot = 0;
  if (!parse_u64(error.substr(0, space), slot) || slot >= kClusterSlots)
    return std::nullopt;
  std::string_view where = error.substr(space + 1);
  size_t colon = where.rfind(':');
  uint64_t port = 0;
  if (colon == std::string_view::npos || !parse_u64(where.substr(colon + 1), port) || port == 0 ||
      port > 65535)
    return std::nullopt;
  std::string_view host = where.substr(0, colon);
  if (host.starts_with('[') && host.ends_with(']'))
    host = host.substr(1, host.size() - 2);
  r.slot = static_cast<uint16_t>(slot);
  r.port = static_cast<uint16_t>(port);
  r.host = std::string(host);
  // Redis 7 says "MOVED 3999 :6381" when the node has no announced address: the client is to
  // use the address it already talks to, which the caller fills in.
  return r;
}

} // namespace sidecar
