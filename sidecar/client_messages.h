// The messages the sidecar itself sends to clients: {"type": ...} JSON text (README, "Client
// protocol"). Relayed payloads never pass through here. Each is built with the JSON library, in
// a fixed key order, because clients and tests read these bytes as they are; none of them is on
// the fan-out path (one per connection, per ping or per refusal).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sidecar {

// {"type":"connected","connection_id":…,"org":…,"user":…,"heartbeat_ms":…}; an empty org or user
// is null.
std::string welcome_message(std::string_view connection_id, std::string_view org,
                            std::string_view user, uint32_t heartbeat_ms);
// One history channel as the welcome tells it (issue 11).
struct WelcomeChannel {
  std::string channel;
  bool known = false; // epoch and offset were read; false when the read failed
  std::string epoch;
  uint64_t offset = 0; // the position delivery continues after (before any replay)
  bool recovered = false;
};
// The welcome with "channels":{C:{"epoch":…,"offset":…,"recovered":…},…} appended, each in the
// order given; a channel that is not known has only "recovered":false. `welcome` must be one of
// welcome_message's.
std::string welcome_with_channels(std::string_view welcome,
                                  const std::vector<WelcomeChannel> &channels);
// {"type":"subscribed","channel":…}: a subscribe took effect. For a channel with history, a
// sidecar.v1 client gets it through welcome_with_channels, with the channel's position.
std::string subscribed_message(std::string_view channel);
// {"type":"unsubscribed","channel":…[,"reason":…]}: the client asked ("" reason), or a refreshed
// token no longer grants the channel ("revoked").
std::string unsubscribed_message(std::string_view channel, std::string_view reason);
// error_message with the channel it concerns: {"type":"error","code":…,"message":…,
// "recoverable":true,"channel":…}. The channel is one the client sent and is_valid_channel_name
// accepted, or omitted.
std::string channel_error_message(std::string_view code, std::string_view message,
                                  std::string_view channel);
// {"type":"pong","timestamp":…}, the wall clock in milliseconds.
std::string pong_message(int64_t timestamp_ms);
// {"type":"error","code":…,"message":…,"recoverable":…}
std::string error_message(std::string_view code, std::string_view message, bool recoverable);
// {"type":"token_expiring","expires_at":…}, unix seconds (null when 0: a token without exp).
// With a reason ("refresh": a control command asked for it now), "reason":… follows.
std::string token_expiring_message(int64_t expires_at, std::string_view reason = {});
// {"type":"refreshed","expires_at":…}: the new token's exp in unix seconds, as token_expiring has
// it; null when the new token has no exp (the session then has no deadline).
std::string refreshed_message(int64_t expires_at);
// {"type":"server_shutdown","reconnect_after_ms":…}; with a reason ("reconnect": a control
// command moves clients off this sidecar, which stays up), "reason":… follows.
std::string server_shutdown_message(uint32_t reconnect_after_ms, std::string_view reason = {});

} // namespace sidecar
