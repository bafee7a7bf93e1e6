// Client messages; see client_messages.h.
#include "client_messages.h"

#include <nlohmann/json.hpp>

#include "json_text.h"

namespace sidecar {
namespace {

using Json = nlohmann::ordered_json; // keys in insertion order, as the wire format has them

Json string_or_null(std::string_view s) { return s.empty() ? Json() : Json(s); }

} // namespace

std::string welcome_message(std::string_view connection_id, std::string_view org,
                            std::string_view user, uint32_t heartbeat_ms) {
  return json_text(Json{{"type", "connected"},
                        {"connection_id", connection_id},
                        {"org", string_or_null(org)},
                        {"user", string_or_null(user)},
                        {"heartbeat_ms", heartbeat_ms}});
}

std::string welcome_with_channels(std::string_view welcome,
                                  const std::vector<WelcomeChannel> &channels) {
  Json out = Json::parse(welcome);
  Json &map = out["channels"] = Json::object();
  for (const WelcomeChannel &c : channels) {
    Json entry = Json::object();
    if (c.known) {
      entry["epoch"] = c.epoch;
      entry["offset"] = c.offset;
    }
    entry["recovered"] = c.recovered;
    map[c.channel] = std::move(entry);
  }
  return json_text(out);
}

std::string subscribed_message(std::string_view channel) {
  return json_text(Json{{"type", "subscribed"}, {"channel", channel}});
}

std::string unsubscribed_message(std::string_view channel, std::string_view reason) {
  Json out{{"type", "unsubscribed"}, {"channel", channel}};
  if (!reason.empty())
    out["reason"] = reason;
  return json_text(out);
}

std::string channel_error_message(std::string_view code, std::string_view message,
                                  std::string_view channel) {
  Json out{{"type", "error"}, {"code", code}, {"message", message}, {"recoverable", true}};
  if (!channel.empty())
    out["channel"] = channel;
  return json_text(out);
}

std::string pong_message(int64_t timestamp_ms) {
  return json_text(Json{{"type", "pong"}, {"timestamp", timestamp_ms}});
}

std::string error_message(std::string_view code, std::string_view message, bool recoverable) {
  return json_text(
      Json{{"type", "error"}, {"code", code}, {"message", message}, {"recoverable", recoverable}});
}

std::string token_expiring_message(int64_t expires_at, std::string_view reason) {
  Json j{{"type", "token_expiring"}, {"expires_at", expires_at == 0 ? Json() : Json(expires_at)}};
  if (!reason.empty())
    j["reason"] = reason;
  return json_text(j);
}

std::string refreshed_message(int64_t expires_at) {
  return json_text(
      Json{{"type", "refreshed"}, {"expires_at", expires_at == 0 ? Json() : Json(expires_at)}});
}

std::string server_shutdown_message(uint32_t reconnect_after_ms, std::string_view reason) {
  Json j{{"type", "server_shutdown"}, {"reconnect_after_ms", reconnect_after_ms}};
  if (!reason.empty())
    j["reason"] = reason;
  return json_text(j);
}

} // namespace sidecar
