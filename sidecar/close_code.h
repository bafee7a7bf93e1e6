// CloseCode: the WebSocket close codes the sidecar itself sends or stands in for (RFC 6455 7.4.1,
// the IANA registry, and our own 4xxx). A code a peer sends may be any valid number, so codecs
// that carry a peer's code (WsProtocol) keep a plain uint16_t; limits.slow_consumer_close_code
// stays a configurable integer and is converted where it is used.
#pragma once

#include <cstdint>

namespace sidecar {

enum class CloseCode : uint16_t {
  normal = 1000,
  going_away = 1001,       // server shutdown
  protocol_error = 1002,   // a frame RFC 6455 forbids
  no_status = 1005,        // stands for a close frame without a code; never sent as a code
  abnormal = 1006,         // stands for "no close frame was sent"; never sent
  invalid_payload = 1007,  // text that is not UTF-8
  policy_violation = 1008, // inbound rate limit, slow consumer (configurable)
  message_too_big = 1009,
  internal_error = 1011,
  try_again_later = 1013, // slow consumer (configurable)
  token_expired = 4001,   // auth.on_expiry: close
};

constexpr uint16_t wire_code(CloseCode c) noexcept { return static_cast<uint16_t>(c); }

} // namespace sidecar
