// Prometheus text rendering of Metrics; names follow Prometheus conventions (sidecar_ prefix,
// _total counters, _seconds and _bytes units).
#include "metrics.h"

#include <cstdio>

#include "history.h"

namespace sidecar {
namespace {

void line(std::string &out, const char *name, const char *type, const char *help) {
  out.append("# HELP ").append(name).append(" ").append(help).append("\n");
  out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
}

void value(std::string &out, const std::string &name, double v) {
  char buf[64];
  snprintf(buf, sizeof buf, "%.17g", v);
  out.append(name).append(" ").append(buf).append("\n");
}

void counter(std::string &out, const char *name, const char *help, uint64_t v) {
  line(out, name, "counter", help);
  value(out, name, static_cast<double>(v));
}

void gauge(std::string &out, const char *name, const char *help, double v) {
  line(out, name, "gauge", help);
  value(out, name, v);
}

void histogram(std::string &out, const char *name, const char *help, const Histogram &h) {
  line(out, name, "histogram", help);
  uint64_t cum = 0;
  for (size_t i = 0; i < Histogram::kBounds.size(); ++i) {
    cum += h.buckets[i];
    char le[32];
    snprintf(le, sizeof le, "%g", Histogram::kBounds[i]);
    value(out, std::string(name) + "_bucket{le=\"" + le + "\"}", static_cast<double>(cum));
  }
  value(out, std::string(name) + "_bucket{le=\"+Inf\"}", static_cast<double>(h.count));
  value(out, std::string(name) + "_sum", h.sum);
  value(out, std::string(name) + "_count", static_cast<double>(h.count));
}

void by_reason(std::string &out, const char *name, const char *label,
               const std::array<uint64_t, 8> &counts, std::initializer_list<ResyncReason> reasons) {
  for (ResyncReason r : reasons) {
    value(out, std::string(name) + "{" + label + "=\"" + resync_reason_name(r) + "\"}",
          static_cast<double>(counts[static_cast<size_t>(r)]));
  }
}

// Rendered only with history configured, so a sidecar without it shows no series it cannot move.
// A label value as Prometheus reads it: backslash, quote and newline escaped.
std::string label(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\' || c == '"')
      out.push_back('\\');
    if (c == '\n')
      out.append("\\n");
    else
      out.push_back(c);
  }
  return out;
}

// A cluster's nodes, one series each, and the cluster's own counters.
void render_cluster(std::string &out, const MetricsSnapshot &s) {
  auto each = [&](const char *name, const char *type, const char *help, auto get) {
    line(out, name, type, help);
    for (const RedisNodeStats &n : s.redis_nodes) {
      value(out, std::string(name) + "{node=\"" + label(n.node) + "\",role=\"" + n.role + "\"}",
            static_cast<double>(get(n)));
    }
  };
  each("sidecar_redis_node_up", "gauge",
       "1 when every link to this Redis Cluster node is connected (role: master, or the global "
       "subscriber).",
       [](const RedisNodeStats &n) { return n.up ? 1 : 0; });
  each("sidecar_redis_node_reconnects_total", "counter", "Successful reconnects to this node.",
       [](const RedisNodeStats &n) { return n.reconnects; });
  each("sidecar_redis_node_subscriptions", "gauge", "Channels subscribed on this node.",
       [](const RedisNodeStats &n) { return n.subscriptions; });
  counter(out, "sidecar_redis_cluster_topology_refreshes_total",
          "Cluster topology answers read (CLUSTER SHARDS or CLUSTER SLOTS).",
          s.cluster.topology_refreshes);
  counter(out, "sidecar_inbound_redirects_total",
          "Inbound XADDs sent on after MOVED, ASK, TRYAGAIN or CLUSTERDOWN.",
          s.cluster.appends_redirected);
  counter(out, "sidecar_inbound_lost_total",
          "Inbound XADDs given up on a cluster (redirected too often or too long, or their link "
          "dropped with them in flight); each is logged as inbound_append_failed.",
          s.cluster.appends_lost);
}

void render_history(std::string &out, const HistoryCounters &h, const MetricsSnapshot &s) {
  using R = ResyncReason;
  line(out, "sidecar_resumes_total", "counter",
       "Channels clients asked to resume, by result: recovered, or the resync reason.");
  value(out, "sidecar_resumes_total{result=\"recovered\"}",
        static_cast<double>(h.resumes_recovered));
  by_reason(out, "sidecar_resumes_total", "result", h.resumes_refused,
            {R::epoch_changed, R::trimmed, R::too_many, R::bad_position, R::unavailable});
  counter(out, "sidecar_replayed_messages_total",
          "Messages read from history and queued to clients (resumes and gap reads).",
          h.replayed_messages);
  line(out, "sidecar_resyncs_sent_total", "counter",
       "Resync messages queued to clients, by reason.");
  by_reason(out, "sidecar_resyncs_sent_total", "reason", h.resyncs_sent,
            {R::epoch_changed, R::trimmed, R::too_many, R::bad_position, R::unavailable,
             R::redis_reconnected});
  counter(out, "sidecar_history_gap_reads_total",
          "Room reads after a missing position or a subscriber reconnect.", h.gap_reads);
  counter(out, "sidecar_history_reads_total", "FCALL sidecar_read commands sent to Redis.",
          s.history_reads);
  counter(out, "sidecar_history_reads_coalesced_total",
          "History reads answered by another waiter's FCALL instead of their own.",
          s.history_reads_coalesced);
  counter(out, "sidecar_history_reads_stale_total",
          "Resume reads that shared an FCALL older than their room's position and read again.",
          h.stale_shared_reads);
  counter(out, "sidecar_live_malformed_total",
          "Live messages whose sidecar header was broken; dropped.", h.live_malformed);
  counter(out, "sidecar_live_duplicates_total",
          "Positioned live messages a room had delivered already; dropped.", h.live_duplicates);
}

void render_compression(std::string &out, const CompressionCounters &c) {
  counter(out, "sidecar_deflate_negotiated_total",
          "Connections whose handshake agreed permessage-deflate.", c.negotiated);
  counter(out, "sidecar_deflate_frames_built_total",
          "Compressed frames built: at most one per publication and window size, whatever the "
          "number of recipients.",
          c.frames_built);
  counter(out, "sidecar_deflate_bytes_before_total",
          "Payload bytes of the publications those frames compressed.", c.bytes_before);
  counter(out, "sidecar_deflate_bytes_after_total", "Compressed payload bytes of those frames.",
          c.bytes_after);
  counter(out, "sidecar_deflate_not_smaller_total",
          "Publications sent plain to compressing clients because deflate did not shrink them "
          "(or failed).",
          c.not_smaller);
  counter(out, "sidecar_deflate_frames_queued_total", "Compressed frames queued to recipients.",
          c.frames_queued);
  counter(out, "sidecar_deflate_bytes_saved_total",
          "Payload bytes compressed deliveries kept off the wire.", c.bytes_saved);
  line(out, "sidecar_deflate_seconds_total", "counter",
       "CPU time spent deflating publications: once per publication and window, whatever the "
       "number of recipients.");
  value(out, "sidecar_deflate_seconds_total", static_cast<double>(c.deflate_ns) / 1e9);
  line(out, "sidecar_inflate_errors_total", "counter",
       "Compressed client messages that could not be inflated, by kind (too_big: 1009, "
       "corrupt: 1007, no_memory: 1011).");
  for (size_t i = 0; i < c.inflate_errors.size(); ++i) {
    value(out,
          std::string("sidecar_inflate_errors_total{kind=\"") +
              CompressionCounters::kInflateErrors[i] + "\"}",
          static_cast<double>(c.inflate_errors[i]));
  }
}

} // namespace

