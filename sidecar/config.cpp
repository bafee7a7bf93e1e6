// Config loading: YAML text -> Config, with every check and every message about a bad setting.
// This file is the schema: which keys exist, their ranges and defaults, and the checks across
// keys. Reading the YAML itself (maps, lists, sizes, did-you-mean) is yaml_reader.cpp's. Nothing
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
#include "subscriptions.h"
#include "text.h"
#include "yaml_reader.h"

namespace sidecar {
namespace {

// A config file is a page of settings; anything this large is a mistake (a binary, a log file).
constexpr std::uintmax_t kMaxConfigFileBytes = 1 * kMiB;
constexpr uint64_t kHour = 3600000;
constexpr uint64_t kTenMinutes = 600000;

// Checks the placeholders of a channel or stream template: each "{...}" must name one of
// `allowed`, and each of `required` must appear.
std::string check_template(std::string_view tmpl, std::initializer_list<std::string_view> allowed,
                           std::initializer_list<std::string_view> required) {
  for (std::string_view need : required) {
    std::string placeholder = "{" + std::string(need) + "}";
    if (tmpl.find(placeholder) == std::string_view::npos)
      return "must contain " + quote(placeholder) + ", got " + quote(tmpl);
  }
  for (size_t open = tmpl.find('{'); open != std::string_view::npos;
       open = tmpl.find('{', open + 1)) {
    size_t close = tmpl.find('}', open);
    std::string_view name = close == std::string_view::npos
                                ? std::string_view{}
                                : tmpl.substr(open + 1, close - open - 1);
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
      std::string known;
      for (std::string_view a : allowed)
        known += (known.empty() ? "{" : " and {") + std::string(a) + "}";
      return "unknown placeholder in " + quote(tmpl) + "; " +
             (known.empty()
                  ? std::string("nothing is replaced here")
                  : "only " + known + (allowed.size() > 1 ? " are" : " is") + " replaced");
    }
  }
  if (tmpl.find('}') != std::string_view::npos &&
      std::count(tmpl.begin(), tmpl.end(), '{') != std::count(tmpl.begin(), tmpl.end(), '}'))
    return "unbalanced braces in " + quote(tmpl);
  return {};
}

class Parser : YamlReader {
public:
  Parser(ConfigResult &result, const std::string &file, const EnvLookup &env)
      : YamlReader(result.errors, result.config.key_lines, file, env), cfg_(result.config) {
    cfg_.file = file;
  }

  void run(const std::string &text) {
    if (read_document(text, [this](const At &root) { read_root(root); }))
      finish();
  }

private:
  bool read_template(const At &at, std::string &out,
                     std::initializer_list<std::string_view> allowed,
                     std::initializer_list<std::string_view> required);

  void read_root(const At &at);
  void add_server_fields(std::vector<Field> &fields);
  void add_limits_fields(std::vector<Field> &fields);
  void add_auth_fields(std::vector<Field> &fields);
  void add_edge_fields(std::vector<Field> &fields);

  // Readers for the field tables. Ranges are wide on purpose: they catch a unit mistake (seconds
  // written as milliseconds), not a choice that is merely unusual.
  std::function<void(const At &)> num(uint64_t lo, uint64_t hi, uint32_t &out) {
    return [this, lo, hi, &out](const At &a) { read_uint(a, lo, hi, out); };
  }
  template <typename T> std::function<void(const At &)> bytes(uint64_t lo, uint64_t hi, T &out) {
    return [this, lo, hi, &out](const At &a) { read_bytes(a, lo, hi, out); };
  }
  std::function<void(const At &)> small(uint8_t lo, uint8_t hi, uint8_t &out) {
    return [this, lo, hi, &out](const At &a) {
      uint32_t v = out;
      read_uint(a, lo, hi, v);
      out = static_cast<uint8_t>(v);
    };
  }
  std::function<void(const At &)> str(std::string &out) {
    return [this, &out](const At &a) { read_string(a, out); };
  }
  std::function<void(const At &)> name(std::string &out) {
    return [this, &out](const At &a) { read_nonempty(a, out); };
  }
  void read_routes(const At &at);
  void read_cluster(const At &at);
  template <class Entry, class Problem>
  void read_channel_list(const At &at, std::string_view example,
                         std::vector<Field> (*fields)(Parser &, Entry &),
                         std::vector<Problem> (*check)(const std::vector<Entry> &),
                         std::vector<Entry> &out);
  void read_history(const At &at);
  void read_presence(const At &at);
  void read_origins(const At &at);
  void read_origin_patterns(const At &at);
  void finish();
  void check_auth();
  void check_control();
  void check_key_file(const std::string &key, std::string &path);

