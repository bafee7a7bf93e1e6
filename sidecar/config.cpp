// Config loading: YAML text -> Config, with every check and every message about a bad setting.
// This file is the schema: which keys exist, their ranges and defaults; the list-valued sections
// and the checks across keys are config_checks.cpp's (both implement config_parser.h's Parser).
// Reading the YAML itself (maps, lists, sizes, did-you-mean) is yaml_reader.cpp's. Nothing
// here throws to the caller: yaml-cpp's exceptions and every rule we check become ConfigErrors
// that name the file, the line, the dotted key and the reason, all of them at once.
#include "config.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "client_ip.h"
#include "config_parser.h"
#include "subscriptions.h"
#include "text.h"

namespace sidecar {
namespace config_parse {

bool Parser::read_template(const At &at, std::string &out,
                           std::initializer_list<std::string_view> allowed,
                           std::initializer_list<std::string_view> required) {
  std::string value;
  if (!read_string(at, value))
    return false;
  if (std::string why = check_template(value, allowed, required); !why.empty()) {
    fail(at, why);
    return false;
  }
  out = std::move(value);
  return true;
}

// The top-level table, section by section in the order they are documented; the order also
// decides which suggestion wins when two keys are equally close to a misspelt one.
void Parser::read_root(const At &at) {
  std::vector<Field> fields;
  add_server_fields(fields);
  add_limits_fields(fields);
  add_auth_fields(fields);
  add_edge_fields(fields);
  walk_map(at, "", fields);
}

void Parser::add_server_fields(std::vector<Field> &fields) {
  Config &c = cfg_;
  fields.insert(
      fields.end(),
      {
          {"trusted_proxies",
           [this, &c](const At &a) {
             std::vector<std::string> items;
             bool ok = walk_list(a, [&](const At &item) {
               std::string value, reason;
               if (!read_nonempty(item, value))
                 return;
               if (TrustedProxies::valid_pattern(value, reason))
                 items.push_back(std::move(value));
               else
                 fail(item, reason);
             });
             if (ok)
               c.trusted_proxies = std::move(items);
           }},
          {"listen",
           [this, &c](const At &a) {
             if (!read_string(a, c.listen))
               return;
             if (Result<HostPort> addr = parse_host_port(c.listen))
               c.listen_addr = *addr;
             else
               fail(a, addr.error);
           }},
          {"redis.url",
           [this, &c](const At &a) {
             std::string url;
             if (!read_string(a, url))
               return;
             if (Result<RedisConfig> redis = parse_redis_url(url, c.redis))
               c.redis = *redis;
             else
               fail(a, redis.error);
           }},
          {"redis.cluster", [this](const At &a) { read_cluster(a); }},
          {"redis.pubsub",
           [this, &c](const At &a) {
             read_enum<RedisConfig::Pubsub>(a,
                                            {{"global", RedisConfig::Pubsub::global},
                                             {"sharded", RedisConfig::Pubsub::sharded}},
                                            c.redis.pubsub);
           }},
          {"redis.connect_timeout_ms", num(10, kTenMinutes, c.redis.connect_timeout_ms)},
          {"redis.reconnect_initial_ms", num(1, kTenMinutes, c.redis.reconnect_initial_ms)},
          {"redis.reconnect_max_ms", num(1, kHour, c.redis.reconnect_max_ms)},
          {"redis.ping_interval_ms", num(100, kTenMinutes, c.redis.ping_interval_ms)},
          {"redis.reply_timeout_ms", num(100, kTenMinutes, c.redis.reply_timeout_ms)},
          {"routes", [this](const At &a) { read_routes(a); }},
          {"channels.user",
           [this, &c](const At &a) {
             read_template(a, c.channels.user, {"org", "user"}, {"org", "user"});
           }},
          // Every session joins the one broadcast channel, so it cannot depend on org or user.
          {"channels.broadcast",
           [this, &c](const At &a) { read_template(a, c.channels.broadcast, {}, {}); }},
          {"channels.connection",
           [this, &c](const At &a) {
             std::string tmpl;
             if (!read_string(a, tmpl))
               return;
             if (tmpl.empty()) {
               c.channels.connection.clear(); // off
               return;
             }
             // One {conn}: the id is found again between the literal text on either side.
             if (std::string why = check_template(tmpl, {"conn"}, {"conn"}); !why.empty())
               fail(a, why);
             else if (tmpl.find("{conn}") != tmpl.rfind("{conn}"))
               fail(a, "must contain \"{conn}\" once, got " + quote(tmpl));
             else
               c.channels.connection = tmpl;
           }},
          {"websocket.heartbeat_ms", num(100, kHour, c.websocket.heartbeat_ms)},
          {"websocket.pong_timeout_ms", num(100, kTenMinutes, c.websocket.pong_timeout_ms)},
          {"websocket.handshake_timeout_ms",
           num(100, kTenMinutes, c.websocket.handshake_timeout_ms)},
          {"websocket.idle_timeout_ms", num(0, 24 * kHour, c.websocket.idle_timeout_ms)},
          {"websocket.close_timeout_ms", num(100, kTenMinutes, c.websocket.close_timeout_ms)},
      });
}

void Parser::add_limits_fields(std::vector<Field> &fields) {
  Config &c = cfg_;
  LimitsConfig &l = c.limits;
  using Level = LogConfig::Level;
  using Format = LogConfig::Format;
  fields.insert(
      fields.end(),
      {
          {"limits.max_message_bytes", bytes(kKiB, 16 * kMiB, l.max_message_bytes)},
          {"limits.max_connections", num(1, 10000000, l.max_connections)},
          {"limits.max_connections_per_org", num(0, 10000000, l.max_connections_per_org)},
          {"limits.max_connections_per_user", num(0, 10000000, l.max_connections_per_user)},
          {"limits.max_connections_per_ip", num(0, 10000000, l.max_connections_per_ip)},
          {"limits.handshakes_per_ip_per_s", num(0, 1000000, l.handshakes_per_ip_per_s)},
          {"limits.inbound_rate",
           [this, &l](const At &a) { read_double(a, 0, true, 1e6, l.inbound_rate); }},
          {"limits.inbound_burst",
           [this, &l](const At &a) { read_double(a, 1, false, 1e6, l.inbound_burst); }},
          {"limits.inbound_violations_before_close",
           num(1, 1000000, l.inbound_violations_before_close)},
          {"limits.max_outbound_bytes", bytes(64 * kKiB, kGiB, l.max_outbound_bytes)},
          {"limits.slow_consumer_close_code",
           [this, &l](const At &a) {
             read_enum<uint16_t>(a, {{"1008", 1008}, {"1013", 1013}}, l.slow_consumer_close_code);
           }},
          {"limits.max_header_bytes", bytes(kKiB, kMiB, l.max_header_bytes)},
          {"limits.max_json_depth", num(1, 256, l.max_json_depth)},
          {"log.level",
           [this, &c](const At &a) {
             read_enum<Level>(a,
                              {{"debug", Level::debug},
                               {"info", Level::info},
                               {"warn", Level::warn},
                               {"error", Level::error}},
                              c.log.level);
           }},
          {"log.format",
           [this, &c](const At &a) {
             read_enum<Format>(a, {{"text", Format::text}, {"json", Format::json}}, c.log.format);
           }},
          {"log.summary_interval_s", num(0, 86400, c.log.summary_interval_s)},
      });
}

void Parser::add_auth_fields(std::vector<Field> &fields) {
  AuthConfig &auth = cfg_.auth;
  using Mode = AuthConfig::Mode;
  using Expiry = AuthConfig::Expiry;
  fields.insert(
      fields.end(),
      {
          {"auth.mode",
           [this, &auth](const At &a) {
             read_enum<Mode>(a, {{"none", Mode::none}, {"jwt", Mode::jwt}}, auth.mode);
           }},
          {"auth.jwt.algorithms",
           [this, &auth](const At &a) {
             read_strings(a, auth.jwt.algorithms,
                          {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384"});
           }},
          {"auth.jwt.secret", str(auth.jwt.secret)},
          {"auth.jwt.secret_env", str(auth.jwt.secret_env)},
          {"auth.jwt.public_key_file", str(auth.jwt.public_key_file)},
          {"auth.jwt.jwks_file", str(auth.jwt.jwks_file)},
          {"auth.jwt.issuer", str(auth.jwt.issuer)},
          {"auth.jwt.audience", str(auth.jwt.audience)},
          {"auth.jwt.leeway_s", num(0, 3600, auth.jwt.leeway_s)},
          {"auth.jwt.max_token_bytes", bytes(256, 64 * kKiB, auth.jwt.max_token_bytes)},
          {"auth.org_claim",
           [this, &auth](const At &a) {
             std::string one; // One claim name is common enough to be written without a list.
             if (!a.node.IsScalar() && !a.node.IsNull())
               read_strings(a, auth.org_claim);
             else if (read_nonempty(a, one))
               auth.org_claim = {one};
           }},
          {"auth.user_claim", name(auth.user_claim)},
          {"auth.token_sources",
           [this, &auth](const At &a) {
             read_strings(a, auth.token_sources, {"query", "header", "subprotocol", "cookie"});
           }},
          {"auth.query_param", name(auth.query_param)},
          {"auth.cookie_name",
           [this, &auth](const At &a) {
             std::string cookie;
             if (!read_nonempty(a, cookie))
               return;
             if (cookie.find_first_of(" \t;=,\"") != std::string::npos)
               fail(a, "must be a cookie name without spaces, ';', '=', ',' or quotes, got " +
                           quote(cookie));
             else
               auth.cookie_name = cookie;
           }},
          {"auth.on_expiry",
           [this, &auth](const At &a) {
             read_enum<Expiry>(a, {{"close", Expiry::close}, {"keep", Expiry::keep}},
                               auth.on_expiry);
           }},
          {"auth.expiry_warning_s", num(0, 86400, auth.expiry_warning_s)},
      });
}

void Parser::add_edge_fields(std::vector<Field> &fields) {
  Config &c = cfg_;
  fields.insert(
      fields.end(),
      {
          {"origins", [this](const At &a) { read_origins(a); }},
          {"inbound.stream",
           [this, &c](const At &a) { read_template(a, c.inbound.stream, {"org"}, {}); }},
          {"inbound.maxlen", num(1, 1000000000, c.inbound.maxlen)},
          {"admin.listen",
           [this, &c](const At &a) {
             if (!read_string(a, c.admin.listen) || c.admin.listen.empty())
               return;
             if (Result<HostPort> addr = parse_host_port(c.admin.listen))
               c.admin.listen_addr = *addr;
             else
               fail(a, addr.error);
           }},
          {"admin.token", str(c.admin.token)},
          {"shutdown.drain_timeout_ms", num(0, kTenMinutes, c.shutdown.drain_timeout_ms)},
          {"shutdown.reconnect_after_ms", num(0, kTenMinutes, c.shutdown.reconnect_after_ms)},
          {"shutdown.reconnect_jitter_ms", num(0, kTenMinutes, c.shutdown.reconnect_jitter_ms)},
          {"compression.enabled", [this, &c](const At &a) { read_bool(a, c.compression.enabled); }},
          {"compression.min_bytes", bytes(0, 16 * kMiB, c.compression.min_bytes)},
          {"compression.level", small(1, 9, c.compression.level)},
          // 8 is valid in RFC 7692 but zlib cannot honour it (permessage_deflate.h).
          {"compression.client_max_window_bits",
           small(9, 15, c.compression.client_max_window_bits)},
          {"history", [this](const At &a) { read_history(a); }},
          // The control channel is one name for every sidecar: no placeholders.
          {"control.channel",
           [this, &c](const At &a) { read_template(a, c.control.channel, {}, {}); }},
          {"control.secret_env", str(c.control.secret_env)},
          {"subscriptions.allow",
           [this, &c](const At &a) {
             std::vector<std::string> items;
             bool ok = walk_list(a, [&](const At &item) {
               std::string value;
               if (!read_nonempty(item, value))
                 return;
               if (Result<bool> checked = check_allow_template(value))
                 items.push_back(std::move(value));
               else
                 fail(item, checked.error);
             });
             if (ok)
               c.subscriptions.allow = std::move(items);
           }},
          {"subscriptions.claim", str(c.subscriptions.claim)},
          {"subscriptions.max_per_connection", num(1, 1024, c.subscriptions.max_per_connection)},
          {"presence", [this](const At &a) { read_presence(a); }},
      });
}

} // namespace config_parse

namespace {
// A config file is a page of settings; anything this large is a mistake (a binary, a log file).
constexpr std::uintmax_t kMaxConfigFileBytes = 1 * kMiB;
} // namespace

ConfigResult parse_config(const std::string &yaml_text, const std::string &file,
                          const EnvLookup &env) {
  ConfigResult result;
  try {
    config_parse::Parser(result, file, env).run(yaml_text);
  } catch (const std::exception &e) {
    // Only allocation failure should get here; the contract is still "never throws".
    result.errors.push_back(ConfigError{file, 0, "", std::string("internal error: ") + e.what()});
  }
  return result;
}

ConfigResult load_config_file(const std::string &path, const EnvLookup &env) {
  namespace fs = std::filesystem;
  auto failed = [&](std::string reason) {
    ConfigResult result;
    result.config.file = path;
    result.errors.push_back(ConfigError{path, 0, "", std::move(reason)});
    return result;
  };
  std::error_code ec;
  if (!fs::exists(path, ec))
    return failed("cannot read the config file: it does not exist");
  if (fs::is_directory(path, ec))
    return failed("cannot read the config file: it is a directory");
  if (fs::file_size(path, ec) > kMaxConfigFileBytes && !ec)
    return failed("the config file is larger than 1 MiB; is it the right file?");
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return failed("cannot read the config file: " + std::string(strerror(errno)));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad())
    return failed("cannot read the config file: " + std::string(strerror(errno)));
  return parse_config(text.str(), path, env);
}

} // namespace sidecar
