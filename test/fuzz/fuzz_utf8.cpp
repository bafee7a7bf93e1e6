// libFuzzer target: Utf8Validator, fed the input in pseudo-random chunks, must agree byte for byte
// with the reference checker in utf8_reference.h, and close payloads cut from valid reasons must
// stay valid UTF-8. Any disagreement aborts, which libFuzzer reports as a crash.
//
// Input layout: the first byte seeds the chunk sizes, the rest is the text. Keeping the text
// verbatim makes the seed corpus readable and lets the mutator explore splits and bytes apart.
#include "frame.h"
#include "utf8_reference.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

[[noreturn]] void disagree(const char *what, size_t at) {
  std::fprintf(stderr, "fuzz_utf8: %s (at byte %zu)\n", what, at);
  std::abort();
}

// A tiny xorshift; chunk sizes only need to vary, not to be good random numbers.
struct Splitter {
  uint32_t x;
  size_t next() {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    // Mostly short chunks, so sequences straddle feed calls often; sometimes empty or long ones.
    const uint32_t pick = x % 16;
    if (pick == 0)
      return 0;
    if (pick == 1)
      return 64 + (x >> 8) % 512;
    return pick - 1;
  }
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  Splitter split{0x9E3779B9u ^ (uint32_t{data[0]} * 0x01000193u)};
  const uint8_t *text = data + 1;
  const size_t n = size - 1;

  const sidecar::test::Utf8Verdict ref = sidecar::test::reference_utf8(text, n);

  // A chunk must be accepted exactly when the first bad byte lies beyond it; once one chunk is
  // rejected every later feed must be rejected too.
  sidecar::Utf8Validator v;
  size_t pos = 0;
  do {
    const size_t len = std::min(split.next(), n - pos);
    const bool fed = v.feed(text + pos, len);
    pos += len;
    const bool expected = !(ref.first_bad < pos);
    if (fed != expected)
      disagree(fed ? "accepted a bad byte" : "rejected a valid prefix", pos);
  } while (pos < n);
  if (v.complete() != ref.complete)
    disagree("complete() differs from the reference", n);
  if (sidecar::is_valid_utf8(text, n) != ref.complete)
    disagree("is_valid_utf8 differs", n);

  v.reset();
  if (!v.complete() || !v.feed(text, ref.first_bad))
    disagree("reset did not clear state", 0);

  // The close reason cut must never produce invalid UTF-8 from a valid reason, nor overflow a
  // control frame.
  if (ref.complete) {
    const uint16_t code = static_cast<uint16_t>(1000 + data[0]);
    const std::string payload = sidecar::encode_close_payload(
        code, std::string_view(reinterpret_cast<const char *>(text), n));
    if (payload.size() > sidecar::kMaxControlPayload)
      disagree("close payload too long", n);
    if (payload.size() + 3 < 2 + std::min(n, sidecar::kMaxCloseReason))
      disagree("close reason cut more than one sequence", n);
    if (!sidecar::is_valid_utf8(std::string_view(payload).substr(2)))
      disagree("close reason cut split a sequence", n);
  }
  return 0;
}
