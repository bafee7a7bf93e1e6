// WebSocket frame codec pieces the server needs (RFC 6455 section 5): server frame headers,
// close payloads and close-code rules, and an incremental UTF-8 validator for text messages and
// published payloads. Pure functions over bytes, no I/O, so unit tests and fuzzers cover them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sidecar {

// 2 bytes of flags and short length, 8 bytes of extended length; server frames carry no mask.
constexpr size_t kMaxFrameHeader = 10;
// A control frame payload is at most 125 bytes and a close payload spends 2 of them on the code.
constexpr size_t kMaxControlPayload = 125;
constexpr size_t kMaxCloseReason = kMaxControlPayload - 2;

enum class Opcode : uint8_t {
  continuation = 0,
  text = 1,
  binary = 2,
  close = 8,
  ping = 9,
  pong = 10
};

// Writes an unmasked header with the shortest length form into out, which must have room for
// kMaxFrameHeader bytes, and returns how many bytes it wrote (2, 4 or 10).
size_t encode_frame_header(uint8_t *out, Opcode op, uint64_t payload_len, bool fin = true);

// The size of a header in the shortest length form: 2 bytes, the extended length (none, 2 or 8
// bytes) and the 4-byte masking key when the frame is masked, as every client frame is. For an
// unmasked frame it is what encode_frame_header returns; for a received frame, the bytes its
// header took on the wire.
size_t frame_header_size(uint64_t payload_len, bool masked);

// Header followed by payload; for tests and the rare control frame, not the fan-out path.
std::string encode_frame(Opcode op, std::string_view payload);

// RFC 6455 section 7.4: true for codes a peer may send in a close frame. 1004, 1005, 1006 and
// 1015 are reserved for local use and never travel on the wire.
bool is_valid_received_close_code(uint16_t code);

// Big-endian code followed by reason, cut so the payload fits a control frame. The cut never
// splits a UTF-8 sequence, because the peer must fail the connection on invalid UTF-8 there.
std::string encode_close_payload(uint16_t code, std::string_view reason);

// Validates UTF-8 that arrives in pieces (fragments, TCP reads). It keeps one byte of state,
// because one lives in every session. It rejects what RFC 3629 forbids: overlong forms,
// surrogates, code points above U+10FFFF, the bytes C0, C1 and F5..FF, and stray continuations.
class Utf8Validator {
public:
  // Returns false as soon as the bytes fed since the last reset cannot start valid UTF-8. Once it
  // has returned false it keeps returning false until reset().
  bool feed(const uint8_t *p, size_t n);
  bool feed(std::string_view s) {
    return feed(reinterpret_cast<const uint8_t *>(s.data()), s.size());
  }
  // True when every byte fed so far ended a whole code point (and none was invalid).
  bool complete() const { return state_ == 0; }
  void reset() { state_ = 0; }

private:
  uint8_t state_ = 0; // a state of the DFA in frame.cpp; 0 is "between code points"
};

bool is_valid_utf8(const uint8_t *p, size_t n);
inline bool is_valid_utf8(std::string_view s) {
  return is_valid_utf8(reinterpret_cast<const uint8_t *>(s.data()), s.size());
}

} // namespace sidecar
