// Metrics: the counters and histograms behind /metrics, as plain integers (one thread).
// Rendering to Prometheus text lives in metrics.cpp.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "bus_stats.h"
#include "control.h"

namespace sidecar {

// A fixed-bucket histogram in seconds.
struct Histogram {
  static constexpr std::array<double, 12> kBounds = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                     0.01,   0.025,   0.05,   0.1,   0.25,   1.0};
  std::array<uint64_t, kBounds.size()> buckets{}; // not cumulative; cumulated when rendered
  uint64_t count = 0;
  double sum = 0;
  void observe(double seconds) {
    ++count;
    sum += seconds;
    for (size_t i = 0; i < kBounds.size(); ++i) {
      if (seconds <= kBounds[i]) {
        ++buckets[i];
        return;
      }
    }
  }
};

// Counted by Rooms::publish as each Redis message is routed.
struct PublishCounters {
  uint64_t messages = 0; // received from Redis pub/sub
  uint64_t unrouted = 0; // arrived for a room with no members left
  uint64_t frames = 0;   // queued to a recipient
};

// Counted by rooms and sessions on history channels (issue 11). Arrays are indexed by
// ResyncReason, so every reason is a fixed metric label.
struct HistoryCounters {
  uint64_t resumes_recovered = 0;            // channels a client resumed with nothing lost
  std::array<uint64_t, 8> resumes_refused{}; // channels a client asked to resume and was resynced
  std::array<uint64_t, 8> resyncs_sent{};    // resync messages queued, one per client
  uint64_t replayed_messages = 0;            // messages from history reads queued, one per client
  uint64_t gap_reads = 0;                    // room reads after a gap or a subscriber reconnect
  uint64_t live_malformed = 0;               // live messages with a broken sidecar header, dropped
  uint64_t live_duplicates = 0; // positioned live messages a room had delivered already
  // Resume reads that joined an FCALL already on the wire and found it older than the room's
  // position, so were asked again.
  uint64_t stale_shared_reads = 0;
};

// Control commands and connection channels (issue 15). Labels are control.h's fixed names.
struct ControlCounters {
  std::array<uint64_t, kControlOps> applied{};      // commands carried out, by op
  std::array<uint64_t, kControlRefusals> refused{}; // commands refused, by ControlRefusal
  uint64_t sessions = 0;                            // sessions the applied commands acted on
  uint64_t connection_delivered = 0; // messages on a connection channel queued to their session
  uint64_t connection_unrouted = 0;  // ... whose session is not (or no longer) here
};

// permessage-deflate (issue 14), counted where it happens: frames by the rooms that build them,
// deliveries and inflate errors by the sessions. Errors are indexed by Inflater::Status - 1
// (too_big, corrupt, no_memory), each a fixed metric label.
struct CompressionCounters {
  uint64_t negotiated = 0;    // connections whose handshake agreed permessage-deflate
  uint64_t frames_built = 0;  // compressed frames built, at most one per publication and window
  uint64_t bytes_before = 0;  // payload bytes of those frames before deflate
  uint64_t bytes_after = 0;   // and after
  uint64_t not_smaller = 0;   // publications sent plain because deflate did not shrink them
  uint64_t frames_queued = 0; // compressed frames queued, one per recipient
  uint64_t bytes_saved = 0;   // payload bytes those deliveries did not put on the wire
  uint64_t deflate_ns = 0;    // CPU time spent deflating publications (the loop thread's clock)
  std::array<uint64_t, 3> inflate_errors{};
  static constexpr const char *kInflateErrors[] = {"too_big", "corrupt", "no_memory"};
};

struct Metrics {
  uint64_t connections_accepted = 0;
  uint64_t connections_upgraded = 0;
  std::map<std::string, uint64_t> refused; // reason -> count
  PublishCounters publish;
  HistoryCounters history;
  ControlCounters control;
  CompressionCounters compression;
  uint64_t bytes_out = 0;
  uint64_t slow_consumer_closes = 0;
  uint64_t pong_timeouts = 0;
  uint64_t inbound_messages = 0;
  uint64_t inbound_rate_limited = 0;
  uint64_t inbound_forwarded = 0;
  // In-band token refreshes by result label (kRefreshResults).
  std::map<std::string, uint64_t> token_refreshes;
  Histogram handshake_seconds;
  Histogram fanout_seconds;

  void count_refusal(int status);
  void refuse(const std::string &reason) { ++refused[reason]; }
  // code: empty for a refresh that succeeded, else its refusal code (TokenCheck::code). Each
  // becomes its label in lower case; a code not in the list is counted as "other".
  void count_refresh(std::string_view code);
  // Subscribe and unsubscribe requests by result: subscribed, unsubscribed, revoked, or the
  // refusal's code (kSubscriptionResults, in lower case; anything else is "other").
  std::map<std::string, uint64_t> subscriptions;
  void count_subscription(std::string_view code);
  static constexpr const char *kSubscriptionResults[] = {
      "subscribed",        "unsubscribed",      "revoked",        "bad_channel",
      "bad_recover",       "forbidden_channel", "too_many_channels", "already_subscribed",
      "not_subscribed",    "subscriptions_disabled", "other"};
  static constexpr const char *kRefreshResults[] = {
      "ok", "unauthorized", "forbidden_org", "bad_user", "user_mismatch", "auth_disabled", "other"};
};

struct MetricsSnapshot {
  uint64_t open_connections = 0;
  uint64_t rooms = 0;
  uint64_t redis_subscriptions = 0;
  uint64_t redis_reconnects = 0;
  bool redis_connected = false;
  uint64_t redis_channels_refused = 0; // wanted channels whose SUBSCRIBE Redis refused
  // Refused SUBSCRIBEs by error code, every code present (RedisBus::subscribe_errors).
  const std::map<std::string, uint64_t> *redis_subscribe_errors = nullptr;
  double uptime_s = 0;
  uint64_t queued_bytes = 0;
  uint64_t internal_errors = 0;         // exceptions caught at a callback entry (guard.h)
  bool history = false;                 // history is configured: its metrics are rendered
  uint64_t history_reads = 0;           // FCALL sidecar_read written (RedisBus::reads_sent)
  uint64_t history_reads_coalesced = 0; // waiters that shared another's read
  bool presence = false;                // presence is configured: its metrics are rendered
  uint64_t presence_rooms = 0;          // rooms with members tracked here
  uint64_t presence_writes = 0;         // FCALL sidecar_presence written (PresenceSync)
  uint64_t presence_write_failures = 0; // error replies and writes lost with the link
  uint64_t presence_events = 0;         // join/leave published by this sidecar's writes
  std::vector<RedisNodeStats> redis_nodes; // a cluster's nodes (MessageBus::node_stats)
  ClusterStats cluster;                    // rendered when redis_nodes is not empty
};

std::string render_prometheus(const Metrics &m, const MetricsSnapshot &s);

} // namespace sidecar