  Config &cfg_;
};

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

void Parser::read_routes(const At &at) {
  std::vector<Route> routes;
  std::map<std::string, int> paths; // path -> line of its first use
  bool ok = true;
  bool is_list = walk_list(at, [&](const At &item) {
    Route route;
    bool has_path = false;
    size_t errors = error_count();
    walk_map(
        item, "",
        {{"path",
          [&](const At &v) {
            std::string path;
            has_path = true;
            if (!read_string(v, path))
              return;
            Result<Route> parsed = parse_route_template(path);
            if (!parsed)
              return fail(v, parsed.error);
            // The channel may have been read already: the keys of a route come in any order.
            parsed->channel = std::move(route.channel);
            route = std::move(*parsed);
            if (auto [prev, fresh] = paths.emplace(route.path, v.line); !fresh)
              fail(v, "duplicate route path (first at line " + std::to_string(prev->second) + ")");
          }},
         {"channel", [&](const At &v) { read_template(v, route.channel, {"org"}, {"org"}); }}});
    if (item.node.IsMap() && !has_path)
      fail(item, "missing \"path\", like path: \"/ws/{org}\"");
    ok = ok && errors == error_count();
    routes.push_back(std::move(route));
  });
  ok = ok && is_list;
  if (ok && routes.empty())
    fail(at, "must list at least one route, like - {path: \"/ws/{org}\", channel: \"org:{org}\"}");
  else if (ok)
    cfg_.routes = std::move(routes);
}

// history and presence: each a list of maps with a "channel" template. Each entry's values are
// read here (`fields` names the keys other than channel); the rules across entries and keys (a
// template twice, ranges that depend on each other, placeholders) are `check`'s: check_history is
// the same function the Redis library's generator trusts, so this file and the library cannot
// disagree about what is valid. A list with any problem leaves `out` empty: the feature is off.
template <class Entry, class Problem>
void Parser::read_channel_list(const At &at, std::string_view example,
                               std::vector<Field> (*fields)(Parser &, Entry &),
                               std::vector<Problem> (*check)(const std::vector<Entry> &),
                               std::vector<Entry> &out) {
  if (at.node.IsNull())
    return; // "history:" or "presence:" alone: off
  std::vector<Entry> list;
  std::vector<At> items;
  bool clean = true;
  bool is_list = walk_list(at, [&](const At &item) {
    Entry e;
    bool has_channel = false;
    size_t errors = error_count();
    if (!item.node.IsMap()) {
      fail(item, "must be a map like " + std::string(example) + ", got " + describe(item.node));
      clean = false;
      return;
    }
    std::vector<Field> keys = fields(*this, e);
    keys.insert(keys.begin(), {"channel", [&](const At &v) {
                                 has_channel = true;
                                 read_nonempty(v, e.channel_template);
                               }});
    walk_map(item, "", keys);
    if (!has_channel)
      fail(item, "missing \"channel\", like channel: \"org:{org}\"");
    clean = clean && errors == error_count();
    list.push_back(std::move(e));
    items.push_back(item);
  });
  if (!is_list || !clean)
    return;
  std::vector<Problem> problems = check(list);
  for (const Problem &p : problems) {
    std::string key = items[p.index].path + "." + p.key;
    fail(line_of(key) != 0 ? line_of(key) : items[p.index].line, key, p.reason);
  }
  if (problems.empty())
    out = std::move(list);
}

void Parser::read_history(const At &at) {
  read_channel_list<HistoryConfig, HistoryProblem>(
      at, "{channel: \"org:{org}\", size: 1000, ttl_s: 3600, max_recover: 300}",
      [](Parser &p, HistoryConfig &h) -> std::vector<Field> {
        return {{"size", p.num(1, kMaxHistorySize, h.size)},
                {"ttl_s", p.num(1, kMaxHistoryTtlS, h.ttl_s)},
                {"max_recover", p.num(1, kMaxRecover, h.max_recover)}};
      },
      check_history, cfg_.history);
}

void Parser::read_presence(const At &at) {
  read_channel_list<PresenceConfig, PresenceProblem>(
      at, "{channel: \"org:{org}\", ttl_s: 30, events: \"org:{org}:presence\"}",
      [](Parser &p, PresenceConfig &c) -> std::vector<Field> {
        return {{"ttl_s", p.num(1, kMaxPresenceTtlS, c.ttl_s)}, {"events", p.str(c.events)}};
      },
      check_presence, cfg_.presence);
}

// Origins are a list of patterns, or a map that also says whether a missing Origin is allowed.
void Parser::read_origins(const At &at) {
  cfg_.origins.allowed.clear();
  if (at.node.IsSequence())
    return read_origin_patterns(at);
  if (at.node.IsNull())
    return;
  if (!at.node.IsMap())
    return fail(at, "must be a list of origin patterns or a map with \"allowed\", got " +
                        describe(at.node));
  walk_map(at, "",
           {{"allowed",
             [this](const At &v) {
               if (!v.node.IsNull())
                 read_origin_patterns(v);
             }},
            {"allow_missing", [this](const At &v) { read_bool(v, cfg_.origins.allow_missing); }}});
}

void Parser::read_origin_patterns(const At &at) {
  walk_list(at, [&](const At &item) {
    std::string pattern;
    if (!read_nonempty(item, pattern))
      return;
    if (pattern.find_first_of(" \t,") != std::string::npos)
      return fail(item,
                  "must be one origin pattern without spaces or commas, got " + quote(pattern));
    if (Result<OriginPattern> parsed = parse_origin_pattern(pattern))
      cfg_.origins.allowed.push_back(std::move(*parsed));
    else
      fail(item, parsed.error + ", got " + quote(pattern));
  });
}

void Parser::check_key_file(const std::string &key, std::string &path) {
  if (path.empty())
    return;
  namespace fs = std::filesystem;
  fs::path resolved(path);
  if (resolved.is_relative())
    resolved = fs::path(file()).parent_path() / resolved;
  path = resolved.string();
  std::error_code ec;
  if (!fs::exists(resolved, ec))
    return fail(line_of(key), key, quote(path) + " does not exist");
  if (fs::is_directory(resolved, ec))
    return fail(line_of(key), key, quote(path) + " is a directory, not a file");
  errno = 0;
  std::ifstream in(resolved, std::ios::binary);
  if (!in)
    return fail(line_of(key), key, "cannot read " + quote(path) + ": " + std::strerror(errno));
  if (in.peek() == std::ifstream::traits_type::eof())
    fail(line_of(key), key, quote(path) + " is empty");
}

void Parser::check_auth() {
  JwtConfig &jwt = cfg_.auth.jwt;
  if (!jwt.secret_env.empty()) {
    std::optional<std::string> value = env(jwt.secret_env);
    if (value)
      jwt.secret = *value;
    else if (!env("SIDECAR_JWT_SECRET"))
      fail(line_of("auth.jwt.secret_env"), "auth.jwt.secret_env",
           "environment variable " + quote(jwt.secret_env) + " is not set");
  }
  if (std::optional<std::string> value = env("SIDECAR_JWT_SECRET"))
    jwt.secret = *value;
  check_key_file("auth.jwt.public_key_file", jwt.public_key_file);
  check_key_file("auth.jwt.jwks_file", jwt.jwks_file);
  if (cfg_.auth.mode != AuthConfig::Mode::jwt)
    return;

  bool has_public = !jwt.public_key_file.empty() || !jwt.jwks_file.empty();
  int jwt_line = line_of("auth.jwt") ? line_of("auth.jwt") : line_of("auth.mode");
  if (jwt.secret.empty() && !has_public && jwt.secret_env.empty()) {
    fail(jwt_line, "auth.jwt",
         "auth.mode jwt needs a key: set secret, secret_env, public_key_file or jwks_file, or "
         "the SIDECAR_JWT_SECRET environment variable");
    return;
  }
  int alg_line = line_of("auth.jwt.algorithms") ? line_of("auth.jwt.algorithms") : jwt_line;
  for (const std::string &alg : jwt.algorithms) {
    bool hmac = alg.starts_with("HS");
    // Accepting HS* with only a public key is the classic algorithm-confusion hole: an attacker
    // signs with the (public) key bytes as an HMAC secret.
    if (hmac && jwt.secret.empty() && has_public)
      fail(alg_line, "auth.jwt.algorithms",
           alg + " needs a shared secret, but only a public key is configured; allowing it "
                 "invites algorithm confusion");
    else if (!hmac && !has_public)
      fail(alg_line, "auth.jwt.algorithms",
           alg + " needs auth.jwt.public_key_file or auth.jwt.jwks_file");
  }
}

// redis.cluster: seed nodes. Every node of a cluster takes the same credentials, so entries that
// carry different ones are refused rather than one of them silently winning.
void Parser::read_cluster(const At &at) {
  RedisConfig &r = cfg_.redis;
  std::vector<HostPort> seeds;
  std::string user, password;
  bool credentials = false;
  bool ok = walk_list(at, [&](const At &item) {
    std::string text;
    if (!read_nonempty(item, text))
      return;
    std::string u, p;
    bool has = false;
    Result<HostPort> seed = parse_cluster_seed(text, u, p, has);
    if (!seed) {
      fail(item, seed.error);
      return;
    }
    if (has && credentials && (u != user || p != password)) {
      fail(item, "every cluster node takes the same username and password; this entry's differ "
                 "from an earlier one's");
      return;
    }
    if (has) {
      credentials = true;
      user = std::move(u);
      password = std::move(p);
    }
    seeds.push_back(std::move(*seed));
  });
  if (!ok)
    return;
  if (seeds.empty()) {
    fail(at, "must list at least one HOST:PORT seed node; remove the key for a standalone Redis");
    return;
  }
  r.cluster = std::move(seeds);
  if (credentials) {
    r.username = std::move(user);
    r.password = std::move(password);
  }
}

void Parser::finish() {
  Config &c = cfg_;
  if (c.redis.is_cluster()) {
    // One source of truth for where Redis is: a url beside a seed list would be ignored, and an
    // ignored setting is a surprise waiting for an outage.
    if (line_of("redis.url") != 0)
      fail(line_of("redis.url"), "redis.url",
           "cannot be used with redis.cluster; give the cluster's credentials in its entries "
           "(redis://user:password@host:port)");
    if (env("SIDECAR_REDIS_URL"))
      fail(0, "SIDECAR_REDIS_URL", "cannot be used with redis.cluster; unset it");
    // Presence's room hashes are not routed by slot yet (issue 13 left it for later).
    if (!c.presence.empty())
      fail(line_of("presence"), "presence", "is not supported with redis.cluster yet");
  } else if (std::optional<std::string> url = env("SIDECAR_REDIS_URL")) {
    if (Result<RedisConfig> redis = parse_redis_url(*url, c.redis))
      c.redis = *redis;
    else
      fail(0, "SIDECAR_REDIS_URL", redis.error);
  }
  if (std::optional<std::string> token = env("SIDECAR_ADMIN_TOKEN"))
    c.admin.token = *token;
  if (c.redis.reconnect_max_ms < c.redis.reconnect_initial_ms)
    fail(line_of("redis.reconnect_max_ms"), "redis.reconnect_max_ms",
         "must be at least redis.reconnect_initial_ms (" +
             std::to_string(c.redis.reconnect_initial_ms) + ")");
  if (c.admin.listen_addr && c.admin.listen_addr->port == c.listen_addr.port) {
    auto wildcard = [](const std::string &h) { return h == "0.0.0.0" || h == "::"; };
    const std::string &h = c.admin.listen_addr->host;
    if (h == c.listen_addr.host || wildcard(h) || wildcard(c.listen_addr.host))
      fail(line_of("admin.listen"), "admin.listen",
           "must differ from listen (" + c.listen +
               "); leave it empty to serve the admin "
               "endpoints on the main listener");
  }
  check_auth();
  check_control();
}

void Parser::check_control() {
  ControlConfig &ctl = cfg_.control;
  if (!ctl.secret_env.empty()) {
    std::optional<std::string> value = env(ctl.secret_env);
    if (!value || value->empty())
      fail(line_of("control.secret_env"), "control.secret_env",
           "environment variable " + quote(ctl.secret_env) +
               " is not set or empty; unset control.secret_env to accept unsigned commands");
    else
      ctl.secret = *value;
  }
  // Every client joins the broadcast channel: control commands there would reach browsers, and
  // a browser-facing publisher could issue them.
  if (!ctl.channel.empty() && ctl.channel == cfg_.channels.broadcast)
    fail(line_of("control.channel"), "control.channel",
         "must differ from channels.broadcast (" + quote(ctl.channel) +
             "): every client reads the broadcast channel");
}

} // namespace

ConfigResult parse_config(const std::string &yaml_text, const std::string &file,
                          const EnvLookup &env) {
  ConfigResult result;
  try {
    Parser(result, file, env).run(yaml_text);
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
