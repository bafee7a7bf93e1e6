// Admission: whether an upgrade request may become a session, and into which rooms. Checks run
// cheapest first and all of them before any Redis work: protocol, org, handshake rate, origin,
// token, then connection limits. Every refusal is a real HTTP answer with a short JSON body.
#include <algorithm>
#include <chrono>
#include <openssl/crypto.h>

#include "clock.h"
#include "jwt.h"
#include "log.h"
#include "origin.h"
#include "server.h"

namespace sidecar {
namespace {

struct FoundToken {
  std::string token;
  std::string protocol; // subprotocol to echo when the token came that way
};

// Looks for a token in the configured sources, in their configured order.
std::optional<FoundToken> find_token(const AuthConfig &auth, const HttpRequest &req) {
  for (const std::string &src : auth.token_sources) {
    if (src == "query") {
      if (auto t = req.query_param(auth.query_param); t && !t->empty())
        return FoundToken{*t, ""};
    } else if (src == "header") {
      const std::string *h = req.header("authorization");
      if (h != nullptr && h->size() > 7 && iequals(h->substr(0, 7), "Bearer ")) {
        return FoundToken{h->substr(7), ""};
      }
    } else if (src == "subprotocol") {
      // Browsers cannot set headers, so they offer "bearer, <token>"; we echo "bearer" only,
      // never the token.
      auto items = split_list(req.header_list("sec-websocket-protocol"));
      bool bearer = false;
      std::string token;
      for (const auto &it : items) {
        if (iequals(it, "bearer"))
          bearer = true;
        else if (token.empty())
          token = it;
      }
      if (bearer && !token.empty())
        return FoundToken{token, "bearer"};
    } else if (src == "cookie") {
      if (auto c = req.cookie(auth.cookie_name); c && !c->empty())
        return FoundToken{*c, ""};
    }
  }
  return std::nullopt;
}

std::string json_string_or_null(std::string_view s) {
  if (s.empty())
    return "null";
  std::string out = "\"";
  json_escape_into(out, s);
  out.push_back('"');
  return out;
}

} // namespace

bool Server::admit(Session &s, const HttpRequest &req, const Route &route, const std::string &org) {
  auto refuse = [&](int status, std::string_view code, std::string_view message) {
    metrics_.count_refusal(status);
    log_debug("refused", {{"conn", s.id()}, {"status", status}, {"code", code}, {"ip", s.ip()}});
    s.answer(json_error(status, code, message));
    return false;
  };
  if (shutting_down_)
    return refuse(503, "SHUTTING_DOWN", "this sidecar is shutting down");
  UpgradeCheck up = check_upgrade(req);
  if (!up.is_upgrade) {
    HttpAnswer a = json_error(426, "UPGRADE_REQUIRED", "this path takes WebSocket upgrades only");
    a.headers.emplace_back("Upgrade", "websocket");
    a.headers.emplace_back("Sec-WebSocket-Version", "13");
    metrics_.count_refusal(426);
    s.answer(a);
    return false;
  }
  if (up.refusal) {
    metrics_.count_refusal(up.refusal->status);
    s.answer(*up.refusal);
    return false;
  }
  if (!is_valid_org(org)) {
    return refuse(400, "BAD_ORG", "org must be 1-128 characters of A-Z a-z 0-9 . _ : -");
  }
  const LimitsConfig &lim = cfg_->limits;
  if (lim.handshakes_per_ip_per_s != 0) {
    Rate &r = handshakes_per_ip_[s.ip()];
    uint64_t now = now_ms();
    if (now - r.window_ms >= 1000) {
      r.window_ms = now;
      r.count = 0;
    }
    if (++r.count > lim.handshakes_per_ip_per_s) {
      return refuse(429, "TOO_MANY_HANDSHAKES", "too many connection attempts from this address");
    }
    if (handshakes_per_ip_.size() > 100000)
      handshakes_per_ip_.clear(); // bounded memory
  }
  const std::string *origin = req.header("origin");
  if (!origin_allowed(cfg_->origins,
                      origin ? std::optional<std::string_view>(*origin) : std::nullopt)) {
    return refuse(403, "ORIGIN_NOT_ALLOWED", "this Origin may not connect");
  }
  UpgradeGrant grant;
  grant.org = org;
  grant.key = up.key;
  if (cfg_->auth.mode == AuthConfig::Mode::jwt && jwt_) {
    std::optional<FoundToken> tok = find_token(cfg_->auth, req);
    if (!tok)
      return refuse(401, "UNAUTHORIZED", "a token is required");
    JwtVerifyResult v = jwt_->verify(tok->token, unix_now());
    if (!v.ok) {
      log_info("auth_failed", {{"conn", s.id()}, {"org", org}, {"reason", v.error}});
      return refuse(401, "UNAUTHORIZED", "invalid token: " + v.error);
    }
    // The first configured claim present in the token decides; later ones are fallbacks for
    // tokens that lack it, never a second way into another org.
    bool org_ok = false;
    for (const std::string &claim : cfg_->auth.org_claim) {
      if (!v.claims.contains(claim))
        continue;
      for (const std::string &o : claim_strings(v.claims, claim))
        org_ok = org_ok || o == org;
      break;
    }
    std::vector<std::string> users = claim_strings(v.claims, cfg_->auth.user_claim);
    grant.user = users.empty() ? std::string() : users.front();
    if (!org_ok) {
      log_info("auth_forbidden", {{"conn", s.id()}, {"org", org}, {"sub", grant.user}});
      return refuse(403, "FORBIDDEN_ORG", "the token does not grant this org");
    }
    if (!grant.user.empty() && !is_valid_org(grant.user)) {
      return refuse(403, "BAD_USER", "the token's user claim is not a usable id");
    }
    grant.protocol = tok->protocol;
    // exp may be any JSON number (1e300, 2^63-1): read it as a double and keep it within year
    // 9999, so that neither the conversion nor the expiry arithmetic on every sweep overflows.
    auto exp = v.claims.find("exp");
    if (exp != v.claims.end() && exp->is_number()) {
      grant.token_exp = static_cast<int64_t>(std::clamp(exp->get<double>(), 1.0, 253402300799.0));
    }
  }
  if (sessions_open_ >= lim.max_connections) {
    return refuse(503, "AT_CAPACITY", "this sidecar is at limits.max_connections");
  }
  auto over = [](const std::unordered_map<std::string, uint32_t> &m, const std::string &k,
                 uint32_t max) {
    if (max == 0)
      return false;
    auto it = m.find(k);
    return it != m.end() && it->second >= max;
  };
  std::string user_key = org + "\n" + grant.user;
  if (over(per_org_, org, lim.max_connections_per_org)) {
    return refuse(429, "ORG_LIMIT", "too many connections for this org");
  }
  if (!grant.user.empty() && over(per_user_, user_key, lim.max_connections_per_user)) {
    return refuse(429, "USER_LIMIT", "too many connections for this user");
  }
  if (over(per_ip_, s.ip(), lim.max_connections_per_ip)) {
    return refuse(429, "IP_LIMIT", "too many connections from this address");
  }
  ++per_org_[org];
  if (!grant.user.empty())
    ++per_user_[user_key];
  ++per_ip_[s.ip()];
  ++sessions_open_;
  s.counted_ = true;
  grant.room_channel = expand_channel(route.channel, org, grant.user);
  if (!grant.user.empty() && !cfg_->channels.user.empty()) {
    grant.user_channel = expand_channel(cfg_->channels.user, org, grant.user);
  }
  std::string welcome = "{\"type\":\"connected\",\"connection_id\":\"" + instance_ + "-" +
                        std::to_string(s.id()) + "\",\"org\":" + json_string_or_null(org) +
                        ",\"user\":" + json_string_or_null(grant.user) +
                        ",\"heartbeat_ms\":" + std::to_string(cfg_->websocket.heartbeat_ms) + "}";
  ++metrics_.connections_upgraded;
  metrics_.handshake_seconds.observe(static_cast<double>(mono_ns() - s.accepted_ns_) / 1e9);
  log_debug("connect", {{"conn", s.id()}, {"org", org}, {"user", grant.user}, {"ip", s.ip()}});
  s.upgrade(std::move(grant), welcome);
  return true;
}

void Server::check_token_expiry(Session &s, bool &warned) {
  int64_t exp = s.token_exp();
  if (exp == 0)
    return;
  int64_t now = unix_now();
  // The same leeway that admitted the token applies while it is in use, so a token accepted
  // inside the leeway is not closed a moment after its welcome.
  if (cfg_->auth.on_expiry == AuthConfig::Expiry::close &&
      now >= exp + static_cast<int64_t>(cfg_->auth.jwt.leeway_s)) {
    s.close(4001, "token expired");
    return;
  }
  if (!warned && exp - now <= static_cast<int64_t>(cfg_->auth.expiry_warning_s)) {
    warned = true;
    s.send_json("{\"type\":\"token_expiring\",\"expires_at\":" + std::to_string(exp) + "}");
  }
}

} // namespace sidecar
