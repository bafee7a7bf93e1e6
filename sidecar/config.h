// Config: the whole YAML file as plain values, checked once at start (and on SIGHUP).
// Loading never throws to its caller: every problem becomes a ConfigError naming the file, the
// line, the key and the reason, and all of them are reported together.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "config_error.h"
#include "history.h"
#include "origin.h"
#include "permessage_deflate.h"
#include "presence.h"
#include "result.h"

namespace sidecar {

struct HostPort {
  std::string host; // numeric IPv4/IPv6 or "localhost"
  uint16_t port = 0;
};

struct RedisConfig {
  std::string url = "redis://127.0.0.1:6379/0";
  // Parsed from url: either tcp (host, port) or a unix socket path.
  std::string host = "127.0.0.1";
  uint16_t port = 6379;
  std::string unix_path;
  std::string username;
  std::string password;
  int db = 0;
  uint32_t connect_timeout_ms = 2000;
  uint32_t reconnect_initial_ms = 100; // first retry delay; doubles each failure
  uint32_t reconnect_max_ms = 5000;    // cap of the backoff; jitter is +-20 %
  // Each link sends PING this often; a command unanswered for reply_timeout_ms means the link is
  // dead (a partition, a frozen Redis): it is closed and reconnected.
  uint32_t ping_interval_ms = 1000;
  uint32_t reply_timeout_ms = 5000;
  // Redis Cluster (issue 13): the seed nodes (redis.cluster); empty for one Redis at `url`.
  // Host names are allowed (managed clusters announce them); username and password above apply
  // to every node, and db is 0.
  std::vector<HostPort> cluster;
  // How rooms' channels are subscribed and how sidecar_publish publishes: global pub/sub
  // (SUBSCRIBE/PUBLISH; on a cluster every message reaches every node) or sharded (Redis 7's
  // SSUBSCRIBE/SPUBLISH; a message stays in the shard that owns its channel's slot).
  enum class Pubsub { global, sharded };
  Pubsub pubsub = Pubsub::global;
  bool is_cluster() const { return !cluster.empty(); }
  bool sharded() const { return pubsub == Pubsub::sharded; }
};

// A route's path template has exactly one "{org}" segment, e.g. "/api/ws/sync/{org}".
struct Route {
  std::string path;                  // as written
  std::string channel = "org:{org}"; // room channel template
  std::string prefix;                // path before "{org}"
  std::string suffix;                // path after "{org}" (often empty)
};

struct ChannelsConfig {
  std::string user = "org:{org}:user:{user}";  // per-user channel, joined when authenticated
  std::string broadcast = "sidecar:broadcast"; // every session joins it; "" disables
  // Each session's own channel, {conn} being its connection id; "" disables. Subscribed as one
  // pattern per sidecar (its connection-id prefix), never per session.
  std::string connection = "conn:{conn}";
};

// Control commands on one channel (control.h); the channel "" turns them off.
struct ControlConfig {
  std::string channel = "sidecar:control";
  std::string secret_env; // names the environment variable holding the HMAC secret
  std::string secret;     // read from secret_env at load; "" when unsigned commands are accepted
};

// Further channels a client may join with {"type":"subscribe"} (issue 15); see subscriptions.h.
struct SubscriptionsConfig {
  // Channel templates with {org}, {user}, {claim.NAME} and whole-segment `*`.
  std::vector<std::string> allow;
  std::string claim; // a token claim listing channel names the client may also join; "": none
  uint32_t max_per_connection = 16; // subscriptions a connection may hold at once
  bool enabled() const { return !allow.empty() || !claim.empty(); }
};

struct WebSocketConfig {
  uint32_t heartbeat_ms = 25000;    // server ping interval
  uint32_t pong_timeout_ms = 10000; // no frame at all within this after a ping: close
  uint32_t handshake_timeout_ms = 10000;
  uint32_t idle_timeout_ms = 0;     // 0: off; else close when no client data frame for this long
  uint32_t close_timeout_ms = 3000; // wait for the peer's close frame before dropping TCP
};

struct LimitsConfig {
  uint64_t max_message_bytes = 65536;    // inbound message; larger: close 1009
  uint32_t max_connections = 100000;     // total; over: 503
  uint32_t max_connections_per_org = 0;  // 0: unlimited; over: 429
  uint32_t max_connections_per_user = 0; // 0: unlimited; over: 429
  uint32_t max_connections_per_ip = 0;   // 0: unlimited; over: 429
  uint32_t handshakes_per_ip_per_s = 0;  // 0: unlimited; over: 429
  double inbound_rate = 10;              // messages per second per connection
  double inbound_burst = 20;
  uint32_t inbound_violations_before_close = 10; // RATE_LIMITED errors before close 1008
  uint64_t max_outbound_bytes = 4 * 1024 * 1024; // per-session queued bytes; over: slow consumer
  uint16_t slow_consumer_close_code = 1008;      // 1008 or 1013
  uint32_t max_header_bytes = 16384;             // request head; over: 431
  uint32_t max_json_depth = 32;
};

struct LogConfig {
  enum class Level { debug, info, warn, error };
  enum class Format { text, json };
  Level level = Level::info;
  Format format = Format::text;
  uint32_t summary_interval_s = 60; // once-a-minute summary line at info; 0: off
};

struct JwtConfig {
  std::vector<std::string> algorithms = {"HS256"};
  std::string secret;          // HS*; SIDECAR_JWT_SECRET overrides
  std::string secret_env;      // name of an env var holding the secret
  std::string public_key_file; // PEM, RS*/ES*
  std::string jwks_file;       // JSON Web Key Set, selected by "kid"
  std::string issuer;          // checked when not empty
  std::string audience;        // checked when not empty
  uint32_t leeway_s = 30;
  uint32_t max_token_bytes = 8192;
};

struct AuthConfig {
  enum class Mode { none, jwt };
  enum class Expiry { close, keep };
  Mode mode = Mode::none;
  JwtConfig jwt;
  std::vector<std::string> org_claim = {"org"}; // first present claim wins
  std::string user_claim = "sub";
  std::vector<std::string> token_sources = {"query", "header", "subprotocol", "cookie"};
  std::string query_param = "token";
  std::string cookie_name = "token";
  Expiry on_expiry = Expiry::close; // close with 4001, or keep the session
  uint32_t expiry_warning_s = 30;   // {"type":"token_expiring"} this long before exp
};

struct InboundConfig {
  std::string stream;      // e.g. "inbound:{org}"; empty: client messages get an error reply
  uint32_t maxlen = 10000; // XADD MAXLEN ~ N
};

struct AdminConfig {
  std::string listen; // empty: endpoints on the main listener
  std::string token;  // bearer token for /metrics and /api/websocket/status; SIDECAR_ADMIN_TOKEN
  std::optional<HostPort> listen_addr;
};

struct ShutdownConfig {
  uint32_t drain_timeout_ms = 10000;
  uint32_t reconnect_after_ms = 1000;  // hint sent in server_shutdown
  uint32_t reconnect_jitter_ms = 4000; // each client gets reconnect_after_ms + random(0..jitter)
};

struct Config {
  std::string file; // where it was loaded from
  std::string listen = "127.0.0.1:8080";
  HostPort listen_addr{"127.0.0.1", 8080};
  // Proxies whose X-Forwarded-For names the client (addresses or networks); empty: trust none.
  std::vector<std::string> trusted_proxies;
  RedisConfig redis;
  std::vector<Route> routes = {Route{"/ws/{org}", "org:{org}", "/ws/", ""}};
  ChannelsConfig channels;
  WebSocketConfig websocket;
  LimitsConfig limits;
  LogConfig log;
  AuthConfig auth;
  OriginsConfig origins;
  InboundConfig inbound;
  AdminConfig admin;
  ShutdownConfig shutdown;
  ControlConfig control;
  // permessage-deflate (issue 14): what is negotiated, and which publications are deflated.
  DeflateOptions compression;
  // Channels whose publications are kept and can be resumed (issue 11); empty: history is off.
  std::vector<HistoryConfig> history;
  SubscriptionsConfig subscriptions;
  // Rooms whose members are tracked in Redis (issue 15); empty: presence is off.
  std::vector<PresenceConfig> presence;
  // Line of each key as it appeared in the file ("listen" -> 1), so that errors found later
  // (a port in use at bind time) can still point at the line.
  std::map<std::string, int> key_lines;
};

struct ConfigResult {
  Config config;
  std::vector<ConfigError> errors; // empty: config is valid
  bool ok() const { return errors.empty(); }
};

// Parses and checks a YAML document. `file` only names it in errors.
ConfigResult parse_config(const std::string &yaml_text, const std::string &file,
                          const EnvLookup &env);
ConfigResult load_config_file(const std::string &path, const EnvLookup &env);

// Declared again here only for history.cpp and test/tools/history_lua_dump.cpp, which reach it
// through this header; its home is text.h. Drop this line once they include text.h.
bool parse_u64(std::string_view text, uint64_t &out);

// Parses "host:port" ("[::1]:8080" for IPv6).
Result<HostPort> parse_host_port(const std::string &text);
// Parses redis://[user:pass@]host[:port][/db] and unix:///path[?db=N]: base with its url fields
// replaced (the timing settings are base's).
Result<RedisConfig> parse_redis_url(const std::string &url, const RedisConfig &base);
// One redis.cluster entry: HOST:PORT or redis://[user[:password]@]host[:port] (db 0 only). The
// node goes in `node`; credentials, when the entry has them, in `username`/`password`.
Result<HostPort> parse_cluster_seed(const std::string &text, std::string &username,
                                    std::string &password, bool &has_credentials);
// Splits a route template at its single "{org}"; the route gets the default channel.
Result<Route> parse_route_template(const std::string &path);

// Org ids are 1..128 of [A-Za-z0-9._:-].
bool is_valid_org(std::string_view org);
// The first route whose prefix and suffix enclose one non-empty path segment; that segment is
// stored in org as sent. Whether it is a valid org id is admission's question (400 BAD_ORG), so
// a bad org on the first route that fits is refused there and never tried against later routes.
const Route *match_route(const std::vector<Route> &routes, std::string_view path, std::string &org);
// Substitutes {org} and {user} in a channel template.
std::string expand_channel(const std::string &tmpl, std::string_view org, std::string_view user);

} // namespace sidecar
