// ClusterBus: the sidecar's links to a Redis Cluster (issue 13), beside RedisBus, which serves
// one Redis. hiredis 0.14 has no cluster support, so topology and routing are ours:
//
// - Topology: one command link asks CLUSTER SHARDS (CLUSTER SLOTS before Redis 7) of any node
//   that answers (the seeds, then every node it has learnt), at start, on every MOVED, every
//   `sunsubscribe` push, every master link that drops, and every 10 s. ClusterTopology parses it.
// - One RedisBus per master (a Node), which brings everything the single-Redis path has per
//   node: backoff with jitter, silent-link probes, AUTH, the Function library loaded on every
//   connect (so on every master), coalesced history reads, refused channels retried alone.
// - Commands go to the master of their slot (cluster_bus_commands.cpp): XADD by its stream key,
//   history reads by channel (the history keys hash-tag the channel, so they share its slot). An
//   XADD is kept until answered: MOVED sends it to the node named (and refreshes the topology),
//   ASK to the node named after ASKING, TRYAGAIN or CLUSTERDOWN a moment later, until
//   redis.reply_timeout_ms after it was asked; then its message is lost and logged. A read
//   answered with any of these waits for a fresh topology and is sent again, within the same
//   deadline.
// - Global pub/sub: one more RedisBus (`global_`) on any reachable node SUBSCRIBEs every room's
//   channel (a PUBLISH on any node reaches every node of a cluster); it moves to another node
//   when its own stays unreachable.
// - Sharded pub/sub: each room's channel is SSUBSCRIBEd on the master that owns its slot, by that
//   master's RedisBus. When the slot moves (Redis pushes `sunsubscribe`, or answers MOVED) or the
//   master fails, the room is told its subscription was lost and the channel is subscribed at
//   the owner the next topology names; a history room then reads its gap, others get `resync`.
//   The control channel and the connection pattern stay global, on `global_`.
#pragma once

#include <uv.h>

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "cluster_topology.h"
#include "config.h"
#include "message_bus.h"
#include "redis_bus.h"
#include "redis_link.h"

namespace sidecar {

class ClusterBus final : public MessageBus, private RedisLink::Owner {
public:
  // `cfg.cluster` must not be empty; `history` must have passed check_history.
  ClusterBus(uv_loop_t *loop, const RedisConfig &cfg, RedisSink &sink,
             std::vector<HistoryConfig> history = {});
  ClusterBus(const ClusterBus &) = delete;
  ClusterBus &operator=(const ClusterBus &) = delete;
  ~ClusterBus() override;

  void set_control_channel(std::string channel) override;
  void set_connection_pattern(std::string pattern) override;
  int start() override;
  void stop() override;

  void subscribe(const std::string &channel) override;
  void unsubscribe(const std::string &channel) override;
  bool subscribed(const std::string &channel) const override;

  bool xadd(const std::string &stream, uint32_t maxlen,
            const std::vector<std::pair<std::string, std::string>> &fields) override;

  HistoryReadToken read_history(std::string channel, uint64_t from, uint32_t count,
                                HistoryReadCallback cb) override;
  HistoryReadToken read_history_shared(std::string channel, uint64_t from, uint32_t count,
                                       HistoryReadCallback cb) override;
  void cancel_history_read(HistoryReadToken token) override;

  bool history_enabled() const override { return !history_.empty(); }
  bool history_ready() const override;
  bool history_refusing() const override;
  std::string history_error() const override;
  uint64_t reads_sent() const override;
  uint64_t reads_coalesced() const override;

  // Every room's subscriptions can be made: the topology is known, the global subscriber is up
  // and (sharded) every master that holds a room's channel is reachable.
  bool connected() const override;
  bool command_connected() const override;
  uint64_t reconnects() const override;
  size_t subscribed_channels() const override;
  // Why connected() is false, naming the shards that are not reachable.
  std::string last_error() const override;
  size_t refused_channels() const override;
  bool refused(const std::string &channel) const override;
  std::string last_refusal() const override;
  const std::map<std::string, uint64_t> &subscribe_errors() const override;

  // Presence is not routed on a cluster yet; the config refuses presence with redis.cluster, so
  // nothing calls these with effect.
  void set_presence(PresenceLink *) override {}
  bool presence_send(std::span<const std::string_view>, uint64_t) override { return false; }

  // The masters this bus has a link to, by address, and whether each is reachable.
  std::map<std::string, bool> masters() const;
  uint64_t topology_refreshes() const { return topology_refreshes_; }
  // The global subscriber and every master, each with its own counters.
  std::vector<RedisNodeStats> node_stats() const override;
  ClusterStats cluster_stats() const override;

private:
  class NodeSink;
  // One Redis node: its RedisBus and the sink through which that bus speaks to us.
  struct Node {
    std::string addr;
    RedisConfig cfg;
    std::unique_ptr<NodeSink> sink;
    std::unique_ptr<RedisBus> bus;
    std::set<std::string> channels; // sharded channels placed here
    bool global = false;
  };

