// Control commands (issue 15): what a backend publishes on control.channel to act on sessions
// of every sidecar, and the pure half of it: parsing, validation, the signature check and which
// sessions a command selects. No I/O; the Server applies a command to its own sessions
// (server_control.cpp), and the Redis bus keeps the channel subscribed (redis_bus.h).
//
// A command is a JSON object: {"op":"disconnect","org":"acme","user":"alice","code":4003,
// "reason":"revoked"}. With control.secret_env set it must come signed, as
// {"cmd":"<the command's JSON text>","sig":"<hex HMAC-SHA256 of exactly the bytes of cmd>"}: the
// signature covers the string value of "cmd" (after JSON unescaping), never a re-serialisation,
// so signer and verifier cannot disagree about whitespace or key order. Without a secret both
// forms are accepted and a "sig" is not checked, so publishers can start signing before the
// secret is switched on.
//
// Anything wrong refuses the whole command with one reason (a fixed metric label) and a detail
// for the log; a refused command never acts on anyone. Unknown members are refused too: a
// misspelt selector ("usr") silently dropped would widen a disconnect to the whole org.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sidecar {

// A command larger than this is refused unread: a real one is a few hundred bytes.
inline constexpr size_t kMaxControlBytes = 4096;

enum class ControlOp : uint8_t { disconnect, reconnect, refresh };
inline constexpr size_t kControlOps = 3;
const char *control_op_name(ControlOp op);

// Why a command was refused; each is a metric label (sidecar_control_refused_total{reason}).
enum class ControlRefusal : uint8_t {
  oversized,     // over kMaxControlBytes
  not_json,      // not a JSON object (or nested too deep)
  unsigned_cmd,  // a secret is configured and the command is not in the signed form
  bad_signature, // "sig" is not 64 hex digits or does not match
  unknown_op,    // "op" missing, not a string, or not one of the ops
  no_selector,   // none of org, user, conn, sidecar, all
  bad_code,      // a close code a server may not send, or not a number
  bad_field,     // a member of the wrong type or size, or one the op does not take
};
inline constexpr size_t kControlRefusals = 8;
const char *control_refusal_name(ControlRefusal r);

// Which sessions a command acts on: every condition given must hold. `all` alone selects every
// session; it must be said, so that a command that lost its selectors selects nobody.
struct ControlSelector {
  std::optional<std::string> org;
  std::optional<std::string> user;
  std::optional<std::string> conn;    // a connection id, as the welcome and inbound entries have it
  std::optional<std::string> sidecar; // the prefix of this sidecar's connection ids
  bool all = false;
};

struct ControlCommand {
  ControlOp op = ControlOp::disconnect;
  ControlSelector who;
  uint16_t code = 1008;                // disconnect: the close code
  std::string reason = "disconnected"; // disconnect: the close reason, at most 123 bytes
  std::optional<uint32_t> after_ms;    // reconnect: instead of shutdown.reconnect_after_ms
  std::optional<uint32_t> jitter_ms;   // reconnect: instead of shutdown.reconnect_jitter_ms
};

struct ControlParse {
  std::optional<ControlCommand> cmd;
  ControlRefusal refusal = ControlRefusal::not_json; // when cmd is empty
  std::string detail;                                // when cmd is empty; no bytes of the secret
};

// `secret` empty: signatures are not required.
ControlParse parse_control(std::string_view payload, std::string_view secret);

// Close codes a command may ask for: 1000, 1001, 1008, 1011, 1012, 1013 and 3000-4999. The
// others are reserved (1005, 1006, 1015), or claim a protocol fault that did not happen.
bool is_control_close_code(uint16_t code);

// Whether a session with this org, user and connection id, on the sidecar whose connection ids
// start with `instance`, is selected.
bool control_selects(const ControlSelector &who, std::string_view org, std::string_view user,
                     std::string_view conn, std::string_view instance);

// Lower-case hex HMAC-SHA256 of data under key; what a publisher puts in "sig".
std::string hmac_sha256_hex(std::string_view key, std::string_view data);

} // namespace sidecar
