// admit() against every row of the README's handshake table, in its order, with no socket and no
// loop: each refusal's status, error code and headers, and each part of a grant. Tokens are the
// PyJWT fixtures of jwt_test.cpp; the few claim sets they lack (other users, other org claims, a
// huge exp) are signed by jwt_fixtures.h with OpenSSL's HMAC under the same fixture secret. An
// in-band refresh goes through the same token checks, so its refusals are checked here too.
#include "admission.h"

#include "encoding.h"
#include "jwt.h"
#include "jwt_fixtures.h"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

using namespace sidecar;

namespace {

using test::fixture_token;
using test::mint;

std::string secret() { return test::fixture_secret(); }

nlohmann::json claims(std::string org = "acme", std::string sub = "user-1") {
  return {{"sub", sub}, {"org", org}, {"exp", 4102444800}};
}

const char *kKey = "dGhlIHNhbXBsZSBub25jZQ==";

// A well-formed browser upgrade for path (query after '?'), before any test changes it.
HttpRequest upgrade_request(const std::string &target = "/ws/acme") {
  HttpRequest r;
  r.method = "GET";
  r.target = target;
  size_t q = target.find('?');
  r.path = target.substr(0, q);
  r.query = q == std::string::npos ? "" : target.substr(q + 1);
  r.http_major = 1;
  r.http_minor = 1;
  r.headers = {{"host", "sidecar.test"},
               {"upgrade", "websocket"},
               {"connection", "Upgrade"},
               {"sec-websocket-key", kKey},
               {"sec-websocket-version", "13"}};
  return r;
}

void set_header(HttpRequest &r, const std::string &name, const std::string &value) {
  for (auto &[n, v] : r.headers) {
    if (n == name) {
      v = value;
      return;
    }
  }
  r.headers.emplace_back(name, value);
}

void drop_header(HttpRequest &r, const std::string &name) {
  std::erase_if(r.headers, [&](const auto &h) { return h.first == name; });
}

// The Server's side of a handshake: a config, the live counts and rates, a clock and a peer.
struct Gate {
  Config cfg;
  ConnectionCounts counts;
  HandshakeRates rates;
  std::unique_ptr<JwtVerifier> jwt;
  std::string ip = "203.0.113.7";
  bool shutting_down = false;
  uint64_t now_ms = 50000;
  int64_t unix_now = test::fixture_now();

  void require_jwt() {
    cfg.auth.mode = AuthConfig::Mode::jwt;
    cfg.auth.jwt.secret = secret();
    std::string error;
    jwt = JwtVerifier::create(cfg.auth.jwt, error);
    REQUIRE_MESSAGE(jwt != nullptr, error);
  }

  Admission run(const HttpRequest &http) {
    std::string org;
    const Route *route = match_route(cfg.routes, http.path, org);
    REQUIRE(route != nullptr);
    AdmissionRequest req{http, *route, org, ip, "c0ffee00-17", shutting_down, now_ms, unix_now};
    return admit(req, cfg, jwt.get(), {counts, rates});
  }
};

const std::string *header(const Admission &a, std::string_view name) {
  for (const auto &[n, v] : a.answer.headers) {
    if (iequals(n, name))
      return &v;
  }
  return nullptr;
}

// A refusal as the client sees it: status, JSON body with this error code, and the code for the
// log line when the refusal is one that admission logs.
void check_refused(const Admission &a, int status, const std::string &code, bool logged = true) {
  CAPTURE(a.answer.body);
  CHECK_FALSE(a.upgrade);
  CHECK(a.answer.status == status);
  CHECK(a.answer.content_type == "application/json");
  nlohmann::json body = nlohmann::json::parse(a.answer.body, nullptr, false);
  REQUIRE(body.is_object());
  CHECK(body.value("error", "") == code);
  CHECK(body.value("message", "") != "");
  CHECK(a.code == (logged ? code : ""));
  CHECK(a.welcome.empty());
}

std::string message_of(const Admission &a) {
  return nlohmann::json::parse(a.answer.body).value("message", "");
}

OriginPattern origin_pattern(std::string_view text) {
  auto p = parse_origin_pattern(text);
  REQUIRE_MESSAGE(p.ok(), p.error);
  return *p;
}

} // namespace

TEST_CASE("a sidecar that is shutting down answers 503 SHUTTING_DOWN before any other check") {
  Gate g;
  g.shutting_down = true;
  check_refused(g.run(upgrade_request()), 503, "SHUTTING_DOWN");
  HttpRequest plain = upgrade_request("/ws/bad!org");
  drop_header(plain, "upgrade");
  check_refused(g.run(plain), 503, "SHUTTING_DOWN");
}

