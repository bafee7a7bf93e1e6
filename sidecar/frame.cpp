// Frame headers, close payloads and the UTF-8 DFA; see frame.h.
#include "frame.h"

#include <array>
#include <cstring>

namespace sidecar {
namespace {

// Byte classes: bytes that the DFA treats alike share a class, so the transition table is small.
// The continuation range 80..BF is split in three because the second byte after E0, ED, F0 and
// F4 is restricted to part of it (that is where overlongs, surrogates and > U+10FFFF live).
enum ByteClass : uint8_t {
  kAscii,  // 00..7F
  kCont8x, // 80..8F
  kCont9x, // 90..9F
  kContAB, // A0..BF
  kBad,    // C0, C1 (always overlong), F5..FF (beyond U+10FFFF or no such lead)
  kLead2,  // C2..DF
  kLeadE0, // E0: next byte A0..BF, or the form is overlong
  kLead3,  // E1..EC, EE, EF
  kLeadED, // ED: next byte 80..9F, or it encodes a surrogate
  kLeadF0, // F0: next byte 90..BF, or the form is overlong
  kLead4,  // F1..F3
  kLeadF4, // F4: next byte 80..8F, or the code point is above U+10FFFF
};
constexpr size_t kClassCount = kLeadF4 + 1;

// States. kAccept must be 0: Utf8Validator::complete() and reset() rely on it.
enum State : uint8_t {
  kAccept,
  kReject,
  kNeed1,   // one continuation byte left
  kNeed2,   // two left
  kNeed3,   // three left
  kAfterE0, // two left, the next in A0..BF
  kAfterED, // two left, the next in 80..9F
  kAfterF0, // three left, the next in 90..BF
  kAfterF4, // three left, the next in 80..8F
};
constexpr size_t kStateCount = kAfterF4 + 1;

// Each row covers the bytes from the previous row's last + 1 up to its own last.
struct ClassRange {
  uint8_t last;
  ByteClass cls;
};
constexpr ClassRange kClassRanges[] = {
    {0x7F, kAscii},  {0x8F, kCont8x}, {0x9F, kCont9x}, {0xBF, kContAB}, {0xC1, kBad},
    {0xDF, kLead2},  {0xE0, kLeadE0}, {0xEC, kLead3},  {0xED, kLeadED}, {0xEF, kLead3},
    {0xF0, kLeadF0}, {0xF3, kLead4},  {0xF4, kLeadF4}, {0xFF, kBad},
};

constexpr State next_state(State s, ByteClass c) {
  const bool cont = c == kCont8x || c == kCont9x || c == kContAB;
  switch (s) {
  case kAccept:
    switch (c) {
    case kAscii:
      return kAccept;
    case kLead2:
      return kNeed1;
    case kLeadE0:
      return kAfterE0;
    case kLead3:
      return kNeed2;
    case kLeadED:
      return kAfterED;
    case kLeadF0:
      return kAfterF0;
    case kLead4:
      return kNeed3;
    case kLeadF4:
      return kAfterF4;
    default:
      return kReject;
    }
  case kNeed1:
    return cont ? kAccept : kReject;
  case kNeed2:
    return cont ? kNeed1 : kReject;
  case kNeed3:
    return cont ? kNeed2 : kReject;
  case kAfterE0:
    return c == kContAB ? kNeed1 : kReject;
  case kAfterED:
    return (c == kCont8x || c == kCont9x) ? kNeed1 : kReject;
  case kAfterF0:
    return (c == kCont9x || c == kContAB) ? kNeed2 : kReject;
  case kAfterF4:
    return c == kCont8x ? kNeed2 : kReject;
  default:
    return kReject;
  }
}

constexpr std::array<uint8_t, 256> make_class_table() {
  std::array<uint8_t, 256> t{};
  unsigned b = 0;
  for (const ClassRange &r : kClassRanges)
    for (; b <= r.last; ++b)
      t[b] = r.cls;
  return t;
}

constexpr std::array<uint8_t, kStateCount * kClassCount> make_transition_table() {
  std::array<uint8_t, kStateCount * kClassCount> t{};
  for (unsigned s = 0; s < kStateCount; ++s)
    for (unsigned c = 0; c < kClassCount; ++c)
      t[s * kClassCount + c] = next_state(static_cast<State>(s), static_cast<ByteClass>(c));
  return t;
}

constexpr auto kClassTable = make_class_table();
constexpr auto kTransitions = make_transition_table();

// Returns the index of the first byte at or after i that is not ASCII, or n. Published payloads
// are mostly JSON, so whole 8-byte words of ASCII are the common case worth a fast path.
size_t skip_ascii(const uint8_t *p, size_t i, size_t n) {
  constexpr uint64_t kHighBits = 0x8080808080808080ULL;
  while (n - i >= 8) {
    uint64_t word;
    std::memcpy(&word, p + i, sizeof word);
    if (word & kHighBits)
      break;
    i += 8;
  }
  while (i < n && p[i] < 0x80)
    ++i;
  return i;
}

} // namespace

size_t encode_frame_header(uint8_t *out, Opcode op, uint64_t payload_len, bool fin) {
  out[0] = static_cast<uint8_t>((fin ? 0x80u : 0u) | static_cast<uint8_t>(op));
  if (payload_len <= 125) {
    out[1] = static_cast<uint8_t>(payload_len);
    return 2;
  }
  if (payload_len <= 0xFFFF) {
    out[1] = 126;
    out[2] = static_cast<uint8_t>(payload_len >> 8);
    out[3] = static_cast<uint8_t>(payload_len);
    return 4;
  }
  out[1] = 127;
  for (int i = 0; i < 8; ++i)
    out[2 + i] = static_cast<uint8_t>(payload_len >> (56 - 8 * i));
  return 10;
}

size_t frame_header_size(uint64_t payload_len, bool masked) {
  size_t extended = payload_len <= 125 ? 0 : (payload_len <= 0xFFFF ? 2 : 8);
  return 2 + extended + (masked ? 4 : 0);
}

std::string encode_frame(Opcode op, std::string_view payload) {
  uint8_t header[kMaxFrameHeader];
  const size_t header_len = encode_frame_header(header, op, payload.size());
  std::string out;
  out.reserve(header_len + payload.size());
  out.append(reinterpret_cast<const char *>(header), header_len);
  out.append(payload);
  return out;
}

bool is_valid_received_close_code(uint16_t code) {
  if (code >= 1000 && code <= 1003)
    return true;
  // 1012..1014 are not in RFC 6455 but IANA registered them (service restart, try again later,
  // bad gateway), and proxies and servers that send them must not be treated as broken.
  if (code >= 1007 && code <= 1014)
    return true;
  return code >= 3000 && code <= 4999;
}

std::string encode_close_payload(uint16_t code, std::string_view reason) {
  if (reason.size() > kMaxCloseReason) {
    size_t cut = kMaxCloseReason;
    // Back up over continuation bytes so the cut lands on the lead byte of the split sequence.
    while (cut > 0 && (static_cast<uint8_t>(reason[cut]) & 0xC0) == 0x80)
      --cut;
    reason = reason.substr(0, cut);
  }
  std::string out;
  out.reserve(2 + reason.size());
  out.push_back(static_cast<char>(code >> 8));
  out.push_back(static_cast<char>(code & 0xFF));
  out.append(reason);
  return out;
}

bool Utf8Validator::feed(const uint8_t *p, size_t n) {
  uint8_t s = state_;
  if (s == kReject)
    return false;
  size_t i = 0;
  while (i < n) {
    if (s == kAccept) {
      i = skip_ascii(p, i, n);
      if (i == n)
        break;
    }
    s = kTransitions[size_t{s} * kClassCount + kClassTable[p[i]]];
    if (s == kReject)
      break;
    ++i;
  }
  state_ = s;
  return s != kReject;
}

bool is_valid_utf8(const uint8_t *p, size_t n) {
  Utf8Validator v;
  return v.feed(p, n) && v.complete();
}

} // namespace sidecar
