// plan_reload: what a SIGHUP applies live and what it keeps until a restart, decided from the
// running config and the newly loaded one alone. Both come from YAML through parse_config, as on
// a real reload.
#include "config_reload.h"

#include <doctest/doctest.h>

#include <functional>

using namespace sidecar;

namespace {

Config load(const std::string &yaml) {
  ConfigResult r = parse_config(yaml, "test.yaml",
                                [](const std::string &) { return std::optional<std::string>(); });
  REQUIRE_MESSAGE(r.ok(), (r.errors.empty() ? "" : r.errors.front().to_string()));
  return r.config;
}

const std::string kRunning = "listen: \"127.0.0.1:8080\"\n"
                             "redis: {url: \"redis://127.0.0.1:6379/0\"}\n";

} // namespace

TEST_CASE("a reload of an unchanged file keeps nothing back and reports none") {
  Config running = load(kRunning);
  ReloadPlan plan = plan_reload(running, load(kRunning));
  CHECK(plan.needs_restart.empty());
  CHECK(plan.not_applied_live() == "none");
  CHECK(plan.config.listen == running.listen);
  CHECK(plan.config.redis.url == running.redis.url);
}

TEST_CASE("settings read on every use apply live and are not reported") {
  struct Case {
    const char *yaml;
    std::function<bool(const Config &)> applied;
  };
  const Case cases[] = {
      {"websocket: {heartbeat_ms: 7000}\n",
       [](const Config &c) { return c.websocket.heartbeat_ms == 7000; }},
      {"limits: {max_connections: 2, max_message_bytes: 2KiB}\n",
       [](const Config &c) {
         return c.limits.max_connections == 2 && c.limits.max_message_bytes == 2048;
       }},
      {"log: {level: debug, format: json}\n",
       [](const Config &c) {
         return c.log.level == LogConfig::Level::debug && c.log.format == LogConfig::Format::json;
       }},
      {"trusted_proxies: [\"10.0.0.0/8\"]\n",
       [](const Config &c) { return c.trusted_proxies == std::vector<std::string>{"10.0.0.0/8"}; }},
      {"routes: [{path: \"/a/{org}\", channel: \"a:{org}\"}]\n",
       [](const Config &c) { return c.routes.size() == 1 && c.routes[0].path == "/a/{org}"; }},
      {"channels: {user: \"u:{org}:{user}\"}\n",
       [](const Config &c) { return c.channels.user == "u:{org}:{user}"; }},
      {"auth: {on_expiry: keep, expiry_warning_s: 5}\n",
       [](const Config &c) {
         return c.auth.on_expiry == AuthConfig::Expiry::keep && c.auth.expiry_warning_s == 5;
       }},
      {"auth: {mode: jwt, jwt: {secret: s3cret}}\n",
       [](const Config &c) {
         return c.auth.mode == AuthConfig::Mode::jwt && c.auth.jwt.secret == "s3cret";
       }},
      {"origins: [\"https://a.example\"]\n",
       [](const Config &c) { return c.origins.allowed.size() == 1; }},
      {"inbound: {stream: \"in:{org}\", maxlen: 5}\n",
       [](const Config &c) { return c.inbound.stream == "in:{org}" && c.inbound.maxlen == 5; }},
      {"admin: {token: t0ken}\n", [](const Config &c) { return c.admin.token == "t0ken"; }},
      {"shutdown: {drain_timeout_ms: 5, reconnect_jitter_ms: 0}\n",
       [](const Config &c) {
         return c.shutdown.drain_timeout_ms == 5 && c.shutdown.reconnect_jitter_ms == 0;
       }},
      // Negotiation reads it at each handshake and rooms at each publication (room.h).
      {"compression: {enabled: false, min_bytes: 1, level: 9, client_max_window_bits: 9}\n",
       [](const Config &c) {
         return !c.compression.enabled && c.compression.min_bytes == 1 &&
                c.compression.level == 9 && c.compression.client_max_window_bits == 9;
       }},
  };
  Config running = load(kRunning);
  for (const Case &c : cases) {
    CAPTURE(c.yaml);
    ReloadPlan plan = plan_reload(running, load(kRunning + c.yaml));
    CHECK(plan.needs_restart.empty());
    CHECK(plan.not_applied_live() == "none");
    CHECK(c.applied(plan.config));
  }
}

TEST_CASE("a new listen address is reported and the running one stays") {
  Config running = load(kRunning);
  ReloadPlan plan = plan_reload(running, load("listen: \"127.0.0.1:9999\"\n"
                                              "websocket: {heartbeat_ms: 7000}\n"
                                              "redis: {url: \"redis://127.0.0.1:6379/0\"}\n"));
  CHECK(plan.not_applied_live() == "listen");
  CHECK(plan.config.listen == "127.0.0.1:8080");
  CHECK(plan.config.listen_addr.port == 8080);
  // The rest of the same file still applies.
  CHECK(plan.config.websocket.heartbeat_ms == 7000);
}