TEST_CASE("row 1: a request without Upgrade: websocket is 426 with Upgrade and the version") {
  Gate g;
  HttpRequest r = upgrade_request();
  drop_header(r, "upgrade");
  Admission a = g.run(r);
  check_refused(a, 426, "UPGRADE_REQUIRED", false);
  REQUIRE(header(a, "Upgrade") != nullptr);
  CHECK(*header(a, "Upgrade") == "websocket");
  REQUIRE(header(a, "Sec-WebSocket-Version") != nullptr);
  CHECK(*header(a, "Sec-WebSocket-Version") == "13");
  set_header(r, "upgrade", "h2c");
  check_refused(g.run(r), 426, "UPGRADE_REQUIRED", false);
}

TEST_CASE("row 1: method, HTTP version, Connection, Host, version and key are checked in order") {
  Gate g;
  SUBCASE("a POST is 405 with Allow: GET") {
    HttpRequest r = upgrade_request();
    r.method = "POST";
    Admission a = g.run(r);
    check_refused(a, 405, "METHOD_NOT_ALLOWED", false);
    REQUIRE(header(a, "Allow") != nullptr);
    CHECK(*header(a, "Allow") == "GET");
  }
  SUBCASE("HTTP/1.0 is 505") {
    HttpRequest r = upgrade_request();
    r.http_minor = 0;
    check_refused(g.run(r), 505, "HTTP_VERSION", false);
  }
  SUBCASE("Connection without Upgrade is 400") {
    HttpRequest r = upgrade_request();
    set_header(r, "connection", "keep-alive");
    check_refused(g.run(r), 400, "BAD_UPGRADE", false);
  }
  SUBCASE("no Host is 400") {
    HttpRequest r = upgrade_request();
    drop_header(r, "host");
    check_refused(g.run(r), 400, "BAD_UPGRADE", false);
  }
  SUBCASE("a version other than 13 is 426 naming version 13") {
    for (const char *v : {"12", "8", "13, 8", ""}) {
      CAPTURE(v);
      HttpRequest r = upgrade_request();
      set_header(r, "sec-websocket-version", v);
      Admission a = g.run(r);
      check_refused(a, 426, "UNSUPPORTED_VERSION", false);
      REQUIRE(header(a, "Sec-WebSocket-Version") != nullptr);
      CHECK(*header(a, "Sec-WebSocket-Version") == "13");
      CHECK(*header(a, "Upgrade") == "websocket");
    }
  }
  SUBCASE("a key that is not base64 of 16 bytes is 400") {
    for (const char *k : {"", "dGhlIHNhbXBsZSBub25jZQ", "dGhlIHNhbXBsZSBub25jZXg=", "!!!!"}) {
      CAPTURE(k);
      HttpRequest r = upgrade_request();
      set_header(r, "sec-websocket-key", k);
      check_refused(g.run(r), 400, "BAD_UPGRADE", false);
    }
  }
  SUBCASE("the protocol is checked before the org") {
    HttpRequest r = upgrade_request("/ws/bad!org");
    r.method = "PUT";
    check_refused(g.run(r), 405, "METHOD_NOT_ALLOWED", false);
  }
}

TEST_CASE("row 2: an org that is not 1-128 of A-Z a-z 0-9 . _ : - is 400 BAD_ORG") {
  Gate g;
  for (const std::string &org : std::vector<std::string>{"bad!org", "bad%20org", "caf\xc3\xa9",
                                                         "a{b}", std::string(129, 'a')}) {
    CAPTURE(org);
    check_refused(g.run(upgrade_request("/ws/" + org)), 400, "BAD_ORG");
  }
  CHECK(g.run(upgrade_request("/ws/" + std::string(128, 'a'))).upgrade);
  CHECK(g.run(upgrade_request("/ws/A-z_0.9:x")).upgrade);
}

TEST_CASE("row 2: BAD_ORG comes before the handshake rate and the token") {
  Gate g;
  g.cfg.limits.handshakes_per_ip_per_s = 1;
  g.require_jwt();
  for (int i = 0; i < 3; ++i)
    check_refused(g.run(upgrade_request("/ws/bad!org")), 400, "BAD_ORG");
  CHECK(g.rates.addresses() == 0);
}

TEST_CASE("row 3: over limits.handshakes_per_ip_per_s is 429 TOO_MANY_HANDSHAKES per address") {
  Gate g;
  g.cfg.limits.handshakes_per_ip_per_s = 2;
  CHECK(g.run(upgrade_request()).upgrade);
  CHECK(g.run(upgrade_request()).upgrade);
  check_refused(g.run(upgrade_request()), 429, "TOO_MANY_HANDSHAKES");
  g.now_ms += 999;
  check_refused(g.run(upgrade_request()), 429, "TOO_MANY_HANDSHAKES");
  g.ip = "198.51.100.1";
  CHECK(g.run(upgrade_request()).upgrade);
  g.ip = "203.0.113.7";
  g.now_ms += 1;
  CHECK(g.run(upgrade_request()).upgrade);
}

