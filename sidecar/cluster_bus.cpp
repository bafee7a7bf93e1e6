// ClusterBus; see cluster_bus.h.
#include "cluster_bus.h"

#include <hiredis/hiredis.h>

#include "cluster_slot.h"
#include "guard.h"
#include "log.h"

namespace sidecar {
namespace {

// Topology is read again this often even when nothing says it changed (slots added to a new
// shard are only found this way), and this often while a master in use is unreachable (so a
// promoted replica is found soon after the cluster elects it, typically cluster-node-timeout
// plus a second).
constexpr uint64_t kRefreshIdleMs = 10'000;
constexpr uint64_t kRefreshDegradedMs = 500;
// Two refreshes never leave closer together than this, however many redirects ask for one.
constexpr uint64_t kRefreshMinGapMs = 100;
} // namespace

class ClusterBus::NodeSink final : public RedisSink {
public:
  NodeSink(ClusterBus &bus, Node &node) : bus_(bus), node_(node) {}
  void on_redis_message(std::string_view channel, std::string_view payload) override {
    bus_.node_message(node_, channel, payload);
  }
  void on_redis_state(bool up) override { bus_.node_state(node_, up); }
  void on_subscribed(std::string_view channel) override { bus_.node_subscribed(node_, channel); }
  void on_subscriber_reconnected() override { bus_.node_reconnected(node_); }
  void on_subscription_lost(std::string_view channel) override { bus_.node_lost(node_, channel); }
  void on_xadd_answered(uint64_t tag, const redisReply &reply) override {
    bus_.node_xadd_answered(node_, tag, reply);
  }
  void on_control_message(std::string_view payload) override {
    if (node_.global)
      bus_.sink_.on_control_message(payload);
  }
  void on_connection_message(std::string_view channel, std::string_view payload) override {
    if (node_.global)
      bus_.sink_.on_connection_message(channel, payload);
  }

private:
  ClusterBus &bus_;
  Node &node_;
};

std::unique_ptr<MessageBus> make_bus(uv_loop_t *loop, const RedisConfig &cfg, RedisSink &sink,
                                     std::vector<HistoryConfig> history) {
  if (cfg.is_cluster())
    return std::make_unique<ClusterBus>(loop, cfg, sink, std::move(history));
  return std::make_unique<RedisBus>(loop, cfg, sink, std::move(history));
}

ClusterBus::ClusterBus(uv_loop_t *loop, const RedisConfig &cfg, RedisSink &sink,
                       std::vector<HistoryConfig> history)
    : loop_(loop), cfg_(cfg), sink_(sink), history_(std::move(history)), topo_cfg_(cfg),
      topo_(loop, topo_cfg_, "topology", false, *this) {
  topo_cfg_.host = cfg_.cluster.front().host;
  topo_cfg_.port = cfg_.cluster.front().port;
  topo_cfg_.unix_path.clear();
  topo_cfg_.db = 0;
  global_ = make_node(cfg_.cluster.front().host, cfg_.cluster.front().port, true);
}

ClusterBus::~ClusterBus() = default;

std::unique_ptr<ClusterBus::Node> ClusterBus::make_node(const std::string &host, uint16_t port,
                                                        bool global) {
  auto n = std::make_unique<Node>();
  n->cfg = cfg_;
  n->cfg.host = host;
  n->cfg.port = port;
  n->cfg.unix_path.clear();
  n->cfg.db = 0;
  n->cfg.url = "redis://" + ClusterNode{host, port, {}, true}.addr();
  n->addr = ClusterNode{host, port, {}, true}.addr();
  n->global = global;
  // The global subscriber never holds a room's sharded channel, so it SUBSCRIBEs whatever it is
  // given; it never loads the library either (the masters do).
  if (global)
    n->cfg.pubsub = RedisConfig::Pubsub::global;
  n->sink = std::make_unique<NodeSink>(*this, *n);
  n->bus = std::make_unique<RedisBus>(loop_, n->cfg, *n->sink,
                                      global ? std::vector<HistoryConfig>{} : history_);
  // A master subscribes only the sharded channels placed on it: in global mode, or while it
  // serves no room, its command link is all it needs.
  if (!global)
    n->bus->subscribe_on_demand();
  if (global) {
    if (!control_.empty())
      n->bus->set_control_channel(control_);
    if (!pattern_.empty())
      n->bus->set_connection_pattern(pattern_);
  }
  return n;
}

void ClusterBus::set_control_channel(std::string channel) {
  control_ = std::move(channel);
  global_->bus->set_control_channel(control_);
}

void ClusterBus::set_connection_pattern(std::string pattern) {
  pattern_ = std::move(pattern);
  global_->bus->set_connection_pattern(pattern_);
}

int ClusterBus::start() {
  int rc = uv_timer_init(loop_, &timer_);
  if (rc != 0)
    return rc;
  timer_init_ = true;
  timer_.data = this;
  rc = uv_timer_start(&timer_, &ClusterBus::on_timer, 50, 50);
  if (rc != 0)
    return rc;
  started_ = true;
  rc = global_->bus->start();
  if (rc != 0)
    return rc;
  global_down_since_ms_ = uv_now(loop_);
  topo_.start();
  return 0;
}

void ClusterBus::stop() {
  stopping_ = true;
  topo_.stop();
  if (timer_init_ && !uv_is_closing(reinterpret_cast<uv_handle_t *>(&timer_)))
    uv_close(reinterpret_cast<uv_handle_t *>(&timer_), nullptr);
  global_->bus->stop();
  for (auto &[addr, n] : nodes_)
    n->bus->stop();
  reads_.clear();
  appends_.clear();
}

void ClusterBus::on_timer(uv_timer_t *t) {
  auto *self = static_cast<ClusterBus *>(t->data);
  guarded("cluster.tick", 0, "trying again at the next tick", [&] { self->tick(); });
}

void ClusterBus::tick() {
  if (stopping_)
    return;
  uint64_t now = uv_now(loop_);
  topo_.tick(now);
  // Node buses stopped at least one tick ago have closed their handles; their memory can go.
  std::erase_if(retired_, [now](const auto &r) { return now - r.first >= 100; });

  bool degraded = !have_topo_ || !global_->bus->connected();
  for (const auto &[addr, n] : nodes_)
    degraded = degraded || !reachable(*n);
  uint64_t every = degraded ? kRefreshDegradedMs : kRefreshIdleMs;
  if (now - last_refresh_ms_ >= every)
    refresh_wanted_ = true;
  if (refresh_wanted_ && !refresh_in_flight_ && topo_.up() &&
      now - last_refresh_ms_ >= kRefreshMinGapMs)
    send_refresh();

  // A global subscriber whose node stays unreachable moves to another node: any node relays
  // every PUBLISH of the cluster.
  if (global_->bus->connected()) {
    global_down_since_ms_ = 0;
  } else if (global_down_since_ms_ == 0) {
    global_down_since_ms_ = now;
  } else if (now - global_down_since_ms_ >=
             std::max<uint64_t>(cfg_.connect_timeout_ms, 2 * cfg_.reconnect_max_ms)) {
    rotate_global();
    global_down_since_ms_ = now;
  }

  for (auto &[token, read] : reads_) {
    if (read.node.empty() && have_topo_ && now >= read.retry_at_ms && read.cb)
      dispatch(token);
  }
  fail_waiting_reads(now);
  retry_appends(now);
}

// ----------------------------------------------------------------------------- topology

void ClusterBus::request_refresh(const char *why) {
  if (!refresh_wanted_)
    log_debug("cluster_refresh_wanted", {{"why", why}});
  refresh_wanted_ = true;
}

void ClusterBus::send_refresh() {
  bool sent = use_slots_ ? topo_.send(RedisCmd::cluster_slots, {}, {"CLUSTER", "SLOTS"})
                         : topo_.send(RedisCmd::cluster_shards, {}, {"CLUSTER", "SHARDS"});
  if (!sent)
    return;
  refresh_in_flight_ = true;
  refresh_wanted_ = false;
  last_refresh_ms_ = uv_now(loop_);
}

HostPort ClusterBus::next_candidate() {
  // Masters first (they are the likeliest to answer), then replicas, then the seeds.
  std::vector<HostPort> all;
  if (have_topo_) {
    for (const ClusterShard &s : topology_.shards)
      all.push_back({s.master.host, s.master.port});
    for (const ClusterShard &s : topology_.shards) {
      for (const ClusterNode &r : s.replicas)
        all.push_back({r.host, r.port});
    }
  }
  for (const HostPort &seed : cfg_.cluster)
    all.push_back(seed);
  return all[candidate_++ % all.size()];
}

void ClusterBus::on_link_up(RedisLink &) {
  refresh_in_flight_ = false;
  send_refresh();
}

void ClusterBus::on_link_down(RedisLink &, bool) {
  refresh_in_flight_ = false;
  // The next attempt (after the link's own backoff) asks another node.
  HostPort next = next_candidate();
  topo_cfg_.host = next.host;
  topo_cfg_.port = next.port;
}

void ClusterBus::on_link_reply(RedisLink &, const RedisPending &cmd, const redisReply &reply) {
  if (cmd.cmd != RedisCmd::cluster_shards && cmd.cmd != RedisCmd::cluster_slots)
    return;
  refresh_in_flight_ = false;
  ++topology_refreshes_;
  if (cmd.cmd == RedisCmd::cluster_shards && reply.type == REDIS_REPLY_ERROR &&
      (reply_text(&reply).find("nknown subcommand") != std::string_view::npos ||
       reply_text(&reply).find("nknown command") != std::string_view::npos)) {
    // Redis 6 and older: CLUSTER SLOTS says the same in another shape.
    use_slots_ = true;
    send_refresh();
    return;
  }
  Result<ClusterTopology> t = cmd.cmd == RedisCmd::cluster_shards
                                  ? parse_cluster_shards(reply, topo_cfg_.host)
                                  : parse_cluster_slots(reply, topo_cfg_.host);
  std::string why;
  if (!t)
    why = t.error;
  else if (t->covered_slots() == 0)
    why = "the cluster has no slots assigned (create it with redis-cli --cluster create)";
  if (!why.empty()) {
    bool news = why != topo_error_;
    topo_error_ = why;
    log_event(news ? LogConfig::Level::error : LogConfig::Level::debug, "cluster_topology_failed",
              {{"node", ClusterNode{topo_cfg_.host, topo_cfg_.port, {}, true}.addr()},
               {"reply", why},
               {"action", "asking again; check that redis.cluster names cluster nodes"}});
    return;
  }
  if (t->covered_slots() < kClusterSlots && topo_error_.empty())
    log_warn("cluster_slots_uncovered", {{"covered", t->covered_slots()},
                                         {"action", "rooms on uncovered slots wait for an owner"}});
  topo_error_.clear();
  log_debug("cluster_topology_read",
            {{"node", ClusterNode{topo_cfg_.host, topo_cfg_.port, {}, true}.addr()},
             {"shards", t->shards.size()},
             {"slots", t->covered_slots()}});
  apply(std::move(*t));
}

ClusterBus::Node &ClusterBus::node_for(const std::string &addr, const std::string &host,
                                       uint16_t port) {
  auto it = nodes_.find(addr);
  if (it != nodes_.end())
    return *it->second;
  std::unique_ptr<Node> n = make_node(host, port, false);
  Node &ref = *n;
  nodes_.emplace(addr, std::move(n));
  if (started_ && !stopping_)
    (void)ref.bus->start(); // a failed timer init leaves this node down, which /ready reports
  log_info("cluster_master_added", {{"node", addr}});
  return ref;
}

void ClusterBus::apply(ClusterTopology topology) {
  bool first = !have_topo_;
  topology_ = std::move(topology);
  have_topo_ = true;
  std::set<std::string> masters;
  for (const ClusterShard &s : topology_.shards) {
    masters.insert(s.master.addr());
    // Every master gets a bus, in use or not: each loads the Function library, so that a
    // backend's FCALL sidecar_publish works on every shard.
    node_for(s.master.addr(), s.master.host, s.master.port);
  }
  if (first)
    log_info("cluster_topology",
             {{"masters", masters.size()}, {"slots", topology_.covered_slots()}});

  // Sharded channels whose slot is now served elsewhere (or was unknown) move, each master's
  // in batches (one SSUBSCRIBE per slot and 100 channels): after a failover, thousands at once.
  std::vector<std::string> names;
  names.reserve(places_.size());
  for (const auto &[name, p] : places_)
    names.push_back(name);
  std::vector<RedisBus *> held;
  for (const auto &[addr, n] : nodes_) {
    n->bus->hold_subscribes();
    held.push_back(n->bus.get());
  }
  for (const std::string &name : names)
    place(name);
  for (RedisBus *bus : held)
    bus->release_subscribes();

  // Masters that are masters no more (failed over, removed) are let go once nothing is on them.
  std::vector<std::string> gone;
  for (const auto &[addr, n] : nodes_) {
    if (!masters.contains(addr) && n->channels.empty())
      gone.push_back(addr);
  }
  for (const std::string &addr : gone) {
    auto it = nodes_.find(addr);
    log_info("cluster_master_removed", {{"node", addr}});
    retire(std::move(it->second));
    nodes_.erase(it);
  }
}

// The master that owns `key`'s slot; null when the topology names none.
ClusterBus::Node *ClusterBus::master_of(std::string_view key) {
  if (!have_topo_)
    return nullptr;
  const ClusterShard *s = topology_.shard_of(cluster_slot(key));
  if (s == nullptr)
    return nullptr;
  return &node_for(s->master.addr(), s->master.host, s->master.port);
}

// A node bus is stopped at once and freed a tick later: its handles close in the next loop turn,
// and it may be the one whose callback is on the stack. Reads it held are sent again elsewhere.
void ClusterBus::retire(std::unique_ptr<Node> node) {
  retired_reconnects_ += node->bus->reconnects();
  node->bus->stop();
  for (auto &[token, read] : reads_) {
    if (read.node == node->addr) {
      read.node.clear();
      read.inner = 0;
    }
  }
  retired_.emplace_back(uv_now(loop_), std::move(node));
}

void ClusterBus::rotate_global() {
  HostPort next = next_candidate();
  std::string addr = ClusterNode{next.host, next.port, {}, true}.addr();
  if (addr == global_->addr)
    return;
  log_warn("cluster_subscriber_moved",
           {{"from", global_->addr},
            {"to", addr},
            {"reason", global_->bus->last_error()},
            {"action", "subscribing every channel again on another node"}});
  std::unique_ptr<Node> old = std::move(global_);
  global_ = make_node(next.host, next.port, true);
  for (const std::string &ch : global_channels_)
    global_->bus->subscribe(ch);
  if (started_ && !stopping_)
    (void)global_->bus->start();
  retire(std::move(old));
  // Global rooms missed what was published while no node relayed it to us.
  if (!cfg_.sharded() && global_was_up_)
    sink_.on_subscriber_reconnected();
}

// ----------------------------------------------------------------------------- subscriptions

void ClusterBus::subscribe(const std::string &channel) {
  if (!cfg_.sharded()) {
    global_channels_.insert(channel);
    global_->bus->subscribe(channel);
    return;
  }
  places_.try_emplace(channel);
  place(channel);
}

void ClusterBus::unsubscribe(const std::string &channel) {
  if (!cfg_.sharded()) {
    global_channels_.erase(channel);
    global_->bus->unsubscribe(channel);
    return;
  }
  auto it = places_.find(channel);
  if (it == places_.end())
    return;
  if (auto n = nodes_.find(it->second.node); n != nodes_.end()) {
    n->second->channels.erase(channel);
    n->second->bus->unsubscribe(channel);
  }
  places_.erase(it);
}

// Puts a sharded channel on the master that owns its slot now, leaving the one it was on.
void ClusterBus::place(const std::string &channel) {
  auto it = places_.find(channel);
  if (it == places_.end())
    return;
  Node *owner = master_of(channel);
  std::string to = owner != nullptr ? owner->addr : std::string();
  if (to == it->second.node)
    return;
  if (log_enabled(LogConfig::Level::debug))
    log_debug("cluster_channel_placed",
              {{"channel", channel}, {"from", it->second.node}, {"to", to}});
  if (auto n = nodes_.find(it->second.node); n != nodes_.end()) {
    if (n->second->bus->subscribed(channel))
      tell_lost(channel);
    n->second->channels.erase(channel);
    n->second->bus->unsubscribe(channel);
  }
  it = places_.find(channel); // the sink may have unsubscribed it
  if (it == places_.end())
    return;
  it->second.node = to;
  if (owner != nullptr) {
    owner->channels.insert(channel);
    owner->bus->subscribe(channel);
  }
}

void ClusterBus::tell_lost(const std::string &channel) {
  auto it = places_.find(channel);
  if (it == places_.end() || it->second.lost_told)
    return;
  it->second.lost_told = true;
  sink_.on_subscription_lost(channel);
}

bool ClusterBus::subscribed(const std::string &channel) const {
  if (!cfg_.sharded())
    return global_->bus->subscribed(channel);
  auto it = places_.find(channel);
  if (it == places_.end())
    return false;
  auto n = nodes_.find(it->second.node);
  return n != nodes_.end() && n->second->bus->subscribed(channel);
}

void ClusterBus::node_message(Node &, std::string_view channel, std::string_view payload) {
  sink_.on_redis_message(channel, payload);
}

void ClusterBus::node_state(Node &n, bool up) {
  if (n.global) {
    if (up)
      global_was_up_ = true;
    sink_.on_redis_state(up);
    return;
  }
  if (up)
    return;
  // A master's links dropped: what is published on its channels is lost until they are
  // subscribed again, here (it comes back) or at its promoted replica (the topology says).
  log_warn("cluster_master_down", {{"node", n.addr},
                                   {"reason", n.bus->last_error()},
                                   {"channels", n.channels.size()},
                                   {"action", "reading the topology until a master serves it"}});
  for (const std::string &ch : std::vector<std::string>(n.channels.begin(), n.channels.end()))
    tell_lost(ch);
  request_refresh("master down");
}

void ClusterBus::node_subscribed(Node &n, std::string_view channel) {
  if (n.global) {
    sink_.on_subscribed(channel);
    return;
  }
  auto it = places_.find(std::string(channel));
  if (it == places_.end() || it->second.node != n.addr)
    return; // confirmed where it no longer belongs; place() already asked to leave
  it->second.lost_told = false;
  sink_.on_subscribed(channel);
}

void ClusterBus::node_reconnected(Node &n) {
  if (n.global) {
    if (!cfg_.sharded())
      sink_.on_subscriber_reconnected();
    return;
  }
  for (const std::string &ch : std::vector<std::string>(n.channels.begin(), n.channels.end()))
    tell_lost(ch);
}

// Redis ended a sharded subscription (the slot moved) or refused it with MOVED: the channel
// leaves this node and waits for the topology to name its owner.
void ClusterBus::node_lost(Node &n, std::string_view channel) {
  std::string name(channel);
  auto it = places_.find(name);
  if (it == places_.end() || it->second.node != n.addr)
    return;
  tell_lost(name);
  it = places_.find(name);
  if (it == places_.end())
    return;
  n.channels.erase(name);
  n.bus->unsubscribe(name);
  it->second.node.clear();
  request_refresh("slot moved");
}

} // namespace sidecar