  // Where a sharded channel is subscribed: at `node`, or "" while its owner is unknown.
  struct Place {
    std::string node;
    bool lost_told = false; // the sink was told on_subscription_lost and not yet on_subscribed
  };
  struct Read {
    std::string channel;
    uint64_t from = 0;
    uint32_t count = 0;
    bool shared = false;
    HistoryReadCallback cb;
    std::string node;           // where it was sent; "" while it waits for an owner
    HistoryReadToken inner = 0; // the node bus's token
    uint32_t redirects = 0;
    uint64_t asked_ms = 0;
    uint64_t retry_at_ms = 0;
  };
  // An inbound message's XADD, kept until Redis takes it so that a redirect can send it on.
  struct Append {
    std::string stream;
    uint32_t maxlen = 0;
    std::vector<std::pair<std::string, std::string>> fields;
    std::string node; // where it was sent; "" while it waits for an owner
    uint32_t redirects = 0;
    uint64_t asked_ms = 0;
    uint64_t sent_ms = 0;
    uint64_t retry_at_ms = 0;
  };

  // RedisLink::Owner, for the topology link.
  void on_link_up(RedisLink &link) override;
  void on_link_down(RedisLink &link, bool was_up) override;
  void on_link_reply(RedisLink &link, const RedisPending &cmd, const redisReply &reply) override;
  void on_link_message(std::string_view, std::string_view, std::string_view) override {}

  // What the node buses tell us (NodeSink forwards here).
  void node_message(Node &n, std::string_view channel, std::string_view payload);
  void node_state(Node &n, bool up);
  void node_subscribed(Node &n, std::string_view channel);
  void node_reconnected(Node &n);
  void node_lost(Node &n, std::string_view channel);
  void node_xadd_answered(Node &n, uint64_t tag, const redisReply &reply);

  static void on_timer(uv_timer_t *t);
  void tick();
  void request_refresh(const char *why);
  void send_refresh();
  void apply(ClusterTopology topology);
  Node *master_of(std::string_view key);
  // Every link the node has started is up (a master's subscriber link starts on demand).
  static bool reachable(const Node &n) {
    return n.bus->command_connected() && (!n.bus->subscriber_started() || n.bus->connected());
  }
  Node &node_for(const std::string &addr, const std::string &host, uint16_t port);
  std::unique_ptr<Node> make_node(const std::string &host, uint16_t port, bool global);
  void retire(std::unique_ptr<Node> node);
  void place(const std::string &channel);
  void tell_lost(const std::string &channel);
  void rotate_global();
  HostPort next_candidate();
  HistoryReadToken ask(Read read);
  void dispatch(HistoryReadToken token);
  void read_done(HistoryReadToken token, const HistoryReadResult &result);
  void fail_waiting_reads(uint64_t now);
  bool send_append(uint64_t tag, Append &a, Node &n, bool asking);
  void lose_append(std::map<uint64_t, Append>::iterator it, std::string why);
  void retry_appends(uint64_t now);

  uv_loop_t *loop_;
  RedisConfig cfg_;
  RedisSink &sink_;
  std::vector<HistoryConfig> history_;
  uv_timer_t timer_{};
  bool timer_init_ = false;
  bool started_ = false;
  bool stopping_ = false;

  RedisConfig topo_cfg_; // the topology link's node; moved to the next candidate on failure
  RedisLink topo_;
  bool use_slots_ = false; // the cluster does not know CLUSTER SHARDS (before Redis 7)
  bool refresh_wanted_ = true;
  bool refresh_in_flight_ = false;
  uint64_t last_refresh_ms_ = 0;
  uint64_t topology_refreshes_ = 0;
  std::string topo_error_; // why there is no usable topology; "" once there is
  ClusterTopology topology_;
  bool have_topo_ = false;
  size_t candidate_ = 0;

  std::string control_;
  std::string pattern_;
  std::unique_ptr<Node> global_; // the global subscriber (control, pattern; rooms when global)
  bool global_was_up_ = false;
  uint64_t global_down_since_ms_ = 0;
  std::map<std::string, std::unique_ptr<Node>> nodes_;              // masters, by address
  std::vector<std::pair<uint64_t, std::unique_ptr<Node>>> retired_; // freed a tick after stop()
  std::unordered_map<std::string, Place> places_;                   // sharded rooms' channels
  std::set<std::string> global_channels_;                           // global rooms' channels

  std::map<HistoryReadToken, Read> reads_;
  HistoryReadToken next_token_ = 1;
  std::map<uint64_t, Append> appends_; // by the tag their XADD was sent with
  uint64_t next_append_ = 1;
  uint64_t appends_lost_ = 0;
  uint64_t appends_redirected_ = 0;
  uint64_t retired_reconnects_ = 0; // of node buses let go, so that reconnects() never drops
  mutable std::map<std::string, uint64_t> errors_; // subscribe_errors() summed over nodes
};

// The bus the configuration asks for: a ClusterBus when redis.cluster is set, else a RedisBus.
std::unique_ptr<MessageBus> make_bus(uv_loop_t *loop, const RedisConfig &cfg, RedisSink &sink,
                                     std::vector<HistoryConfig> history);

} // namespace sidecar