TEST_CASE("row 3: an attempt refused by a later check still counts against the rate") {
  Gate g;
  g.cfg.limits.handshakes_per_ip_per_s = 1;
  g.cfg.origins.allowed = {origin_pattern("https://app.example.com")};
  HttpRequest foreign = upgrade_request();
  set_header(foreign, "origin", "https://evil.example.net");
  check_refused(g.run(foreign), 403, "ORIGIN_NOT_ALLOWED");
  check_refused(g.run(upgrade_request()), 429, "TOO_MANY_HANDSHAKES");
}

TEST_CASE("row 3: a limit of 0 keeps no state at all") {
  Gate g;
  for (int i = 0; i < 50; ++i)
    CHECK(g.run(upgrade_request()).upgrade);
  CHECK(g.rates.addresses() == 0);
}

TEST_CASE("row 4: an Origin outside origins is 403 ORIGIN_NOT_ALLOWED") {
  Gate g;
  g.cfg.origins.allowed = {origin_pattern("https://*.example.com")};
  HttpRequest r = upgrade_request();
  set_header(r, "origin", "https://app.example.com");
  CHECK(g.run(r).upgrade);
  for (const char *bad : {"https://example.com", "http://app.example.com", "null",
                          "https://app.example.com.evil.test"}) {
    CAPTURE(bad);
    set_header(r, "origin", bad);
    check_refused(g.run(r), 403, "ORIGIN_NOT_ALLOWED");
  }
  drop_header(r, "origin");
  CHECK(g.run(r).upgrade);
  g.cfg.origins.allow_missing = false;
  check_refused(g.run(r), 403, "ORIGIN_NOT_ALLOWED");
}

TEST_CASE("row 4: a foreign origin is refused before its token is looked at") {
  Gate g;
  g.require_jwt();
  g.cfg.origins.allowed = {origin_pattern("https://app.example.com")};
  HttpRequest r = upgrade_request("/ws/acme?token=" + fixture_token("hs256_expired"));
  set_header(r, "origin", "https://evil.example.net");
  Admission a = g.run(r);
  check_refused(a, 403, "ORIGIN_NOT_ALLOWED");
  CHECK(a.auth_event.empty());
}

TEST_CASE("row 5: without a token, or with an invalid one, it is 401 UNAUTHORIZED") {
  Gate g;
  g.require_jwt();
  Admission none = g.run(upgrade_request());
  check_refused(none, 401, "UNAUTHORIZED");
  CHECK(message_of(none) == "a token is required");
  CHECK(none.auth_event.empty());
  // The handshake's 401 carries no WWW-Authenticate today (only the admin endpoints send one).
  CHECK(none.answer.headers.empty());

  Admission expired = g.run(upgrade_request("/ws/acme?token=" + fixture_token("hs256_expired")));
  check_refused(expired, 401, "UNAUTHORIZED");
  CHECK(message_of(expired) == "invalid token: expired");
  CHECK(expired.auth_event == "auth_failed");
  CHECK(expired.auth_field == "reason");
  CHECK(expired.auth_value == "expired");

  for (const char *name : {"hs256_wrong_secret", "none", "hs256_nbf_future", "hs256_crit"}) {
    CAPTURE(name);
    Admission a = g.run(upgrade_request("/ws/acme?token=" + fixture_token(name)));
    check_refused(a, 401, "UNAUTHORIZED");
    CHECK(message_of(a).starts_with("invalid token: "));
    CHECK(a.auth_event == "auth_failed");
  }
  // An empty value in a source is no token at all.
  check_refused(g.run(upgrade_request("/ws/acme?token=")), 401, "UNAUTHORIZED");
}

