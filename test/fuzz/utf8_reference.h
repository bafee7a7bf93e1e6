// A slow, obviously-correct UTF-8 checker that the fuzzer and the unit tests hold the DFA in
// sidecar/frame.cpp against. It shares no tables with the DFA: it decodes each sequence bit by bit
// and asks whether the code points the bytes read so far could still become are valid ones.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace sidecar::test {

struct Utf8Verdict {
  size_t first_bad; // index of the byte after which no valid completion exists; n if none
  bool complete;    // no invalid byte and no code point left half-read
};

// True when some code point in [lo, hi] lies in [min, max] and is not a surrogate.
inline bool any_valid_code_point(uint32_t lo, uint32_t hi, uint32_t min, uint32_t max) {
  const uint32_t a = std::max(lo, min);
  const uint32_t b = std::min(hi, max);
  if (a > b)
    return false;
  return !(a >= 0xD800 && b <= 0xDFFF);
}

inline Utf8Verdict reference_utf8(const uint8_t *p, size_t n) {
  size_t i = 0;
  while (i < n) {
    const uint8_t b = p[i];
    if (b < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t value, min, max; // the lead's payload bits, and the code points this length may hold
    if ((b & 0xE0) == 0xC0) {
      len = 2, value = b & 0x1Fu, min = 0x80, max = 0x7FF;
    } else if ((b & 0xF0) == 0xE0) {
      len = 3, value = b & 0x0Fu, min = 0x800, max = 0xFFFF;
    } else if ((b & 0xF8) == 0xF0) {
      len = 4, value = b & 0x07u, min = 0x10000, max = 0x10FFFF;
    } else {
      return {i, false}; // a stray continuation byte, or a 5- or 6-byte lead
    }
    for (size_t k = 0; k < len; ++k) {
      if (k > 0) {
        if (i + k >= n)
          return {n, false};
        if ((p[i + k] & 0xC0) != 0x80)
          return {i + k, false};
        value = (value << 6) | (p[i + k] & 0x3Fu);
      }
      const auto unread_bits = static_cast<uint32_t>(6 * (len - 1 - k));
      const uint32_t lo = value << unread_bits;
      const uint32_t hi = lo | ((1u << unread_bits) - 1);
      if (!any_valid_code_point(lo, hi, min, max))
        return {i + k, false};
    }
    i += len;
  }
  return {n, true};
}

} // namespace sidecar::test
