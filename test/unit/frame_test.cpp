// Unit tests for sidecar/frame.*: header bytes, close codes and payloads, and the UTF-8 DFA held
// against the independent reference checker that the fuzzer also uses.
#include "frame.h"

#include "../fuzz/utf8_reference.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <iterator>
#include <string>
#include <vector>

using namespace sidecar;

namespace {

std::vector<uint8_t> header_bytes(Opcode op, uint64_t len, bool fin = true) {
  uint8_t buf[kMaxFrameHeader + 4];
  std::fill(std::begin(buf), std::end(buf), uint8_t{0xEE});
  const size_t n = encode_frame_header(buf, op, len, fin);
  REQUIRE(n <= kMaxFrameHeader);
  CHECK(buf[n] == 0xEE); // nothing written past the returned length
  return {buf, buf + n};
}

// Encodes cp in exactly len bytes, overlong if len is longer than needed.
std::string encode_utf8(uint32_t cp, int len) {
  std::string s;
  if (len == 1) {
    s.push_back(static_cast<char>(cp));
    return s;
  }
  static constexpr uint8_t kLeadMarks[] = {0, 0, 0xC0, 0xE0, 0xF0, 0xF8, 0xFC};
  s.push_back(static_cast<char>(kLeadMarks[len] | (cp >> (6 * (len - 1)))));
  for (int k = len - 2; k >= 0; --k)
    s.push_back(static_cast<char>(0x80 | ((cp >> (6 * k)) & 0x3F)));
  return s;
}

int minimal_length(uint32_t cp) { return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4; }

// Index of the byte at which a validator fed one byte at a time first returns false, or npos.
size_t rejection_point(std::string_view s) {
  Utf8Validator v;
  for (size_t i = 0; i < s.size(); ++i)
    if (!v.feed(s.substr(i, 1)))
      return i;
  return std::string::npos;
}

const std::vector<std::string> kValidSamples = {
    "",
    "plain ascii",
    "\xC2\x80",         // U+0080, smallest 2-byte
    "\xC3\xA9",         // U+00E9
    "\xDF\xBF",         // U+07FF, largest 2-byte
    "\xE0\xA0\x80",     // U+0800, smallest 3-byte
    "\xE2\x82\xAC",     // U+20AC euro sign
    "\xED\x9F\xBF",     // U+D7FF, just below the surrogates
    "\xEE\x80\x80",     // U+E000, just above them
    "\xEF\xBF\xBF",     // U+FFFF
    "\xF0\x90\x80\x80", // U+10000, smallest 4-byte
    "\xF0\x9D\x84\x9E", // U+1D11E musical symbol G clef
    "\xF4\x8F\xBF\xBF", // U+10FFFF, the last code point
    "{\"type\":\"SYNC_SUCCESS\",\"who\":\"Zo\xC3\xAB \xE2\x82\xAC \xF0\x9F\x98\x80\"}",
};

} // namespace

TEST_CASE("a payload of up to 125 bytes uses the 7-bit length form") {
  CHECK(header_bytes(Opcode::text, 0) == std::vector<uint8_t>{0x81, 0x00});
  CHECK(header_bytes(Opcode::text, 125) == std::vector<uint8_t>{0x81, 0x7D});
}

TEST_CASE("a 126-byte payload uses the 16-bit length form, up to 65535") {
  CHECK(header_bytes(Opcode::text, 126) == std::vector<uint8_t>{0x81, 0x7E, 0x00, 0x7E});
  CHECK(header_bytes(Opcode::binary, 65535) == std::vector<uint8_t>{0x82, 0x7E, 0xFF, 0xFF});
}

TEST_CASE("a 65536-byte payload and larger use the 64-bit length form in network order") {
  CHECK(header_bytes(Opcode::binary, 65536) ==
        std::vector<uint8_t>{0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00});
  CHECK(header_bytes(Opcode::text, uint64_t{1} << 32) ==
        std::vector<uint8_t>{0x81, 0x7F, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00});
  CHECK(header_bytes(Opcode::text, 0x0102030405060708ULL) ==
        std::vector<uint8_t>{0x81, 0x7F, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08});
}