void Metrics::count_refusal(int status) {
  switch (status) {
  case 400:
    refuse("bad_request");
    break;
  case 401:
    refuse("unauthorized");
    break;
  case 403:
    refuse("forbidden");
    break;
  case 404:
    refuse("not_found");
    break;
  case 405:
    refuse("method_not_allowed");
    break;
  case 408:
    refuse("handshake_timeout");
    break;
  case 426:
    refuse("unsupported_version");
    break;
  case 429:
    refuse("rate_limited");
    break;
  case 431:
    refuse("headers_too_large");
    break;
  case 503:
    refuse("unavailable");
    break;
  default:
    refuse("other");
    break;
  }
}

namespace {

// A code (UPPER_CASE) or result as one of `labels`, else "other": label values come from a
// fixed list only, never from anything a client sent.
template <size_t N> const char *label_of(std::string_view code, const char *const (&labels)[N]) {
  auto lower_equals = [](std::string_view upper, std::string_view label) {
    if (upper.size() != label.size())
      return false;
    for (size_t i = 0; i < upper.size(); ++i) {
      char c =
          upper[i] >= 'A' && upper[i] <= 'Z' ? static_cast<char>(upper[i] - 'A' + 'a') : upper[i];
      if (c != label[i])
        return false;
    }
    return true;
  };
  for (const char *known : labels) {
    if (lower_equals(code, known))
      return known;
  }
  return "other";
}

} // namespace