TEST_CASE("row 5: the token is read from query, Bearer header, subprotocol and cookie") {
  Gate g;
  g.require_jwt();
  std::string tok = fixture_token("hs256_ok");
  SUBCASE("query") {
    Admission a = g.run(upgrade_request("/ws/acme?x=1&token=" + tok));
    CHECK(a.upgrade);
    CHECK(a.grant.protocol.empty());
  }
  SUBCASE("Authorization: Bearer, in any case") {
    HttpRequest r = upgrade_request();
    set_header(r, "authorization", "bEaReR " + tok);
    Admission a = g.run(r);
    CHECK(a.upgrade);
    CHECK(a.grant.protocol.empty());
    set_header(r, "authorization", "Basic " + tok);
    check_refused(g.run(r), 401, "UNAUTHORIZED");
  }
  SUBCASE("subprotocol: bearer is echoed, never the token") {
    HttpRequest r = upgrade_request();
    set_header(r, "sec-websocket-protocol", tok + ", Bearer");
    Admission a = g.run(r);
    REQUIRE(a.upgrade);
    CHECK(a.grant.protocol == "bearer");
    set_header(r, "sec-websocket-protocol", tok);
    check_refused(g.run(r), 401, "UNAUTHORIZED");
  }
  SUBCASE("cookie, under auth.cookie_name") {
    HttpRequest r = upgrade_request();
    set_header(r, "cookie", "a=1; token=" + tok);
    CHECK(g.run(r).upgrade);
    g.cfg.auth.cookie_name = "sc";
    check_refused(g.run(r), 401, "UNAUTHORIZED");
  }
  SUBCASE("sources are tried in the configured order, and only those") {
    HttpRequest r = upgrade_request("/ws/acme?token=" + fixture_token("hs256_expired"));
    set_header(r, "authorization", "Bearer " + tok);
    check_refused(g.run(r), 401, "UNAUTHORIZED");
    g.cfg.auth.token_sources = {"header", "query"};
    CHECK(g.run(r).upgrade);
    g.cfg.auth.token_sources = {"cookie"};
    check_refused(g.run(r), 401, "UNAUTHORIZED");
  }
}

TEST_CASE("row 6: a token for another org is 403 FORBIDDEN_ORG") {
  Gate g;
  g.require_jwt();
  Admission a = g.run(upgrade_request("/ws/globex?token=" + fixture_token("hs256_ok")));
  check_refused(a, 403, "FORBIDDEN_ORG");
  CHECK(a.auth_event == "auth_forbidden");
  CHECK(a.auth_field == "sub");
  CHECK(a.auth_value == "user-1");
  // No org claim at all.
  check_refused(g.run(upgrade_request("/ws/acme?token=" + fixture_token("hs256_minimal"))), 403,
                "FORBIDDEN_ORG");
  // A list grants each org in it.
  std::string list = fixture_token("hs256_org_list");
  CHECK(g.run(upgrade_request("/ws/globex?token=" + list)).upgrade);
  CHECK(g.run(upgrade_request("/ws/acme?token=" + list)).upgrade);
  check_refused(g.run(upgrade_request("/ws/initech?token=" + list)), 403, "FORBIDDEN_ORG");
}

TEST_CASE("row 6: the first configured org claim present decides; later ones are fallbacks") {
  Gate g;
  g.require_jwt();
  g.cfg.auth.org_claim = {"tenant", "org"};
  nlohmann::json both = claims("acme");
  both["tenant"] = "globex";
  check_refused(g.run(upgrade_request("/ws/acme?token=" + mint(both))), 403, "FORBIDDEN_ORG");
  CHECK(g.run(upgrade_request("/ws/globex?token=" + mint(both))).upgrade);
  // Without a tenant claim, org decides.
  CHECK(g.run(upgrade_request("/ws/acme?token=" + mint(claims("acme")))).upgrade);
  // A tenant claim of the wrong type is present, so it decides, and grants nothing.
  nlohmann::json odd = claims("acme");
  odd["tenant"] = 7;
  check_refused(g.run(upgrade_request("/ws/acme?token=" + mint(odd))), 403, "FORBIDDEN_ORG");
}

TEST_CASE("row 6: a user claim that is not a usable id is 403 BAD_USER") {
  Gate g;
  g.require_jwt();
  for (const std::string &sub :
       std::vector<std::string>{"a user", "u/1", "user\n2", "caf\xc3\xa9", std::string(129, 'u')}) {
    CAPTURE(sub);
    Admission a = g.run(upgrade_request("/ws/acme?token=" + mint(claims("acme", sub))));
    check_refused(a, 403, "BAD_USER");
    CHECK(a.auth_event.empty());
  }
  // FORBIDDEN_ORG is decided first.
  check_refused(g.run(upgrade_request("/ws/globex?token=" + mint(claims("acme", "a user")))), 403,
                "FORBIDDEN_ORG");
  // A token without a user is admitted without one.
  nlohmann::json anonymous = {{"org", "acme"}};
  Admission a = g.run(upgrade_request("/ws/acme?token=" + mint(anonymous)));
  REQUIRE(a.upgrade);
  CHECK(a.grant.user.empty());
  CHECK(a.grant.user_channel.empty());
  CHECK(a.grant.token_exp == 0);
}

