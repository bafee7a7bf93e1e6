// Admission: the checks that turn an upgrade request into a refusal or a grant (admission.h).
// Every refusal is a real HTTP answer with a short JSON body; the Server sends it.
#include "admission.h"

#include <algorithm>

#include "client_messages.h"
#include "jwt.h"
#include "origin.h"
#include "subscriptions.h"

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
      // "sidecar.v1" beside them names the delivery mode and is never the token.
      auto items = split_list(req.header_list("sec-websocket-protocol"));
      bool bearer = false;
      std::string token;
      for (const auto &it : items) {
        if (iequals(it, "bearer"))
          bearer = true;
        else if (token.empty() && it != kV1Protocol)
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

std::string user_key(const std::string &org, const std::string &user) { return org + "\n" + user; }

uint32_t count_of(const std::unordered_map<std::string, uint32_t> &m, const std::string &k) {
  auto it = m.find(k);
  return it == m.end() ? 0 : it->second;
}

void decrement(std::unordered_map<std::string, uint32_t> &m, const std::string &k) {
  auto it = m.find(k);
  if (it != m.end() && --it->second == 0)
    m.erase(it);
}

Admission refusal(int status, std::string_view code, std::string_view message) {
  Admission a;
  a.answer = json_error(status, code, message);
  a.code = std::string(code);
  return a;
}

TokenCheck token_refusal(int status, std::string_view code, std::string message) {
  TokenCheck c;
  c.status = status;
  c.code = std::string(code);
  c.message = std::move(message);
  return c;
}

// The handshake's token check: present in a configured source, then check_token. On success
// fills the grant's user, protocol and token_exp and returns nullopt; otherwise the refusal.
std::optional<Admission> check_request_token(const AdmissionRequest &req, const Config &cfg,
                                             const JwtVerifier &jwt, UpgradeGrant &grant,
                                             std::vector<std::string> &grants) {
  const AuthConfig &auth = cfg.auth;
  std::optional<FoundToken> tok = find_token(auth, req.http);
  if (!tok)
    return refusal(401, "UNAUTHORIZED", "a token is required");
  TokenCheck c = check_token(tok->token, req.org, auth, jwt, req.unix_now, &cfg.subscriptions);
  if (!c.ok()) {
    Admission a = refusal(c.status, c.code, c.message);
    if (!c.reason.empty()) {
      a.auth_event = "auth_failed";
      a.auth_field = "reason";
      a.auth_value = c.reason;
    } else if (c.code == "FORBIDDEN_ORG") {
      a.auth_event = "auth_forbidden";
      a.auth_field = "sub";
      a.auth_value = c.user;
    }
    return a;
  }
  grant.user = c.user;
  grant.protocol = tok->protocol;
  grant.token_exp = c.exp;
  grants = std::move(c.grants);
  return std::nullopt;
}

// The connection limits, against the counts before this connection joins them.
std::optional<Admission> check_limits(const AdmissionRequest &req, const LimitsConfig &lim,
                                      const ConnectionCounts &counts, const std::string &user) {
  if (counts.total() >= lim.max_connections)
    return refusal(503, "AT_CAPACITY", "this sidecar is at limits.max_connections");
  auto over = [](uint32_t count, uint32_t max) { return max != 0 && count >= max; };
  if (over(counts.org(req.org), lim.max_connections_per_org))
    return refusal(429, "ORG_LIMIT", "too many connections for this org");
  if (!user.empty() && over(counts.user(req.org, user), lim.max_connections_per_user))
    return refusal(429, "USER_LIMIT", "too many connections for this user");
  if (over(counts.ip(req.ip), lim.max_connections_per_ip))
    return refusal(429, "IP_LIMIT", "too many connections from this address");
  return std::nullopt;
}

// The `recover` parameters, only with history configured (without it they were never read, and
// still are not). A bad list is refused whole: a client that sent a position wants it honoured
// or to be told. Positions for channels this session will not join, or without history, are
// dropped here.
std::optional<Admission> read_recover(const AdmissionRequest &req, const Config &cfg,
                                      std::vector<RecoverRequest> &out) {
  if (cfg.history.empty())
    return std::nullopt;
  std::vector<std::string> values = req.http.query_params("recover");
  if (values.empty())
    return std::nullopt;
  RecoverParse parsed = parse_recover_params(values);
  if (!parsed.error.empty())
    return refusal(400, "BAD_RECOVER", "recover must be CHANNEL@EPOCH:OFFSET: " + parsed.error);
  out = std::move(parsed.requests);
  return std::nullopt;
}

void keep_joined(std::vector<RecoverRequest> &recover, const UpgradeGrant &grant,
                 const Config &cfg) {
  std::erase_if(recover, [&](const RecoverRequest &r) {
    bool joined = r.channel == grant.room_channel || r.channel == grant.user_channel ||
                  r.channel == cfg.channels.broadcast;
    return !joined || find_history(cfg.history, r.channel) == nullptr;
  });
}

} // namespace

