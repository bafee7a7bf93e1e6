// HTTP endpoints served beside the WebSocket routes (or on admin.listen): /health, /ready,
// /metrics, /api/websocket/status, /dashboard (dashboard.cpp), /ws/config, and the client
// library at /client.js and /client.d.ts (client_js.cpp). Bodies are small and
// built with nlohmann::json; none of this is on the fan-out path. They carry strings that clients
// sent (user agents, addresses, users), so they are written by json_text(), which cannot throw on
// bad bytes.
#include <nlohmann/json.hpp>
#include <openssl/crypto.h>

#include <chrono>
#include <ctime>

#include "client_js.h"
#include "clock.h"
#include "dashboard.h"
#include "guard.h"
#include "json_text.h"
#include "log.h"
#include "origin.h"
#include "server.h"
#include "text.h"

namespace sidecar {
namespace {

HttpAnswer json_answer(int status, const nlohmann::json &j) {
  HttpAnswer a;
  a.status = status;
  a.body = json_text(j) + "\n";
  return a;
}

size_t number_param(const HttpRequest &req, std::string_view name, size_t dflt, size_t max) {
  auto v = req.query_param(name);
  if (!v || v->empty() || v->size() > 9)
    return dflt;
  for (char c : *v) {
    if (c < '0' || c > '9')
      return dflt;
  }
  size_t n = std::stoul(*v);
  return n > max ? max : n;
}

// /metrics, /api/websocket/status, /api/presence and /dashboard may require the admin token:
// the refusal, or nothing when the request may pass.
std::optional<HttpAnswer> admin_refusal(const HttpRequest &req, const std::string &token) {
  if (token.empty())
    return std::nullopt;
  const std::string *auth = req.header("authorization");
  std::string want = "Bearer " + token;
  if (auth != nullptr && auth->size() == want.size() &&
      CRYPTO_memcmp(auth->data(), want.data(), want.size()) == 0)
    return std::nullopt;
  HttpAnswer a = json_error(401, "UNAUTHORIZED", "send Authorization: Bearer <admin.token>");
  a.headers.emplace_back("WWW-Authenticate", "Bearer");
  return a;
}

// A channel name as /api/presence takes it: what a template expands to from org ids and token
// subjects, printable ASCII without spaces or braces (braces would break the key's hash tag).
bool is_channel_param(std::string_view c) {
  if (c.empty() || c.size() > 512)
    return false;
  for (char ch : c) {
    if (ch <= 0x20 || ch >= 0x7F || ch == '{' || ch == '}')
      return false;
  }
  return true;
}

} // namespace

bool Server::is_endpoint(std::string_view path) const {
  return is_public_endpoint(path) || path == "/metrics" || path == "/api/websocket/status" ||
         path == "/api/presence" || path == "/dashboard";
}

// What the main listener answers even when admin.listen takes the rest elsewhere: probes,
// discovery and the client library, which browsers and load balancers fetch without the admin
// token.
bool Server::is_public_endpoint(std::string_view path) const {
  return path == "/health" || path == "/ready" || path == "/ws/config" || path == "/client.js" ||
         path == "/client.d.ts";
}

std::string Server::ready_reason() const {
  if (shutting_down_)
    return "shutting down";
  if (!main_.is_open())
    return "not listening";
  if (!bus_.connected()) {
    return "redis unreachable" + (bus_.last_error().empty() ? "" : ": " + bus_.last_error());
  }
  // Every session needs the broadcast channel, so its refusal is the whole sidecar's problem. A
  // refused room channel is not: rooms are named by clients, and a 503 would let one client take
  // every sidecar out of rotation by joining a room the ACL forbids (see degraded_reason).
  const std::string &broadcast = cfg_->channels.broadcast;
  if (!broadcast.empty() && bus_.refused(broadcast))
    return "redis refuses SUBSCRIBE " + broadcast + ": " + bus_.last_refusal();
  return "";
}

std::string Server::degraded_reason() const {
  // History that cannot load is degraded, not 503: the cause (an ACL without +function, a Redis
  // before 7) is the same for every sidecar on this Redis, so a 503 would take all of them out
  // of rotation and turn lost resumes into lost live delivery. Clients are told instead: every
  // resume and gap read ends in a resync with reason unavailable.
  if (bus_.history_enabled() && !bus_.history_ready()) {
    if (bus_.history_refusing())
      return "history unavailable: the Redis Function library is not loaded (" +
             bus_.history_error() + "); resumes and gap reads resync with reason unavailable";
    // Briefly, after every (re)connect of the command link: resumes wait for it (up to
    // redis.reply_timeout_ms) rather than fail.
    return bus_.command_connected()
               ? "history not ready yet: loading the Redis Function library" +
                     (bus_.history_error().empty() ? "" : " (" + bus_.history_error() + ")")
               : "history not ready yet: the Redis command link is reconnecting";
  }
  size_t n = bus_.refused_channels();
  if (n == 0)
    return "";
  return "redis refused SUBSCRIBE for " + std::to_string(n) + (n == 1 ? " channel" : " channels") +
         ", retrying with backoff; those rooms receive nothing meanwhile: " + bus_.last_refusal();
}

HttpAnswer Server::endpoint(const HttpRequest &req, bool admin_listener) {
  if (req.method != "GET" && req.method != "HEAD") {
    HttpAnswer a = json_error(405, "METHOD_NOT_ALLOWED", "endpoints answer GET only");
    a.headers.emplace_back("Allow", "GET");
    return a;
  }
  if (req.path == "/health") {
    size_t open = counts_.total();
    return json_answer(
        200,
        {{"status", "ok"}, {"connections", open}, {"uptime_s", (now_ms() - started_ms_) / 1000}});
  }
  if (req.path == "/ready") {
    std::string why = ready_reason();
    if (why.empty()) {
      std::string degraded = degraded_reason();
      if (degraded.empty())
        return json_answer(200, {{"status", "ready"}});
      return json_answer(200, {{"status", "ready"}, {"degraded", degraded}});
    }
    return json_answer(503, {{"status", "not_ready"}, {"reason", why}});
  }
  if (req.path == "/ws/config")
    return config_endpoint(req);
  if (req.path == "/client.js" || req.path == "/client.d.ts") {
    // Pages import the client from the origin they open sockets to, which is the main listener.
    // The admin listener is for operators and their tools; serving page assets there would only
    // invite exposing it to browsers.
    if (admin_listener)
      return json_error(404, "NOT_FOUND", "the client library is served on the main listener");
    std::string if_none_match = req.header_list("if-none-match");
    return req.path == "/client.js" ? client_js_answer(if_none_match)
                                    : client_dts_answer(if_none_match);
  }
  if (admin_listener && !is_endpoint(req.path)) {
    return json_error(404, "NOT_FOUND", "no such endpoint");
  }
  if (std::optional<HttpAnswer> refused = admin_refusal(req, cfg_->admin.token))
    return *refused;
  if (req.path == "/metrics") {
    MetricsSnapshot snap;
    snap.open_connections = counts_.total();
    snap.rooms = rooms_.size();
    snap.redis_subscriptions = bus_.subscribed_channels();
    snap.redis_reconnects = bus_.reconnects();
    snap.redis_connected = bus_.connected();
    snap.redis_channels_refused = bus_.refused_channels();
    snap.redis_subscribe_errors = &bus_.subscribe_errors();
    snap.redis_nodes = bus_.node_stats();
    snap.cluster = bus_.cluster_stats();
    snap.history = bus_.history_enabled();
    snap.history_reads = bus_.reads_sent();
    snap.history_reads_coalesced = bus_.reads_coalesced();
    snap.presence = presence_.enabled();
    snap.presence_rooms = presence_.rooms();
    snap.presence_writes = presence_.writes_sent();
    snap.presence_write_failures = presence_.write_failures();
    snap.presence_events = presence_.events();
    snap.uptime_s = static_cast<double>(now_ms() - started_ms_) / 1000.0;
    snap.internal_errors = internal_errors_total();
    for (auto &[id, s] : sessions_)
      snap.queued_bytes += s->queued_bytes();
    HttpAnswer a;
    a.content_type = "text/plain; version=0.0.4; charset=utf-8";
    a.body = render_prometheus(metrics_, snap);
    return a;
  }
  if (req.path == "/dashboard")
    return dashboard_answer();
  return status_endpoint(req);
}

// Who is in a room across every sidecar, read from Redis (presence.h): the one endpoint whose
// answer waits for Redis, so the session is looked up again by id when the reply comes; one that
// is gone by then (closed, timed out) is not answered.
void Server::presence_endpoint(Session &s, const HttpRequest &req) {
  bool head = req.method == "HEAD";
  auto reply = [&s, head](HttpAnswer a) {
    a.head_only = head;
    s.answer(a);
  };
  if (req.method != "GET" && !head) {
    HttpAnswer a = json_error(405, "METHOD_NOT_ALLOWED", "endpoints answer GET only");
    a.headers.emplace_back("Allow", "GET");
    return reply(a);
  }
  if (std::optional<HttpAnswer> refused = admin_refusal(req, cfg_->admin.token))
    return reply(*refused);
  std::optional<std::string> channel = req.query_param("channel");
  if (!channel || !is_channel_param(*channel))
    return reply(json_error(400, "BAD_REQUEST",
                            "channel must be 1-512 printable characters without spaces or "
                            "braces, like /api/presence?channel=org:acme"));
  if (find_presence(cfg_->presence, *channel) == nullptr)
    return reply(json_error(404, "NOT_FOUND", "no presence: entry matches this channel"));
  uint64_t id = s.id();
  std::string name = *channel;
  bool asked = presence_.read(name, [this, id, head, name](const Result<PresenceUsers> &r) {
    auto it = sessions_.find(id);
    if (it == sessions_.end() || it->second->phase() != Session::Phase::http)
      return;
    HttpAnswer a;
    if (!r) {
      a = json_error(503, "UNAVAILABLE", "presence read failed: " + r.error);
    } else {
      nlohmann::json users = nlohmann::json::array();
      for (const auto &[user, n] : *r)
        users.push_back({{"user", user}, {"connections", n}});
      a = json_answer(200, {{"channel", name}, {"users", users}});
    }
    a.head_only = head;
    it->second->answer(a);
  });
  if (!asked)
    reply(json_error(503, "UNAVAILABLE", "the Redis command link is down"));
}

// Seed 002's shape: a summary and one entry per connection, paged so that a sidecar with 100k
// connections answers quickly (?limit=, ?offset=, ?org= exact, ?q= a part of the org, user or
// address, as the dashboard's filter box sends it).
HttpAnswer Server::status_endpoint(const HttpRequest &req) {
  size_t limit = number_param(req, "limit", 100, 1000);
  size_t offset = number_param(req, "offset", 0, SIZE_MAX);
  std::optional<std::string> org = req.query_param("org");
  std::optional<std::string> q = req.query_param("q");
  if (q && q->empty())
    q.reset();
  auto has_q = [&](const Session &s) {
    return s.org().find(*q) != std::string::npos || s.user().find(*q) != std::string::npos ||
           s.ip().find(*q) != std::string::npos;
  };
  nlohmann::json conns = nlohmann::json::array();
  size_t matched = 0;
  for (auto &[id, s] : sessions_) {
    if (!s->is_open() || (org && s->org() != *org) || (q && !has_q(*s)))
      continue;
    if (matched++ < offset || conns.size() >= limit)
      continue;
    conns.push_back({{"id", instance_ + "-" + std::to_string(s->id())},
                     {"org", s->org()},
                     {"user", s->user().empty() ? nlohmann::json() : nlohmann::json(s->user())},
                     {"connectedAt", iso8601_ms(s->connected_at_ms())},
                     {"messagesSent", s->messages_out()},
                     {"bytesSent", s->bytes_out()},
                     {"messagesReceived", s->messages_in()},
                     {"queuedBytes", s->queued_bytes()},
                     {"queuedFrames", s->queued_frames()},
                     {"lastError",
                      s->last_error().empty() ? nlohmann::json() : nlohmann::json(s->last_error())},
                     {"clientInfo", {{"ip", s->ip()}, {"userAgent", s->user_agent()}}}});
  }
  nlohmann::json body = {{"status", "ok"},
                         {"timestamp", iso8601_ms(wall_ms())},
                         {"summary",
                          {{"activeConnections", counts_.total()},
                           {"rooms", rooms_.size()},
                           {"redisConnected", bus_.connected()},
                           {"totalConnections", metrics_.connections_upgraded},
                           {"totalMessages", metrics_.publish.messages},
                           {"totalFramesDelivered", metrics_.publish.frames},
                           {"slowConsumerCloses", metrics_.slow_consumer_closes}}},
                         {"page", {{"offset", offset}, {"limit", limit}, {"matched", matched}}},
                         {"connections", conns}};
  return json_answer(200, body);
}

// Seed 004's discovery document. A page on another origin may read it when that origin may also
// open a socket here: the origins allowlist decides both, so discovery reveals nothing to a page
// that the handshake would refuse anyway. The document holds no secret and is read without
// credentials, so "*" is enough where every origin may connect.
HttpAnswer Server::config_endpoint(const HttpRequest &req) {
  nlohmann::json routes = nlohmann::json::array();
  for (const Route &r : cfg_->routes)
    routes.push_back(r.path);
  const LimitsConfig &l = cfg_->limits;
  nlohmann::json body = {
      {"websocket_config",
       {{"version", "1.0"},
        {"features",
         {{"json_first", true},
          {"auth_required", cfg_->auth.mode == AuthConfig::Mode::jwt},
          {"heartbeat_supported", true},
          {"reconnection_supported", true},
          {"inbound_messages", !cfg_->inbound.stream.empty()}}},
        {"endpoints", {{"websocket", routes.empty() ? "" : routes[0]}, {"routes", routes}}},
        {"auth",
         {{"required", cfg_->auth.mode == AuthConfig::Mode::jwt},
          {"token_sources", cfg_->auth.token_sources},
          {"query_param", cfg_->auth.query_param}}},
        {"connection_limits",
         {{"max_connections_per_user", l.max_connections_per_user},
          {"max_message_rate", l.inbound_rate},
          {"max_message_burst", l.inbound_burst},
          {"max_message_bytes", l.max_message_bytes},
          {"heartbeat_interval", cfg_->websocket.heartbeat_ms}}}}}};
  HttpAnswer a = json_answer(200, body);
  const std::string *origin = req.header("origin");
  std::string allow = cors_allow_origin(
      cfg_->origins, origin ? std::optional<std::string_view>(*origin) : std::nullopt);
  if (!allow.empty())
    a.headers.emplace_back("Access-Control-Allow-Origin", allow);
  if (allow != "*")
    a.headers.emplace_back("Vary", "Origin"); // the answer depends on who asks
  return a;
}

} // namespace sidecar