TEST_CASE("row 7: at limits.max_connections it is 503 AT_CAPACITY") {
  Gate g;
  g.cfg.limits.max_connections = 2;
  g.counts.add("a", "", "198.51.100.1");
  CHECK(g.run(upgrade_request()).upgrade);
  g.counts.add("b", "", "198.51.100.2");
  Admission a = g.run(upgrade_request());
  check_refused(a, 503, "AT_CAPACITY");
  // The table says nothing of Retry-After, and the answer has none.
  CHECK(header(a, "Retry-After") == nullptr);
  g.counts.remove("a", "", "198.51.100.1");
  CHECK(g.run(upgrade_request()).upgrade);
}

TEST_CASE("row 7: capacity is checked after the token, so a bad token is still a 401") {
  Gate g;
  g.require_jwt();
  g.cfg.limits.max_connections = 0;
  check_refused(g.run(upgrade_request()), 401, "UNAUTHORIZED");
  check_refused(g.run(upgrade_request("/ws/acme?token=" + fixture_token("hs256_ok"))), 503,
                "AT_CAPACITY");
}

TEST_CASE("row 8: per org, per user and per address limits are 429 in that order") {
  Gate g;
  g.require_jwt();
  g.cfg.limits.max_connections_per_org = 2;
  g.cfg.limits.max_connections_per_user = 1;
  g.cfg.limits.max_connections_per_ip = 1;
  std::string user1 = "/ws/acme?token=" + mint(claims("acme", "user-1"));
  std::string user2 = "/ws/acme?token=" + mint(claims("acme", "user-2"));

  CHECK(g.run(upgrade_request(user1)).upgrade);
  g.counts.add("acme", "user-1", g.ip);
  // user-1 is at its limit and so is this address; the user limit is checked first.
  check_refused(g.run(upgrade_request(user1)), 429, "USER_LIMIT");
  check_refused(g.run(upgrade_request(user2)), 429, "IP_LIMIT");
  g.ip = "198.51.100.9";
  CHECK(g.run(upgrade_request(user2)).upgrade);
  g.counts.add("acme", "user-2", g.ip);
  // The org is full now, whoever asks, and the org limit comes first.
  g.ip = "192.0.2.1";
  check_refused(g.run(upgrade_request("/ws/acme?token=" + mint(claims("acme", "user-3")))), 429,
                "ORG_LIMIT");
  check_refused(g.run(upgrade_request(user1)), 429, "ORG_LIMIT");
  // Another org is not affected, nor the same user name in another org.
  CHECK(g.run(upgrade_request("/ws/globex?token=" + mint(claims("globex", "user-1")))).upgrade);
}

TEST_CASE("row 8: without a user the per-user limit does not apply") {
  Gate g;
  g.cfg.limits.max_connections_per_user = 1;
  g.counts.add("acme", "", g.ip);
  g.counts.add("acme", "", g.ip);
  CHECK(g.run(upgrade_request()).upgrade);
  g.cfg.limits.max_connections_per_ip = 2;
  check_refused(g.run(upgrade_request()), 429, "IP_LIMIT");
}

TEST_CASE("a grant without auth: the org's room, no user, and a welcome with user null") {
  Gate g;
  Admission a = g.run(upgrade_request());
  REQUIRE(a.upgrade);
  CHECK(a.code.empty());
  CHECK(a.grant.org == "acme");
  CHECK(a.grant.user.empty());
  CHECK(a.grant.protocol.empty());
  CHECK(a.grant.key == kKey);
  CHECK(a.grant.room_channel == "org:acme");
  CHECK(a.grant.user_channel.empty());
  CHECK(a.grant.token_exp == 0);
  CHECK(a.welcome == R"({"type":"connected","connection_id":"c0ffee00-17","org":"acme",)"
                     R"("user":null,"heartbeat_ms":25000})");
}

TEST_CASE("a grant with a token: user, user channel, protocol echo, token exp and welcome") {
  Gate g;
  g.require_jwt();
  g.cfg.websocket.heartbeat_ms = 1500;
  HttpRequest r = upgrade_request();
  set_header(r, "sec-websocket-protocol", "bearer, " + fixture_token("hs256_ok"));
  Admission a = g.run(r);
  REQUIRE(a.upgrade);
  CHECK(a.grant.org == "acme");
  CHECK(a.grant.user == "user-1");
  CHECK(a.grant.protocol == "bearer");
  CHECK(a.grant.room_channel == "org:acme");
  CHECK(a.grant.user_channel == "org:acme:user:user-1");
  CHECK(a.grant.token_exp == 4102444800);
  CHECK(a.welcome == R"({"type":"connected","connection_id":"c0ffee00-17","org":"acme",)"
                     R"("user":"user-1","heartbeat_ms":1500})");
  // Admission never counts: the Server does when it applies the grant.
  CHECK(g.counts.total() == 0);
}

