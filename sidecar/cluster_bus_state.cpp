// ClusterBus's answers to the Server (readiness, /ready's reasons, counts and errors for
// /metrics and the status endpoint): each sums or picks over the master buses. See cluster_bus.h.
#include "cluster_bus.h"

namespace sidecar {
namespace {

std::string slot_ranges(const ClusterShard &s) {
  std::string out;
  for (auto [lo, hi] : s.slots) {
    if (!out.empty())
      out += ",";
    out += std::to_string(lo) + (lo == hi ? "" : "-" + std::to_string(hi));
  }
  return out;
}

} // namespace

bool ClusterBus::history_ready() const {
  if (!have_topo_ || nodes_.empty())
    return false;
  for (const auto &[addr, n] : nodes_) {
    if (!n->bus->history_ready())
      return false;
  }
  return true;
}

bool ClusterBus::history_refusing() const {
  for (const auto &[addr, n] : nodes_) {
    if (n->bus->history_refusing())
      return true;
  }
  return false;
}

std::string ClusterBus::history_error() const {
  for (const auto &[addr, n] : nodes_) {
    if (!n->bus->history_error().empty())
      return addr + ": " + n->bus->history_error();
  }
  return {};
}

uint64_t ClusterBus::reads_sent() const {
  uint64_t sum = 0;
  for (const auto &[addr, n] : nodes_)
    sum += n->bus->reads_sent();
  return sum;
}

uint64_t ClusterBus::reads_coalesced() const {
  uint64_t sum = 0;
  for (const auto &[addr, n] : nodes_)
    sum += n->bus->reads_coalesced();
  return sum;
}

bool ClusterBus::connected() const {
  if (!have_topo_ || !global_->bus->connected())
    return false;
  for (const auto &[addr, n] : nodes_) {
    if (!n->channels.empty() && !n->bus->connected())
      return false;
  }
  // A sharded channel waiting for the topology to name its slot's new owner (a resharding in
  // progress) does not count: its shard is reachable, the wait lasts one topology read, and a
  // 503 on every slot move would take the sidecar out of the load balancer for nothing.
  return true;
}

bool ClusterBus::command_connected() const {
  if (!have_topo_ || nodes_.empty())
    return false;
  for (const auto &[addr, n] : nodes_) {
    if (!n->bus->command_connected())
      return false;
  }
  return true;
}

uint64_t ClusterBus::reconnects() const {
  uint64_t sum = retired_reconnects_ + global_->bus->reconnects();
  for (const auto &[addr, n] : nodes_)
    sum += n->bus->reconnects();
  return sum;
}

size_t ClusterBus::subscribed_channels() const {
  size_t sum = global_->bus->subscribed_channels();
  for (const auto &[addr, n] : nodes_)
    sum += n->bus->subscribed_channels();
  return sum;
}

std::string ClusterBus::last_error() const {
  if (!have_topo_) {
    return "no Redis Cluster topology yet" +
           (topo_error_.empty()
                ? (topo_.last_error().empty() ? std::string() : ": " + topo_.last_error())
                : ": " + topo_error_);
  }
  std::string out;
  if (!global_->bus->connected())
    out = "subscriber " + global_->addr + ": " + global_->bus->last_error();
  for (const ClusterShard &s : topology_.shards) {
    auto it = nodes_.find(s.master.addr());
    if (it == nodes_.end() || reachable(*it->second))
      continue;
    out += (out.empty() ? "" : "; ") + std::string("shard ") + s.master.addr() + " (slots " +
           slot_ranges(s) + ") unreachable: " + it->second->bus->last_error();
  }
  size_t homeless = 0;
  for (const auto &[name, p] : places_)
    homeless += p.node.empty() ? 1 : 0;
  if (homeless > 0)
    out += (out.empty() ? "" : "; ") + std::to_string(homeless) +
           " channel(s) wait for a master to own their slot";
  return out;
}

size_t ClusterBus::refused_channels() const {
  size_t sum = global_->bus->refused_channels();
  for (const auto &[addr, n] : nodes_)
    sum += n->bus->refused_channels();
  return sum;
}

bool ClusterBus::refused(const std::string &channel) const {
  if (global_->bus->refused(channel))
    return true;
  auto it = places_.find(channel);
  if (it == places_.end())
    return false;
  auto n = nodes_.find(it->second.node);
  return n != nodes_.end() && n->second->bus->refused(channel);
}

std::string ClusterBus::last_refusal() const {
  std::string r = global_->bus->last_refusal();
  for (const auto &[addr, n] : nodes_) {
    if (r.empty())
      r = n->bus->last_refusal();
  }
  return r;
}

const std::map<std::string, uint64_t> &ClusterBus::subscribe_errors() const {
  errors_ = global_->bus->subscribe_errors();
  for (const auto &[addr, n] : nodes_) {
    for (const auto &[code, count] : n->bus->subscribe_errors())
      errors_[code] += count;
  }
  return errors_;
}

std::vector<RedisNodeStats> ClusterBus::node_stats() const {
  std::vector<RedisNodeStats> out;
  out.reserve(nodes_.size() + 1);
  out.push_back({global_->addr, "subscriber", global_->bus->connected(), global_->bus->reconnects(),
                 global_->bus->subscribed_channels()});
  for (const auto &[addr, n] : nodes_) {
    out.push_back(
        {addr, "master", reachable(*n), n->bus->reconnects(), n->bus->subscribed_channels()});
  }
  return out;
}

ClusterStats ClusterBus::cluster_stats() const {
  return {topology_refreshes_, appends_redirected_, appends_lost_};
}

std::map<std::string, bool> ClusterBus::masters() const {
  std::map<std::string, bool> out;
  for (const auto &[addr, n] : nodes_)
    out[addr] = reachable(*n);
  return out;
}

} // namespace sidecar
