// Config loading, second half: the list-valued sections (routes, history, presence, origins, the
// cluster's seeds) and the rules across keys that finish() checks once every key is read (auth's
// key material, the control secret, presence with a cluster, ports that collide). The keys
// themselves and their ranges are config.cpp's; both implement the Parser of config_parser.h.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>

#include "config_parser.h"
#include "text.h"

namespace sidecar::config_parse {

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

} // namespace sidecar::config_parse