void Metrics::count_subscription(std::string_view code) {
  ++subscriptions[label_of(code, kSubscriptionResults)];
}

void Metrics::count_refresh(std::string_view code) {
  ++token_refreshes[code.empty() ? "ok" : label_of(code, kRefreshResults)];
}

std::string render_prometheus(const Metrics &m, const MetricsSnapshot &s) {
  std::string out;
  out.reserve(4096);
  gauge(out, "sidecar_connections_open", "WebSocket sessions currently open.",
        static_cast<double>(s.open_connections));
  counter(out, "sidecar_connections_accepted_total", "TCP connections accepted.",
          m.connections_accepted);
  counter(out, "sidecar_connections_upgraded_total", "Connections upgraded to WebSocket.",
          m.connections_upgraded);
  line(out, "sidecar_connections_refused_total", "counter",
       "Requests refused before or at the upgrade, by reason.");
  for (const char *reason : {"bad_request", "unauthorized", "forbidden", "not_found",
                             "method_not_allowed", "handshake_timeout", "unsupported_version",
                             "rate_limited", "headers_too_large", "unavailable", "other"}) {
    auto it = m.refused.find(reason);
    value(out, std::string("sidecar_connections_refused_total{reason=\"") + reason + "\"}",
          static_cast<double>(it == m.refused.end() ? 0 : it->second));
  }
  gauge(out, "sidecar_rooms", "Rooms with at least one member.", static_cast<double>(s.rooms));
  gauge(out, "sidecar_redis_subscriptions", "Channels subscribed on Redis.",
        static_cast<double>(s.redis_subscriptions));
  gauge(out, "sidecar_redis_connected", "1 when the subscriber connection to Redis is up.",
        s.redis_connected ? 1 : 0);
  gauge(out, "sidecar_redis_channels_refused",
        "Channels wanted by a room whose SUBSCRIBE Redis refused; each is retried with backoff.",
        static_cast<double>(s.redis_channels_refused));
  if (s.redis_subscribe_errors != nullptr) {
    line(out, "sidecar_redis_subscribe_errors_total", "counter",
         "SUBSCRIBE commands Redis answered with an error, by error code.");
    for (const auto &[code, n] : *s.redis_subscribe_errors) {
      value(out, "sidecar_redis_subscribe_errors_total{code=\"" + code + "\"}",
            static_cast<double>(n));
    }
  }
  counter(out, "sidecar_redis_reconnects_total", "Successful reconnects to Redis.",
          s.redis_reconnects);
  counter(out, "sidecar_redis_messages_total", "Messages received from Redis pub/sub.",
          m.publish.messages);
  counter(out, "sidecar_redis_messages_unrouted_total",
          "Messages from Redis for a room with no members left on this sidecar.",
          m.publish.unrouted);
  counter(out, "sidecar_frames_delivered_total", "Frames queued to recipients by fan-out.",
          m.publish.frames);
  counter(out, "sidecar_bytes_out_total", "Bytes written to client sockets.", m.bytes_out);
  gauge(out, "sidecar_queued_bytes", "Bytes queued for clients and not yet written.",
        static_cast<double>(s.queued_bytes));
  counter(out, "sidecar_slow_consumer_closes_total",
          "Sessions closed because they exceeded their outbound byte budget.",
          m.slow_consumer_closes);
  counter(out, "sidecar_pong_timeouts_total", "Sessions dropped for not answering pings.",
          m.pong_timeouts);
  counter(out, "sidecar_inbound_messages_total", "Messages received from clients.",
          m.inbound_messages);
  counter(out, "sidecar_inbound_rate_limited_total", "Client messages refused by the rate limit.",
          m.inbound_rate_limited);
  counter(out, "sidecar_inbound_forwarded_total", "Client messages appended to a Redis stream.",
          m.inbound_forwarded);
  line(out, "sidecar_subscriptions_total", "counter",
       "Client subscribe and unsubscribe requests, by result.");
  for (const char *result : Metrics::kSubscriptionResults) {
    auto it = m.subscriptions.find(result);
    value(out, std::string("sidecar_subscriptions_total{result=\"") + result + "\"}",
          static_cast<double>(it == m.subscriptions.end() ? 0 : it->second));
  }
  line(out, "sidecar_token_refreshes_total", "counter",
       "In-band token refreshes ({\"type\":\"refresh\"}), by result: ok or the refusal code.");
  for (const char *result : Metrics::kRefreshResults) {
    auto it = m.token_refreshes.find(result);
    value(out, std::string("sidecar_token_refreshes_total{result=\"") + result + "\"}",
          static_cast<double>(it == m.token_refreshes.end() ? 0 : it->second));
  }
  line(out, "sidecar_control_commands_total", "counter",
       "Control commands carried out on this sidecar, by op (disconnect, reconnect, refresh).");
  for (size_t i = 0; i < kControlOps; ++i) {
    value(out,
          std::string("sidecar_control_commands_total{op=\"") +
              control_op_name(static_cast<ControlOp>(i)) + "\"}",
          static_cast<double>(m.control.applied[i]));
  }
  line(out, "sidecar_control_refused_total", "counter",
       "Control commands refused without acting on anyone, by reason.");
  for (size_t i = 0; i < kControlRefusals; ++i) {
    value(out,
          std::string("sidecar_control_refused_total{reason=\"") +
              control_refusal_name(static_cast<ControlRefusal>(i)) + "\"}",
          static_cast<double>(m.control.refused[i]));
  }
  counter(out, "sidecar_control_sessions_total",
          "Sessions that control commands acted on (closed, told to reconnect or to refresh).",
          m.control.sessions);
  line(out, "sidecar_connection_messages_total", "counter",
       "Messages on this sidecar's connection channels: delivered to their session, or "
       "unrouted when it is not here.");
  value(out, "sidecar_connection_messages_total{result=\"delivered\"}",
        static_cast<double>(m.control.connection_delivered));
  value(out, "sidecar_connection_messages_total{result=\"unrouted\"}",
        static_cast<double>(m.control.connection_unrouted));
  histogram(out, "sidecar_handshake_duration_seconds",
            "Time from accept to the 101 response being queued.", m.handshake_seconds);
  histogram(out, "sidecar_fanout_latency_seconds",
            "Time from a Redis message arriving to its frame being written to a socket.",
            m.fanout_seconds);
  if (!s.redis_nodes.empty())
    render_cluster(out, s);
  if (s.history)
    render_history(out, m.history, s);
  render_compression(out, m.compression);
  if (s.presence) {
    gauge(out, "sidecar_presence_rooms", "Rooms whose members this sidecar tracks in Redis.",
          static_cast<double>(s.presence_rooms));
    counter(out, "sidecar_presence_writes_total",
            "FCALL sidecar_presence commands sent (one per room per tick or renewal).",
            s.presence_writes);
    counter(out, "sidecar_presence_write_failures_total",
            "Presence writes refused by Redis or lost with the link; their rooms are sent again "
            "in full.",
            s.presence_write_failures);
    counter(out, "sidecar_presence_events_total",
            "Join and leave events published by this sidecar's presence writes.",
            s.presence_events);
  }
  counter(out, "sidecar_internal_errors_total",
          "Exceptions caught at a callback entry; each cost at most one connection.",
          s.internal_errors);
  gauge(out, "sidecar_uptime_seconds", "Seconds since start.", s.uptime_s);
  return out;
}

} // namespace sidecar