TEST_CASE("a grant's channels come from the route's and channels.user's templates") {
  Gate g;
  g.require_jwt();
  auto parsed = parse_route_template("/api/ws/sync/{org}");
  REQUIRE(parsed.ok());
  Route route = *parsed;
  route.channel = "tenant:{org}:events";
  g.cfg.routes = {route};
  g.cfg.channels.user = "u:{user}@{org}";
  Admission a = g.run(upgrade_request("/api/ws/sync/acme?token=" + fixture_token("hs256_ok")));
  REQUIRE(a.upgrade);
  CHECK(a.grant.room_channel == "tenant:acme:events");
  CHECK(a.grant.user_channel == "u:user-1@acme");
  g.cfg.channels.user.clear();
  a = g.run(upgrade_request("/api/ws/sync/acme?token=" + fixture_token("hs256_ok")));
  REQUIRE(a.upgrade);
  CHECK(a.grant.user_channel.empty());
}

TEST_CASE("a token's exp is kept within year 9999 and a fraction is dropped") {
  Gate g;
  g.require_jwt();
  CHECK(g.run(upgrade_request("/ws/acme?token=" + fixture_token("hs256_exp_float")))
            .grant.token_exp == 4102444800);
  nlohmann::json huge = claims();
  huge["exp"] = 1e300;
  Admission a = g.run(upgrade_request("/ws/acme?token=" + mint(huge)));
  REQUIRE(a.upgrade);
  CHECK(a.grant.token_exp == 253402300799);
}

TEST_CASE("connection counts go up and down by org, user within its org, and address") {
  ConnectionCounts c;
  c.add("acme", "u", "ip1");
  c.add("acme", "", "ip1");
  c.add("globex", "u", "ip2");
  CHECK(c.total() == 3);
  CHECK(c.org("acme") == 2);
  CHECK(c.user("acme", "u") == 1);
  CHECK(c.user("globex", "u") == 1);
  CHECK(c.user("acme", "") == 0);
  CHECK(c.ip("ip1") == 2);
  CHECK(c.ip("ip3") == 0);
  c.remove("acme", "u", "ip1");
  c.remove("acme", "", "ip1");
  CHECK(c.total() == 1);
  CHECK(c.org("acme") == 0);
  CHECK(c.user("acme", "u") == 0);
  CHECK(c.ip("ip1") == 0);
  CHECK(c.org("globex") == 1);
}

// ----------------------------------------------------------------------------- in-band refresh

namespace {

// A session admitted for org acme and user-1 with a token that expires at `exp`.
UpgradeGrant session_grant(const std::string &user = "user-1") {
  UpgradeGrant g;
  g.org = "acme";
  g.user = user;
  g.token_exp = 1000;
  return g;
}

TokenCheck refresh(Gate &g, std::optional<std::string_view> token,
                   const UpgradeGrant &session = session_grant()) {
  return check_refresh(token, session.org, session.user, g.cfg.auth, g.jwt.get(), g.unix_now);
}

void check_refused(const TokenCheck &c, const std::string &code) {
  CAPTURE(c.message);
  CHECK_FALSE(c.ok());
  CHECK(c.code == code);
  CHECK_FALSE(c.message.empty());
}

} // namespace

TEST_CASE("a refresh with a good token for the session's org and user gives its exp") {
  Gate g;
  g.require_jwt();
  TokenCheck c = refresh(g, fixture_token("hs256_ok"));
  CHECK(c.ok());
  CHECK(c.code.empty());
  CHECK(c.user == "user-1");
  CHECK(c.exp == 4102444800);
  // A later token, a sooner one, and one without exp are all the token's word: the session's
  // deadline becomes theirs (0: none, as at the handshake).
  nlohmann::json sooner = claims();
  sooner["exp"] = g.unix_now + 60;
  CHECK(refresh(g, mint(sooner)).exp == g.unix_now + 60);
  nlohmann::json no_exp = claims();
  no_exp.erase("exp");
  TokenCheck forever = refresh(g, mint(no_exp));
  CHECK(forever.ok());
  CHECK(forever.exp == 0);
}

TEST_CASE("a refresh is refused with the handshake's codes and messages for the same tokens") {
  Gate g;
  g.require_jwt();
  for (const char *name : {"hs256_expired", "hs256_wrong_secret", "none", "none_upper",
                           "hs256_nbf_future", "hs256_iat_future", "hs256_crit", "hs256_confusion",
                           "hs256_payload_not_json", "hs256_exp_string"}) {
    CAPTURE(name);
    std::string token = fixture_token(name);
    TokenCheck c = refresh(g, token);
    check_refused(c, "UNAUTHORIZED");
    // The handshake refuses the same token with the same code and the same message.
    Admission a = g.run(upgrade_request("/ws/acme?token=" + token));
    CHECK(a.answer.status == 401);
    CHECK(message_of(a) == c.message);
  }
  CHECK(refresh(g, fixture_token("hs256_expired")).message == "invalid token: expired");
  CHECK(refresh(g, fixture_token("hs256_expired")).reason == "expired");
  CHECK(refresh(g, fixture_token("hs256_wrong_secret")).message == "invalid token: bad signature");
}