TEST_CASE("the first header byte carries FIN and the opcode and server frames are never masked") {
  CHECK(header_bytes(Opcode::continuation, 3, false) == std::vector<uint8_t>{0x00, 0x03});
  CHECK(header_bytes(Opcode::text, 3, false) == std::vector<uint8_t>{0x01, 0x03});
  CHECK(header_bytes(Opcode::close, 2) == std::vector<uint8_t>{0x88, 0x02});
  CHECK(header_bytes(Opcode::ping, 0) == std::vector<uint8_t>{0x89, 0x00});
  CHECK(header_bytes(Opcode::pong, 125) == std::vector<uint8_t>{0x8A, 0x7D});
  for (uint64_t len : {uint64_t{0}, uint64_t{200}, uint64_t{70000}})
    CHECK((header_bytes(Opcode::binary, len)[1] & 0x80) == 0);
}

TEST_CASE("frame_header_size is what the encoder writes, plus 4 bytes of key when masked") {
  for (uint64_t len : {uint64_t{0}, uint64_t{125}, uint64_t{126}, uint64_t{0xFFFF},
                       uint64_t{0x10000}, uint64_t{1} << 40, UINT64_MAX}) {
    CAPTURE(len);
    CHECK(frame_header_size(len, false) == header_bytes(Opcode::binary, len).size());
    CHECK(frame_header_size(len, true) == header_bytes(Opcode::binary, len).size() + 4);
  }
  CHECK(frame_header_size(125, true) == 6);
  CHECK(frame_header_size(126, true) == 8);
  CHECK(frame_header_size(0x10000, true) == 14);
}

TEST_CASE("encode_frame puts the header before the payload") {
  CHECK(encode_frame(Opcode::text, "hi") == std::string("\x81\x02hi", 4));
  const std::string big(300, 'x');
  const std::string framed = encode_frame(Opcode::binary, big);
  REQUIRE(framed.size() == 4 + 300);
  CHECK(framed.substr(0, 4) == std::string("\x82\x7E\x01\x2C", 4));
  CHECK(framed.substr(4) == big);
}

TEST_CASE("received close codes follow RFC 6455 section 7.4 and the IANA registry") {
  struct Row {
    uint16_t code;
    bool valid;
  };
  const Row rows[] = {
      {0, false},    {999, false},  {1000, true},   {1001, true}, {1002, true}, {1003, true},
      {1004, false}, {1005, false}, {1006, false},  {1007, true}, {1008, true}, {1009, true},
      {1010, true},  {1011, true},  {1012, true},   {1013, true}, {1014, true}, {1015, false},
      {1016, false}, {2000, false}, {2999, false},  {3000, true}, {3999, true}, {4000, true},
      {4999, true},  {5000, false}, {65535, false},
  };
  for (const Row &r : rows) {
    CAPTURE(r.code);
    CHECK(is_valid_received_close_code(r.code) == r.valid);
  }
}

TEST_CASE("a close payload is the big-endian code followed by the reason") {
  CHECK(encode_close_payload(1000, "") == std::string("\x03\xE8", 2));
  CHECK(encode_close_payload(4001, "bye") == std::string("\x0F\xA1"
                                                         "bye",
                                                         5));
  const std::string max_reason(kMaxCloseReason, 'r');
  CHECK(encode_close_payload(1001, max_reason).size() == kMaxControlPayload);
  CHECK(encode_close_payload(1001, max_reason + "s").size() == kMaxControlPayload);
}

TEST_CASE("a long close reason is cut before a 3-byte character that would not fit whole") {
  const std::string euro = "\xE2\x82\xAC";
  // The euro sign fits exactly when it ends at byte 123 of the reason.
  const std::string fits = std::string(120, 'a') + euro;
  CHECK(encode_close_payload(1008, fits).substr(2) == fits);
  // Starting one or two bytes later it would straddle the limit, so it is dropped whole.
  for (size_t prefix : {size_t{121}, size_t{122}}) {
    CAPTURE(prefix);
    const std::string reason = std::string(prefix, 'a') + euro + "tail";
    const std::string payload = encode_close_payload(1008, reason);
    CHECK(payload.size() == 2 + prefix);
    CHECK(payload.substr(2) == std::string(prefix, 'a'));
    CHECK(is_valid_utf8(std::string_view(payload).substr(2)));
  }
}

TEST_CASE("valid UTF-8 of every length is accepted, whole and complete") {
  for (const std::string &s : kValidSamples) {
    CAPTURE(s);
    CHECK(is_valid_utf8(s));
    Utf8Validator v;
    CHECK(v.feed(s));
    CHECK(v.complete());
  }
}

