// Admission: whether an upgrade request may become a session, and into which rooms. It is a
// decision and nothing else: it reads the request, the config, the clock and the live counts it
// is handed, and returns either the HTTP answer to send or the grant to upgrade with. The Server
// applies what it returns (connection counts, refusal metrics, log lines, the session's upgrade),
// so doctest can drive every row of the README's handshake table without a socket or a loop.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "config.h"
#include "handshake.h"

namespace sidecar {

class JwtVerifier;

// What the admission checks decided for an upgrade.
struct UpgradeGrant {
  std::string org;
  std::string user;     // empty when not authenticated
  std::string protocol; // subprotocol to echo, or empty
  std::string key;      // Sec-WebSocket-Key
  std::string room_channel;
  std::string user_channel; // empty unless authenticated and configured
  int64_t token_exp = 0;    // unix seconds; 0: none
};

// What a client asked of history (issue 11), for the session to carry out after its upgrade.
struct ResumeRequest {
  bool v1 = false; // it negotiated sidecar.v1: envelopes, and a welcome with its channels
  // Positions to resume from, only for channels the session joins and that have history; a
  // position for any other channel is ignored.
  std::vector<RecoverRequest> recover;
};

// The connections that are admitted and not yet gone, by org, by user (within its org) and by
// client address. Admission only reads it; the Server adds a session when it applies a grant and
// removes it when the session leaves, with the same org, user and address.
class ConnectionCounts {
public:
  uint32_t total() const { return total_; }
  uint32_t org(const std::string &org) const;
  uint32_t user(const std::string &org, const std::string &user) const;
  uint32_t ip(const std::string &ip) const;
  // An empty user is not counted per user (the connection is not authenticated).
  void add(const std::string &org, const std::string &user, const std::string &ip);
  void remove(const std::string &org, const std::string &user, const std::string &ip);

private:
  uint32_t total_ = 0;
  // Entries that fall to zero are erased, so the maps only hold live keys.
  std::unordered_map<std::string, uint32_t> per_org_, per_user_, per_ip_;
};

// limits.handshakes_per_ip_per_s: a one-second window per client address. It is the one piece of
// state admission changes, because every attempt counts, including those refused later on.
class HandshakeRates {
public:
  // Counts one attempt from ip at now_ms (the loop clock); false when it is over per_second.
  bool allow(const std::string &ip, uint64_t now_ms, uint32_t per_second);
  size_t addresses() const { return windows_.size(); }

private:
  // A flood of distinct addresses could otherwise grow the table without bound; forgetting every
  // window at once lets a few attempts through again, which is cheaper than tracking age.
  static constexpr size_t kMaxAddresses = 100000;
  struct Window {
    uint64_t start_ms = 0;
    uint32_t count = 0;
  };
  std::unordered_map<std::string, Window> windows_;
};

// One upgrade request on a route, and what the Server knows about its moment.
struct AdmissionRequest {
  const HttpRequest &http;
  const Route &route;
  const std::string &org;         // the route's {org} segment, not yet checked
  const std::string &ip;          // the client, after trusted proxies
  std::string_view connection_id; // for the welcome: instance prefix and session id
  bool shutting_down = false;     // a draining sidecar admits nobody
  uint64_t now_ms = 0;            // loop clock, for the handshake rate
  int64_t unix_now = 0;           // wall clock seconds, for the token's exp and nbf
};

// What the live state admission reads and the one part it changes.
struct AdmissionState {
  const ConnectionCounts &counts;
  HandshakeRates &rates;
};

struct Admission {
  bool upgrade = false;
  // A refusal: the complete answer to send.
  HttpAnswer answer;
  // The error code for the "refused" log line; empty for the protocol refusals of
  // check_upgrade(), which are not logged.
  std::string code;
  // A token that was refused or did not grant the org is also logged at info: the event
  // ("auth_failed" or "auth_forbidden"), and its field (the verifier's reason, or the user).
  std::string auth_event;
  std::string auth_field;
  std::string auth_value;
  // An upgrade: the session's org, user, rooms and token expiry, and its welcome message.
  UpgradeGrant grant;
  std::string welcome;
  ResumeRequest resume;
  // The permessage-deflate agreement, when the client offered one we accept.
  std::optional<DeflateAgreement> deflate;
  // With subscriptions configured: the channel patterns the client may subscribe to.
  std::vector<std::string> grants;
};

// A token checked for a session of one org: the verifier (structure, algorithm, key, signature,
// and exp/nbf/iat/iss/aud with auth.jwt.leeway_s), then the org claim, then the user claim. The
// handshake and an in-band refresh both use it, so they accept and refuse the same tokens with
// the same codes and messages.
struct TokenCheck {
  std::string code;    // empty when the token is good; else UNAUTHORIZED, FORBIDDEN_ORG, ...
  int status = 0;      // the handshake's HTTP status for code (401, 403)
  std::string message; // for the client; never any part of the token
  std::string reason;  // the verifier's reason for the log ("expired", "bad signature")
  std::string user;    // the user claim, also on FORBIDDEN_ORG (the log names it)
  int64_t exp = 0;     // unix seconds, within year 9999; 0 when the token has no exp
  std::vector<std::string> grants; // subscription grants (subscriptions.h), when asked for
  bool ok() const { return code.empty(); }
};
// With `subs` (subscriptions configured), a good token's grants are filled from its claims.
TokenCheck check_token(std::string_view token, const std::string &org, const AuthConfig &auth,
                       const JwtVerifier &jwt, int64_t unix_now,
                       const SubscriptionsConfig *subs = nullptr);

// An in-band refresh ({"type":"refresh","token":…}) for a session admitted for `org` and `user`:
// check_token for the session's org, and the token must name the session's user (an anonymous
// session stays anonymous). A missing token is UNAUTHORIZED as at the handshake; auth off (or
// no verifier) is AUTH_DISABLED; another user is USER_MISMATCH. The session keeps its deadline
// on any refusal.
TokenCheck check_refresh(std::optional<std::string_view> token, const std::string &org,
                         const std::string &user, const AuthConfig &auth, const JwtVerifier *jwt,
                         int64_t unix_now, const SubscriptionsConfig *subs = nullptr);

// Runs the checks in the README's order, cheapest first and all before any Redis work: shutting
// down, protocol, org, recover parameters (with history configured), handshake rate, origin,
// token, then connection limits. jwt may be null,
// which admits without a token even when auth.mode is jwt (the Server never does that).
Admission admit(const AdmissionRequest &req, const Config &cfg, const JwtVerifier *jwt,
                AdmissionState state);

} // namespace sidecar