TokenCheck check_token(std::string_view token, const std::string &org, const AuthConfig &auth,
                       const JwtVerifier &jwt, int64_t unix_now, const SubscriptionsConfig *subs) {
  JwtVerifyResult v = jwt.verify(token, unix_now);
  if (!v.ok) {
    TokenCheck c = token_refusal(401, "UNAUTHORIZED", "invalid token: " + v.error);
    c.reason = v.error;
    return c;
  }
  // The first configured claim present in the token decides; later ones are fallbacks for
  // tokens that lack it, never a second way into another org.
  bool org_ok = false;
  for (const std::string &claim : auth.org_claim) {
    if (!v.claims.contains(claim))
      continue;
    for (const std::string &o : claim_strings(v.claims, claim))
      org_ok = org_ok || o == org;
    break;
  }
  std::vector<std::string> users = claim_strings(v.claims, auth.user_claim);
  std::string user = users.empty() ? std::string() : users.front();
  if (!org_ok) {
    TokenCheck c = token_refusal(403, "FORBIDDEN_ORG", "the token does not grant this org");
    c.user = std::move(user);
    return c;
  }
  // The user id names a channel and a count key, so it obeys the same rules as an org id.
  if (!user.empty() && !is_valid_org(user))
    return token_refusal(403, "BAD_USER", "the token's user claim is not a usable id");
  TokenCheck c;
  c.user = std::move(user);
  // exp may be any JSON number (1e300, 2^63-1): read it as a double and keep it within year
  // 9999, so that neither the conversion nor the arithmetic of a session's deadlines overflows.
  auto exp = v.claims.find("exp");
  if (exp != v.claims.end() && exp->is_number())
    c.exp = static_cast<int64_t>(std::clamp(exp->get<double>(), 1.0, 253402300799.0));
  if (subs != nullptr && subs->enabled())
    c.grants = subscription_grants(*subs, org, c.user, &v.claims);
  return c;
}

TokenCheck check_refresh(std::optional<std::string_view> token, const std::string &org,
                         const std::string &user, const AuthConfig &auth, const JwtVerifier *jwt,
                         int64_t unix_now, const SubscriptionsConfig *subs) {
  if (auth.mode != AuthConfig::Mode::jwt || jwt == nullptr) {
    return token_refusal(400, "AUTH_DISABLED",
                         "this sidecar does not authenticate; nothing to refresh");
  }
  if (!token || token->empty())
    return token_refusal(401, "UNAUTHORIZED", "a token is required");
  TokenCheck c = check_token(*token, org, auth, *jwt, unix_now, subs);
  if (c.ok() && c.user != user) {
    c = token_refusal(403, "USER_MISMATCH", "the token names another user than this session's");
  }
  return c;
}

uint32_t ConnectionCounts::org(const std::string &org) const { return count_of(per_org_, org); }

uint32_t ConnectionCounts::user(const std::string &org, const std::string &user) const {
  return count_of(per_user_, user_key(org, user));
}

uint32_t ConnectionCounts::ip(const std::string &ip) const { return count_of(per_ip_, ip); }

void ConnectionCounts::add(const std::string &org, const std::string &user, const std::string &ip) {
  ++per_org_[org];
  if (!user.empty())
    ++per_user_[user_key(org, user)];
  ++per_ip_[ip];
  ++total_;
}