TEST_CASE("every code point in its shortest form is accepted unless it is a surrogate") {
  for (uint32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    const bool surrogate = cp >= 0xD800 && cp <= 0xDFFF;
    if (is_valid_utf8(encode_utf8(cp, minimal_length(cp))) == surrogate) {
      FAIL("code point " << cp << " misjudged");
    }
  }
}

TEST_CASE("every overlong form is rejected by its second byte at the latest") {
  size_t checked = 0;
  for (uint32_t cp = 0; cp < 0x10000; ++cp) {
    for (int len = minimal_length(cp) + 1; len <= 4; ++len) {
      const std::string s = encode_utf8(cp, len);
      ++checked;
      if (is_valid_utf8(s) || rejection_point(s) > 1)
        FAIL("overlong " << cp << " in " << len);
    }
  }
  CHECK(checked == 0x80 * 3 + (0x800 - 0x80) * 2 + (0x10000 - 0x800));
  // The classic 2-byte overlong NUL and slash, and the lead bytes that can only start overlongs.
  CHECK(rejection_point("\xC0\x80") == 0);
  CHECK(rejection_point("\xC1\xAF") == 0);
  CHECK(rejection_point("\xE0\x80\xAF") == 1);
  CHECK(rejection_point("\xF0\x80\x80\xAF") == 1);
}

TEST_CASE("UTF-16 surrogates encoded in UTF-8 are rejected by their second byte") {
  for (uint32_t cp = 0xD800; cp <= 0xDFFF; ++cp) {
    const std::string s = encode_utf8(cp, 3);
    if (is_valid_utf8(s) || rejection_point(s) != 1)
      FAIL("surrogate " << cp);
  }
  // A surrogate pair in CESU-8 form is still two surrogates.
  CHECK_FALSE(is_valid_utf8("\xED\xA0\xBD\xED\xB8\x80"));
}

TEST_CASE("code points above U+10FFFF are rejected") {
  for (uint32_t cp = 0x110000; cp <= 0x1FFFFF; cp += 0x3F) {
    if (is_valid_utf8(encode_utf8(cp, 4)))
      FAIL("code point " << cp);
  }
  CHECK(rejection_point("\xF4\x90\x80\x80") == 1);
  CHECK_FALSE(is_valid_utf8("\xF8\x88\x80\x80\x80"));     // old 5-byte form
  CHECK_FALSE(is_valid_utf8("\xFC\x84\x80\x80\x80\x80")); // old 6-byte form
}

TEST_CASE("the bytes C0, C1 and F5 to FF are rejected wherever they appear") {
  std::vector<uint8_t> bad = {0xC0, 0xC1};
  for (unsigned b = 0xF5; b <= 0xFF; ++b)
    bad.push_back(static_cast<uint8_t>(b));
  for (uint8_t b : bad) {
    CAPTURE(int{b});
    const std::string alone(1, static_cast<char>(b));
    CHECK(rejection_point(alone + "\x80\x80\x80") == 0);
    CHECK(rejection_point("ok" + alone) == 2);
    CHECK(rejection_point("\xC3\xA9" + alone) == 2);
  }
}

TEST_CASE("stray continuation bytes and leads followed by too few continuations are rejected") {
  CHECK(rejection_point("\x80") == 0);
  CHECK(rejection_point("a\xBF") == 1);
  CHECK(rejection_point("\xC3\xA9\xA9") == 2);
  CHECK(rejection_point("\xC3z") == 1);
  CHECK(rejection_point("\xE2\x82z") == 2);
  CHECK(rejection_point("\xF0\x9D\x84\xC3") == 3);
}

TEST_CASE("a sequence truncated at the end is an incomplete prefix, not an error") {
  for (const std::string &s : kValidSamples) {
    for (size_t cut = 1; cut < s.size(); ++cut) {
      const std::string head = s.substr(0, cut);
      const bool on_boundary = is_valid_utf8(head);
      Utf8Validator v;
      CAPTURE(head);
      CHECK(v.feed(head)); // a prefix of valid text is never rejected
      CHECK(v.complete() == on_boundary);
      CHECK(on_boundary == (sidecar::test::reference_utf8(
                                reinterpret_cast<const uint8_t *>(head.data()), head.size())
                                .complete));
    }
  }
  CHECK_FALSE(is_valid_utf8("\xF0\x9D\x84"));
  CHECK_FALSE(is_valid_utf8("abc\xE2"));
}

