// What a client asks of its session after the upgrade: messages under the inbound rate limit,
// the JSON commands the sidecar answers itself (ping, subscribe/unsubscribe, refresh), the
// forward of everything else to the backend's stream, and the life of its token (refresh,
// expiry warning, close at expiry). See session.h.
#include <nlohmann/json.hpp>

#include <algorithm>

#include "admission.h"
#include "client_messages.h"
#include "clock.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "session.h"
#include "session_subscribe.h"
#include "subscriptions.h"

namespace sidecar {
namespace {

// Nesting depth of a JSON text, counted outside strings, so that a hostile document is refused
// before a parser spends anything on it.
uint32_t json_depth(std::string_view s) {
  uint32_t depth = 0, max_depth = 0;
  bool in_string = false, escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > max_depth)
        max_depth = depth;
    } else if ((c == '}' || c == ']') && depth > 0) {
      --depth;
    }
  }
  return max_depth;
}

} // namespace

void Session::handle_ws_message(Opcode op, const uint8_t *data, size_t len) {
  ++messages_in_;
  ++env_.metrics.inbound_messages;
  // Token bucket: `inbound_rate` per second, up to `inbound_burst` at once, filled up to the
  // previous message (or the upgrade).
  uint64_t now = env_.now_ms();
  const LimitsConfig &lim = env_.cfg.limits;
  double elapsed = static_cast<double>(now - last_message_ms_) / 1000.0;
  last_message_ms_ = now;
  tokens_ = static_cast<float>(std::min(lim.inbound_burst, tokens_ + elapsed * lim.inbound_rate));
  if (tokens_ < 1.0) {
    ++env_.metrics.inbound_rate_limited;
    if (++violations_ > lim.inbound_violations_before_close) {
      last_error_ = "rate limited";
      close(CloseCode::policy_violation, "rate limit exceeded");
      return;
    }
    send_error("RATE_LIMITED", "too many messages; slow down", true);
    return;
  }
  tokens_ -= 1.0f;
  if (op == Opcode::binary) {
    send_error("UNSUPPORTED", "binary messages are not accepted; send JSON text", true);
    return;
  }
  handle_client_text(std::string_view(reinterpret_cast<const char *>(data), len));
}

void Session::handle_client_text(std::string_view text) {
  const Config &cfg = env_.cfg;
  if (json_depth(text) > cfg.limits.max_json_depth) {
    send_error("INVALID_JSON", "message nests deeper than limits.max_json_depth", true);
    return;
  }
  nlohmann::json msg = nlohmann::json::parse(text, nullptr, false);
  if (msg.is_discarded() || !msg.is_object()) {
    send_error("INVALID_JSON", "messages must be JSON objects", true);
    return;
  }
  auto type = msg.find("type");
  if (type != msg.end() && type->is_string() && *type == "ping") {
    send_json(pong_message(wall_ms()));
    return;
  }
  if (type != msg.end() && type->is_string() && (*type == "subscribe" || *type == "unsubscribe")) {
    auto req = parse_subscription(msg, *type == "subscribe");
    if (auto *refused = std::get_if<SubscriptionRefusal>(&req)) {
      env_.metrics.count_subscription(refused->code);
      send_json(channel_error_message(refused->code, refused->message, ""));
    } else {
      subscription(std::move(std::get<SubscriptionRequest>(req)));
    }
    return; // the sidecar's business, never the backend's
  }
  if (type != msg.end() && type->is_string() && *type == "refresh") {
    auto token = msg.find("token");
    refresh_token(token != msg.end() ? token->get_ptr<const std::string *>() : nullptr);
    return; // a refresh is the sidecar's business, never the backend's
  }
  if (cfg.inbound.stream.empty()) {
    send_error("UNSUPPORTED", "this sidecar does not accept client messages other than ping", true);
    return;
  }
  if (!env_.owner.forward_inbound(*this, text)) {
    send_error("UNAVAILABLE", "the backend queue is unreachable; retry later", true);
  }
}

void Session::refresh_token(const std::string *token) {
  TokenCheck c =
      check_refresh(token ? std::optional<std::string_view>(*token) : std::nullopt, org_.str(),
                    user_, env_.cfg.auth, env_.jwt.get(), unix_now(), &env_.cfg.subscriptions);
  env_.metrics.count_refresh(c.code);
  if (!c.ok()) {
    // The reason is the verifier's fixed text; nothing of the token reaches the log.
    log_info("refresh_refused",
             {{"conn", id_}, {"org", org_.str()}, {"code", c.code}, {"reason", c.reason}});
    send_error(c.code, c.message, true);
    return;
  }
  token_exp_ = c.exp;
  expiry_warned_ = false; // the warning is due again, for the new deadline
  schedule_deadline(env_.now_ms());
  regrant(std::move(c.grants));
  log_debug("token_refreshed", {{"conn", id_}, {"org", org_.str()}, {"exp", c.exp}});
  send_json(refreshed_message(c.exp));
}

void Session::check_token_expiry() {
  int64_t exp = token_exp_;
  if (exp == 0)
    return;
  const AuthConfig &auth = env_.cfg.auth;
  int64_t now = unix_now();
  // The same leeway that admitted the token applies while it is in use, so a token accepted
  // inside the leeway is not closed a moment after its welcome.
  if (auth.on_expiry == AuthConfig::Expiry::close &&
      now >= exp + static_cast<int64_t>(auth.jwt.leeway_s)) {
    close(CloseCode::token_expired, "token expired");
    return;
  }
  if (!expiry_warned_ && exp - now <= static_cast<int64_t>(auth.expiry_warning_s)) {
    expiry_warned_ = true;
    send_json(token_expiring_message(exp));
  }
}

} // namespace sidecar