TEST_CASE("a refresh without a usable token field is UNAUTHORIZED, as a handshake without one") {
  Gate g;
  g.require_jwt();
  for (std::optional<std::string_view> t :
       {std::optional<std::string_view>(), std::optional<std::string_view>(""),
        std::optional<std::string_view>("not-a-token"), std::optional<std::string_view>(".."),
        std::optional<std::string_view>("a.b.c")}) {
    TokenCheck c = refresh(g, t);
    check_refused(c, "UNAUTHORIZED");
  }
  CHECK(refresh(g, std::nullopt).message == "a token is required");
  CHECK(refresh(g, "").message == "a token is required");
}

TEST_CASE("a refresh token longer than auth.jwt.max_token_bytes is refused before any parsing") {
  Gate g;
  g.cfg.auth.jwt.max_token_bytes = 1024;
  g.require_jwt();
  nlohmann::json big = claims();
  big["pad"] = std::string(2000, 'x');
  TokenCheck c = refresh(g, mint(big));
  check_refused(c, "UNAUTHORIZED");
  CHECK(c.reason == "token too long");
  CHECK(refresh(g, std::string(1 << 20, 'A')).reason == "token too long");
}

TEST_CASE("a refresh for another org is FORBIDDEN_ORG, for another user USER_MISMATCH") {
  Gate g;
  g.require_jwt();
  TokenCheck org = refresh(g, mint(claims("globex", "user-1")));
  check_refused(org, "FORBIDDEN_ORG");
  CHECK(org.message == "the token does not grant this org");
  // A token granting several orgs, the session's among them, is good.
  nlohmann::json both = claims();
  both["org"] = {"globex", "acme"};
  CHECK(refresh(g, mint(both)).ok());

  check_refused(refresh(g, mint(claims("acme", "user-2"))), "USER_MISMATCH");
  nlohmann::json anonymous = claims();
  anonymous.erase("sub");
  check_refused(refresh(g, mint(anonymous)), "USER_MISMATCH");
  // A session admitted without a user stays without one.
  CHECK(refresh(g, mint(anonymous), session_grant("")).ok());
  check_refused(refresh(g, mint(claims()), session_grant("")), "USER_MISMATCH");
  // A user claim that is not a usable id is refused as at the handshake, whoever the session is.
  check_refused(refresh(g, mint(claims("acme", "a user"))), "BAD_USER");
}

TEST_CASE("a refresh follows auth.org_claim and auth.user_claim as the handshake does") {
  Gate g;
  g.cfg.auth.org_claim = {"tenant", "org"};
  g.cfg.auth.user_claim = "uid";
  g.require_jwt();
  nlohmann::json c = {{"tenant", "acme"},
                      {"org", "globex"},
                      {"uid", "user-1"},
                      {"sub", "someone"},
                      {"exp", 4102444800}};
  CHECK(refresh(g, mint(c)).ok());
  c["tenant"] = "globex";
  c["org"] = "acme"; // the first present claim decides; org is no second way in
  check_refused(refresh(g, mint(c)), "FORBIDDEN_ORG");
}

TEST_CASE("with auth off, or no verifier, a refresh is AUTH_DISABLED whatever it carries") {
  Gate g;
  check_refused(refresh(g, fixture_token("hs256_ok")), "AUTH_DISABLED");
  check_refused(refresh(g, std::nullopt), "AUTH_DISABLED");
  g.cfg.auth.mode = AuthConfig::Mode::jwt; // configured, but no verifier was made
  check_refused(refresh(g, fixture_token("hs256_ok")), "AUTH_DISABLED");
}

TEST_CASE("a refresh token's exp is clamped as the handshake's is") {
  Gate g;
  g.require_jwt();
  nlohmann::json huge = claims();
  huge["exp"] = 1e300;
  CHECK(refresh(g, mint(huge)).exp == 253402300799);
  CHECK(refresh(g, fixture_token("hs256_exp_float")).exp == 4102444800);
}