TEST_CASE("code points split across feed calls at every pair of split points are accepted") {
  const std::string s = kValidSamples.back();
  for (size_t i = 0; i <= s.size(); ++i) {
    for (size_t j = i; j <= s.size(); ++j) {
      Utf8Validator v;
      const bool ok = v.feed(s.substr(0, i)) && v.feed(s.substr(i, j - i)) && v.feed(s.substr(j));
      if (!ok || !v.complete())
        FAIL("split at " << i << " and " << j);
    }
  }
}

TEST_CASE("an invalid byte is reported by the feed call that contains it, for every split") {
  // The bad sequence (a surrogate) sits among multi-byte characters and long ASCII runs.
  const std::string s = "abcdefghij\xC3\xA9klmnop\xED\xA0\x80qrstuvwxyz0123\xE2\x82\xAC";
  const size_t bad_at = s.find('\xA0'); // the byte that makes the ED sequence a surrogate
  for (size_t i = 0; i <= s.size(); ++i) {
    for (size_t j = i; j <= s.size(); ++j) {
      Utf8Validator v;
      const bool a = v.feed(s.substr(0, i));
      const bool b = v.feed(s.substr(i, j - i));
      const bool c = v.feed(s.substr(j));
      const bool expect_a = bad_at >= i, expect_b = bad_at >= j;
      if (a != expect_a || b != (expect_a && expect_b) || c)
        FAIL("split at " << i << " and " << j);
    }
  }
}

TEST_CASE("long ASCII with one bad byte at each of the first 17 positions is rejected there") {
  for (uint8_t bad : {uint8_t{0x80}, uint8_t{0xFF}, uint8_t{0xC3}}) {
    for (size_t pos = 0; pos < 17; ++pos) {
      CAPTURE(int{bad});
      CAPTURE(pos);
      std::string s(64, 'a');
      s[pos] = static_cast<char>(bad);
      CHECK_FALSE(is_valid_utf8(s));
      CHECK(rejection_point(s) == (bad == 0xC3 ? pos + 1 : pos));
      // The fast path must not skip past the bad byte when the whole buffer is fed at once.
      Utf8Validator v;
      CHECK(v.feed(s.substr(0, pos)));
      CHECK_FALSE(v.feed(s.substr(pos)));
    }
  }
}

TEST_CASE("a rejected validator stays rejected until reset") {
  Utf8Validator v;
  CHECK_FALSE(v.feed("\xFF"));
  CHECK_FALSE(v.feed("a"));
  CHECK_FALSE(v.feed(""));
  CHECK_FALSE(v.complete());
  v.reset();
  CHECK(v.complete());
  CHECK(v.feed("\xC3"));
  CHECK_FALSE(v.complete());
  v.reset();
  CHECK(v.feed("a"));
  CHECK(v.complete());
  CHECK(sizeof(Utf8Validator) == 1);
}

TEST_CASE("every 1- to 3-byte input agrees with the reference checker") {
  size_t disagreements = 0;
  uint8_t buf[3];
  for (uint32_t x = 0; x < (1u << 24); ++x) {
    // Three-byte inputs whose first byte is ASCII or a 2-byte lead repeat the shorter cases, so
    // the exhaustive pass over them is limited to first bytes that start longer sequences.
    buf[0] = static_cast<uint8_t>(x >> 16);
    buf[1] = static_cast<uint8_t>(x >> 8);
    buf[2] = static_cast<uint8_t>(x);
    const size_t lengths[] = {1, 2, 3};
    for (size_t n : lengths) {
      if (n == 1 && (x & 0xFFFF) != 0)
        continue;
      if (n == 2 && (x & 0xFF) != 0)
        continue;
      if (n == 3 && buf[0] < 0xE0)
        continue;
      const auto ref = sidecar::test::reference_utf8(buf, n);
      Utf8Validator v;
      const bool fed = v.feed(buf, n);
      if (fed != (ref.first_bad == n) || (fed && v.complete() != ref.complete) ||
          is_valid_utf8(buf, n) != ref.complete)
        ++disagreements;
    }
  }
  CHECK(disagreements == 0);
}