TEST_CASE("a new admin listener is reported and the running endpoints stay where they are") {
  Config running = load(kRunning);
  ReloadPlan plan = plan_reload(running, load(kRunning + "admin: {listen: \"127.0.0.1:9100\"}\n"));
  CHECK(plan.not_applied_live() == "admin.listen");
  CHECK(plan.config.admin.listen.empty());
  CHECK_FALSE(plan.config.admin.listen_addr.has_value());

  Config with_admin = load(kRunning + "admin: {listen: \"127.0.0.1:9100\"}\n");
  plan = plan_reload(with_admin, load(kRunning));
  CHECK(plan.not_applied_live() == "admin.listen");
  REQUIRE(plan.config.admin.listen_addr.has_value());
  CHECK(plan.config.admin.listen_addr->port == 9100);
}

TEST_CASE("each redis timing key is reported by name and kept at its running value") {
  const char *keys[] = {"connect_timeout_ms", "reconnect_initial_ms", "reconnect_max_ms",
                        "ping_interval_ms", "reply_timeout_ms"};
  Config running = load(kRunning);
  for (const char *key : keys) {
    CAPTURE(key);
    std::string yaml = "listen: \"127.0.0.1:8080\"\n"
                       "redis: {url: \"redis://127.0.0.1:6379/0\", " +
                       std::string(key) + ": 1200}\n";
    ReloadPlan plan = plan_reload(running, load(yaml));
    CHECK(plan.not_applied_live() == "redis." + std::string(key));
    CHECK(plan.config.redis.connect_timeout_ms == running.redis.connect_timeout_ms);
    CHECK(plan.config.redis.reconnect_initial_ms == running.redis.reconnect_initial_ms);
    CHECK(plan.config.redis.reconnect_max_ms == running.redis.reconnect_max_ms);
    CHECK(plan.config.redis.ping_interval_ms == running.redis.ping_interval_ms);
    CHECK(plan.config.redis.reply_timeout_ms == running.redis.reply_timeout_ms);
  }
}

TEST_CASE("a new redis url is reported and every part of the running one stays") {
  Config running = load(kRunning);
  ReloadPlan plan = plan_reload(
      running, load("listen: \"127.0.0.1:8080\"\nredis: {url: \"redis://u:p@10.0.0.1:7000/2\"}\n"));
  CHECK(plan.not_applied_live() == "redis.url");
  CHECK(plan.config.redis.url == "redis://127.0.0.1:6379/0");
  CHECK(plan.config.redis.host == "127.0.0.1");
  CHECK(plan.config.redis.port == 6379);
  CHECK(plan.config.redis.db == 0);
  CHECK(plan.config.redis.username.empty());
  CHECK(plan.config.redis.password.empty());
}

TEST_CASE("a new broadcast channel is reported: every session already joined the old one") {
  Config running = load(kRunning);
  ReloadPlan plan = plan_reload(running, load(kRunning + "channels: {broadcast: \"other\"}\n"));
  CHECK(plan.not_applied_live() == "channels.broadcast");
  CHECK(plan.config.channels.broadcast == "sidecar:broadcast");
}

TEST_CASE("a changed history list is reported and the running one stays") {
  Config running = load(kRunning + "history: [{channel: \"org:{org}\", size: 10, ttl_s: 60, "
                                   "max_recover: 5}]\n");
  ReloadPlan same =
      plan_reload(running, load(kRunning + "history: [{channel: \"org:{org}\", "
                                           "size: 10, ttl_s: 60, max_recover: 5}]\n"));
  CHECK(same.needs_restart.empty());
  ReloadPlan plan =
      plan_reload(running, load(kRunning + "history: [{channel: \"org:{org}\", "
                                           "size: 20, ttl_s: 60, max_recover: 5}]\n"));
  CHECK(plan.not_applied_live() == "history");
  REQUIRE(plan.config.history.size() == 1);
  CHECK(plan.config.history[0].size == 10);
  ReloadPlan off = plan_reload(running, load(kRunning));
  CHECK(off.not_applied_live() == "history");
  CHECK(off.config.history.size() == 1);
}

TEST_CASE("several kept keys are listed in section order, comma-separated") {
  Config running = load(kRunning);
  ReloadPlan plan =
      plan_reload(running, load("listen: \"127.0.0.1:9999\"\n"
                                "channels: {broadcast: \"\"}\n"
                                "redis: {url: \"redis://127.0.0.1:6380/0\", ping_interval_ms: 700,"
                                " reply_timeout_ms: 2500, reconnect_max_ms: 900}\n"
                                "admin: {listen: \"127.0.0.1:9100\"}\n"));
  CHECK(plan.not_applied_live() ==
        "listen,admin.listen,redis.url,redis.reconnect_max_ms,redis.ping_interval_ms,"
        "redis.reply_timeout_ms,channels.broadcast");
  CHECK(plan.needs_restart.size() == 7);
}

TEST_CASE("the control channel and the connection template wait for a restart") {
  Config running = load(kRunning);
  ReloadPlan plan = plan_reload(running, load(kRunning + "control: {channel: \"ops:ctl\"}\n"
                                                         "channels: {connection: \"c:{conn}\"}\n"));
  CHECK(plan.not_applied_live() == "control.channel,channels.connection");
  CHECK(plan.config.control.channel == "sidecar:control");
  CHECK(plan.config.channels.connection == "conn:{conn}");
}