TEST_CASE("sidecar.v1 is echoed when offered, alone or beside bearer, and is never the token") {
  Gate g;
  HttpRequest r = upgrade_request();
  set_header(r, "sec-websocket-protocol", "sidecar.v1");
  Admission a = g.run(r);
  REQUIRE(a.upgrade);
  CHECK(a.resume.v1);
  CHECK(a.grant.protocol == "sidecar.v1");

  g.require_jwt();
  g.cfg.auth.token_sources = {"subprotocol"};
  set_header(r, "sec-websocket-protocol", "sidecar.v1, bearer, " + fixture_token("hs256_ok"));
  a = g.run(r);
  REQUIRE_MESSAGE(a.upgrade, a.answer.body);
  CHECK(a.resume.v1);
  CHECK(a.grant.protocol == "sidecar.v1");
  set_header(r, "sec-websocket-protocol", "bearer, " + fixture_token("hs256_ok"));
  a = g.run(r);
  REQUIRE(a.upgrade);
  CHECK_FALSE(a.resume.v1);
  CHECK(a.grant.protocol == "bearer");
  set_header(r, "sec-websocket-protocol", "bearer, sidecar.v1"); // no token but the mode name
  check_refused(g.run(r), 401, "UNAUTHORIZED");
}

TEST_CASE("recover parameters: read only with history, refused whole when bad, kept when joined") {
  Gate g;
  std::string good = "/ws/acme?recover=org%3Aacme%40abc%3A17";
  // Without history the parameter is not read at all, even when it is nonsense.
  Admission off = g.run(upgrade_request("/ws/acme?recover=nonsense"));
  REQUIRE(off.upgrade);
  CHECK(off.resume.recover.empty());

  g.cfg.history = {HistoryConfig{"org:{org}", 100, 60, 50}};
  Admission bad = g.run(upgrade_request("/ws/acme?recover=nonsense"));
  check_refused(bad, 400, "BAD_RECOVER");
  CHECK(message_of(bad).find("nonsense") == std::string::npos); // never echoes the value
  check_refused(g.run(upgrade_request(good + "&recover=org%3Aacme%40abc%3A18")), 400,
                "BAD_RECOVER"); // a channel twice
  // BAD_ORG comes first; BAD_RECOVER before the handshake rate and the token.
  check_refused(g.run(upgrade_request("/ws/bad!org?recover=x")), 400, "BAD_ORG");

  Admission ok = g.run(upgrade_request(good));
  REQUIRE(ok.upgrade);
  REQUIRE(ok.resume.recover.size() == 1);
  CHECK(ok.resume.recover[0].channel == "org:acme");
  CHECK(ok.resume.recover[0].pos.epoch == "abc");
  CHECK(ok.resume.recover[0].pos.offset == 17);
  CHECK_FALSE(ok.resume.v1);
  CHECK(ok.grant.protocol.empty());

  // Positions for a channel this session does not join, or one without history, are ignored.
  Admission other = g.run(upgrade_request(
      "/ws/acme?recover=org%3Aother%40abc%3A1&recover=sidecar%3Abroadcast%40abc%3A2"));
  REQUIRE(other.upgrade);
  CHECK(other.resume.recover.empty());
  // "+" decodes to a space, which no channel has: refused like any other bad value.
  check_refused(g.run(upgrade_request("/ws/acme?recover=org+acme%40abc%3A1")), 400, "BAD_RECOVER");
}

TEST_CASE(
    "permessage-deflate is agreed from every Sec-WebSocket-Extensions header, or not at all") {
  Gate g;
  HttpRequest r = upgrade_request();
  CHECK_FALSE(g.run(r).deflate.has_value()); // not offered
  r.headers.emplace_back("sec-websocket-extensions", "permessage-deflate; bogus");
  r.headers.emplace_back("sec-websocket-extensions",
                         "x-webkit-deflate-frame, permessage-deflate; client_max_window_bits=10");
  Admission a = g.run(r);
  REQUIRE(a.upgrade);
  REQUIRE(a.deflate.has_value());
  CHECK(a.deflate->response == "permessage-deflate; server_no_context_takeover; "
                               "client_no_context_takeover; client_max_window_bits=10");
  CHECK(a.deflate->client_window_bits == 10);
  CHECK(a.deflate->server_window_bits == 15);

  // A malformed offer is declined, never a refused handshake.
  HttpRequest bad = upgrade_request();
  bad.headers.emplace_back("sec-websocket-extensions", "permessage-deflate; a=\"unterminated");
  Admission b = g.run(bad);
  CHECK(b.upgrade);
  CHECK_FALSE(b.deflate.has_value());

  g.cfg.compression.enabled = false;
  CHECK_FALSE(g.run(r).deflate.has_value());
}

TEST_CASE("the 101 carries the extension answer only when there is one") {
  std::string with = build_switching_protocols(kKey, "", "permessage-deflate; x");
  CHECK(with.find("\r\nSec-WebSocket-Extensions: permessage-deflate; x\r\n") != std::string::npos);
  CHECK(with.ends_with("\r\n\r\n"));
  CHECK(build_switching_protocols(kKey, "").find("Extensions") == std::string::npos);
}
