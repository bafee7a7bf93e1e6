// The load generator's publisher: paced PUBLISH (or SPUBLISH, or FCALL sidecar_publish) batches to
// Redis, or to the master of each room's slot on a Redis Cluster (or POSTs to an nchan-style HTTP
// publisher location), each payload carrying its room's sequence and a CLOCK_MONOTONIC timestamp.
// One Publisher is used by one thread at a time.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

struct redisContext;

namespace sidecar::bench {

struct PublishTarget {
  bool http = false;
  std::string host = "127.0.0.1";
  uint16_t port = 6379;
  std::string path_template = "/pub/{room}"; // http only; "{room}" becomes "r<index>"
  std::string channel_prefix = "org:";       // redis only: channel is prefix + "r<index>"
  // Redis only: publish with FCALL sidecar_publish 1 <channel> <payload> (history on) instead
  // of PUBLISH. Each reply is then the new position, or an error counted in PublishResult.
  bool fcall = false;
  // Redis only: host:port is a seed of a Redis Cluster; each room's publications go to the master
  // that owns its channel's slot (CLUSTER SLOTS, read once by connect()).
  bool cluster = false;
  // Redis only: SPUBLISH instead of PUBLISH, and PUBSUB SHARDNUMSUB to see the rooms subscribed
  // (a sidecar with redis.pubsub: sharded).
  bool sharded = false;
};

// What follows the parsed prefix {"seq":N,"room":"rI","t":T of every payload.
enum class PayloadKind : uint8_t {
  // ,"pad":"xxx...x"}: the historical filler, which deflate shrinks to almost nothing.
  pad,
  // Realistic JSON events of the kinds the seeds publish (SYNC_SUCCESS with details, workflow
  // updates, metrics updates with a list of items): ids, timestamps, numbers and names vary from
  // message to message, so they compress like real events (3-6x at 2 KiB), not like zeros.
  json,
};

struct PublishResult {
  uint64_t sent = 0;
  uint64_t errors = 0;   // Redis error replies or non-2xx HTTP answers
  double seconds = 0;    // wall time from the first to the last batch
  double max_lag_ms = 0; // how far the loop ever fell behind its schedule
  bool behind = false;   // achieved rate short of the target: the generator is the limit
  bool broken = false;   // connection lost
};

class Publisher {
public:
  Publisher(PublishTarget target, uint32_t rooms, size_t payload_bytes,
            PayloadKind kind = PayloadKind::pad);
  ~Publisher();
  Publisher(const Publisher &) = delete;
  Publisher &operator=(const Publisher &) = delete;

  bool connect(std::string &error);
  // Publishes `per_second` messages a second for `seconds`, round-robin over the rooms, until
  // done or `stop` is set. Blocks; run it on its own thread.
  PublishResult run(double per_second, double seconds, const std::atomic<bool> &stop);
  // Sends `messages` at once, round-robin over the rooms from where the last send stopped, in
  // pipelined batches without pacing; false when the connection broke.
  bool burst(uint64_t messages, PublishResult &result);
  // Messages sent so far to each room; read it only while run() is not running.
  const std::vector<uint64_t> &published() const { return published_; }
  // Redis only: whether every room's channel has at least one subscriber (PUBSUB NUMSUB, or
  // SHARDNUMSUB at the channel's master when sharded; without it, on a cluster, at any node).
  bool all_subscribed(uint32_t &subscribed, std::string &error);
  // Redis only: one numeric field of INFO commandstats, e.g. ("fcall", "calls"), of the first
  // node; -1 when absent or on error.
  long long command_stat(const char *command, const char *field);

private:
  size_t format(uint32_t room, uint64_t seq, char *out);
  bool send_redis(uint32_t count, PublishResult &result);
  bool send_http(uint32_t count, PublishResult &result);
  bool read_http_answers(uint32_t count, PublishResult &result);

  PublishTarget target_;
  uint32_t rooms_;
  size_t payload_bytes_;
  PayloadKind kind_;
  std::vector<std::string> tails_; // json: the events' bodies after the prefix, used in turn
  size_t max_payload_ = 0;         // the largest payload format() writes
  // Redis only: one link per node (the one Redis, or each master of a cluster), and per room the
  // index of the node its channel lives on (always 0 without a cluster).
  std::vector<redisContext *> nodes_;
  std::vector<uint32_t> node_of_;
  int http_fd_ = -1;
  std::string http_in_;
  std::string out_;
  uint64_t next_message_ = 0; // round-robin position over rooms
  std::vector<uint64_t> published_;
  std::vector<std::string> names_; // per room: the Redis channel, or the HTTP request head up to
                                   // the Content-Length value
};

} // namespace sidecar::bench
