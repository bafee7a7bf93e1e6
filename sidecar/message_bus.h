// MessageBus: what the Server needs from its link to Redis, whichever shape Redis has. RedisBus
// serves one Redis (standalone, or one node of a cluster); ClusterBus serves a Redis Cluster
// through a RedisBus per master. The Server holds one or the other and calls only this.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bus_stats.h"
#include "history_reads.h"
#include "room.h"

struct redisReply;

namespace sidecar {

// What the bus tells presence (issue 15; presence_sync.h), when it is configured: the command
// link's ups and downs, and the replies to what it sent with presence_send.
class PresenceLink {
public:
  virtual void on_presence_link(bool up) = 0;
  virtual void on_presence_reply(uint64_t tag, const redisReply &reply) = 0;

protected:
  ~PresenceLink() = default;
};

class MessageBus : public Subscriber, public HistoryReads {
public:
  virtual ~MessageBus() = default;

  // Before start(); empty keeps each off. The pattern is given as Redis matches it (glob).
  virtual void set_control_channel(std::string channel) = 0;
  virtual void set_connection_pattern(std::string pattern) = 0;
  virtual int start() = 0; // a uv error or 0
  // Closes every link; no reconnects after this. Pending reads are forgotten, never answered.
  virtual void stop() = 0;

  // XADD stream MAXLEN ~ maxlen * field value ...; false when it cannot be sent now.
  virtual bool xadd(const std::string &stream, uint32_t maxlen,
                    const std::vector<std::pair<std::string, std::string>> &fields) = 0;

  virtual bool history_enabled() const = 0;
  virtual bool history_ready() const = 0;
  virtual bool history_refusing() const = 0;
  virtual std::string history_error() const = 0;
  virtual uint64_t reads_sent() const = 0;
  virtual uint64_t reads_coalesced() const = 0;

  // Subscriptions can be made: /ready is 503 while this is false.
  virtual bool connected() const = 0;
  virtual bool command_connected() const = 0;
  virtual uint64_t reconnects() const = 0;
  virtual size_t subscribed_channels() const = 0;
  virtual std::string last_error() const = 0;
  virtual size_t refused_channels() const = 0;
  virtual bool refused(const std::string &channel) const = 0;
  virtual std::string last_refusal() const = 0;
  virtual const std::map<std::string, uint64_t> &subscribe_errors() const = 0;
  // Per node, for /metrics: empty unless the bus speaks to more than one node.
  virtual std::vector<RedisNodeStats> node_stats() const { return {}; }
  virtual ClusterStats cluster_stats() const { return {}; }

  // Presence (issue 15): set before start(); `p` outlives the bus's links.
  virtual void set_presence(PresenceLink *p) = 0;
  // A command whose reply goes to the PresenceLink with `tag`; false when it cannot be sent.
  virtual bool presence_send(std::span<const std::string_view> args, uint64_t tag) = 0;
  bool presence_send(std::initializer_list<std::string_view> args, uint64_t tag) {
    return presence_send(std::span<const std::string_view>(args.begin(), args.size()), tag);
  }
};

} // namespace sidecar
