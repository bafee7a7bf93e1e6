// Metrics: the counters and histograms behind /metrics, as plain integers (one thread).
// Rendering to Prometheus text lives in metrics.cpp.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

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

struct Metrics {
  uint64_t connections_accepted = 0;
  uint64_t connections_upgraded = 0;
  std::map<std::string, uint64_t> refused; // reason -> count
  PublishCounters publish;
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
  uint64_t internal_errors = 0; // exceptions caught at a callback entry (guard.h)
};

std::string render_prometheus(const Metrics &m, const MetricsSnapshot &s);

} // namespace sidecar