void ConnectionCounts::remove(const std::string &org, const std::string &user,
                              const std::string &ip) {
  --total_;
  decrement(per_org_, org);
  if (!user.empty())
    decrement(per_user_, user_key(org, user));
  decrement(per_ip_, ip);
}

bool HandshakeRates::allow(const std::string &ip, uint64_t now_ms, uint32_t per_second) {
  Window &w = windows_[ip];
  if (now_ms - w.start_ms >= 1000) {
    w.start_ms = now_ms;
    w.count = 0;
  }
  if (++w.count > per_second)
    return false;
  if (windows_.size() > kMaxAddresses)
    windows_.clear();
  return true;
}

Admission admit(const AdmissionRequest &req, const Config &cfg, const JwtVerifier *jwt,
                AdmissionState state) {
  if (req.shutting_down)
    return refusal(503, "SHUTTING_DOWN", "this sidecar is shutting down");
  UpgradeCheck up = check_upgrade(req.http);
  if (!up.is_upgrade) {
    Admission a;
    a.answer = json_error(426, "UPGRADE_REQUIRED", "this path takes WebSocket upgrades only");
    a.answer.headers.emplace_back("Upgrade", "websocket");
    a.answer.headers.emplace_back("Sec-WebSocket-Version", "13");
    return a;
  }
  if (up.refusal) {
    Admission a;
    a.answer = std::move(*up.refusal);
    return a;
  }
  if (!is_valid_org(req.org))
    return refusal(400, "BAD_ORG", "org must be 1-128 characters of A-Z a-z 0-9 . _ : -");
  std::vector<RecoverRequest> recover;
  if (std::optional<Admission> refused = read_recover(req, cfg, recover))
    return std::move(*refused);
  const LimitsConfig &lim = cfg.limits;
  if (lim.handshakes_per_ip_per_s != 0 &&
      !state.rates.allow(req.ip, req.now_ms, lim.handshakes_per_ip_per_s)) {
    return refusal(429, "TOO_MANY_HANDSHAKES", "too many connection attempts from this address");
  }
  const std::string *origin = req.http.header("origin");
  if (!origin_allowed(cfg.origins,
                      origin ? std::optional<std::string_view>(*origin) : std::nullopt)) {
    return refusal(403, "ORIGIN_NOT_ALLOWED", "this Origin may not connect");
  }
  Admission ok;
  UpgradeGrant &grant = ok.grant;
  grant.org = req.org;
  grant.key = up.key;
  if (cfg.auth.mode == AuthConfig::Mode::jwt && jwt != nullptr) {
    if (std::optional<Admission> refused = check_request_token(req, cfg, *jwt, grant, ok.grants))
      return std::move(*refused);
  } else if (cfg.subscriptions.enabled()) {
    ok.grants = subscription_grants(cfg.subscriptions, req.org, "", nullptr);
  }
  if (std::optional<Admission> refused = check_limits(req, lim, state.counts, grant.user))
    return std::move(*refused);
  grant.room_channel = expand_channel(req.route.channel, req.org, grant.user);
  if (!grant.user.empty() && !cfg.channels.user.empty())
    grant.user_channel = expand_channel(cfg.channels.user, req.org, grant.user);
  // sidecar.v1 is echoed whenever it is offered, also beside "bearer, <token>": the client may
  // be given any one protocol it offered, and this one says which delivery it gets.
  ok.resume.v1 = req.http.offers_protocol(kV1Protocol);
  if (ok.resume.v1)
    grant.protocol = std::string(kV1Protocol);
  keep_joined(recover, grant, cfg);
  ok.resume.recover = std::move(recover);
  ok.welcome = welcome_message(req.connection_id, req.org, grant.user, cfg.websocket.heartbeat_ms);
  // Every Sec-WebSocket-Extensions header counts (RFC 6455 9.1); an offer we cannot accept,
  // malformed ones included, only means no compression.
  if (Result<DeflateAgreement> d = negotiate_permessage_deflate(
          req.http.header_list("sec-websocket-extensions"), cfg.compression))
    ok.deflate = std::move(*d);
  ok.upgrade = true;
  return ok;
}

} // namespace sidecar
