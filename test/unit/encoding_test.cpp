#include "encoding.h"

#include <doctest/doctest.h>

using namespace sidecar;

TEST_CASE("the RFC 6455 sample key gives the RFC's accept value") {
  // RFC 6455 section 1.3: the sample nonce's accept value.
  CHECK(websocket_accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST_CASE("base64 round-trips every tail length and rejects bad input") {
  for (std::string s : {"", "f", "fo", "foo", "foob", "fooba", "foobar"}) {
    CHECK(base64_decode(base64_encode(s)).value() == s);
    CHECK(base64url_decode(base64url_encode(s)).value() == s);
  }
  CHECK(base64_encode("foobar") == "Zm9vYmFy");
  CHECK(base64_encode("fo") == "Zm8=");
  CHECK_FALSE(base64_decode("Zm8").has_value());
  CHECK_FALSE(base64_decode("Zm9v!mFy").has_value());
  CHECK(base64url_encode("\xfb\xff") == "-_8");
  CHECK_FALSE(base64url_decode("-_8=").has_value());
  CHECK_FALSE(base64url_decode("A").has_value());
  CHECK_FALSE(base64url_decode("-_9").has_value()); // non-zero leftover bits
}

// ----------------------------------------------------------------------------- UTF-8 repair

TEST_CASE("utf8_step decodes each valid form and its code point") {
  auto one = [](std::string_view s) { return utf8_step(s, 0); };
  CHECK(one("A").valid);
  CHECK(one("A").code_point == U'A');
  CHECK(one("\xc2\xa9").len == 2);
  CHECK(one("\xc2\xa9").code_point == 0xA9);
  CHECK(one("\xe2\x82\xac").code_point == 0x20AC);
  CHECK(one("\xef\xbf\xbf").code_point == 0xFFFF);
  CHECK(one("\xf0\x9f\x98\x80").code_point == 0x1F600);
  CHECK(one("\xf4\x8f\xbf\xbf").code_point == 0x10FFFF);
  CHECK(one(std::string_view("\0", 1)).valid);
}

TEST_CASE("utf8_step refuses overlong forms, surrogates, values past U+10FFFF and stray bytes") {
  struct Case {
    std::string_view bytes;
    size_t len; // the maximal subpart replaced by one U+FFFD
  };
  for (Case c : {Case{"\xff", 1}, Case{"\xfe", 1}, Case{"\x80", 1}, Case{"\xbf", 1},
                 Case{"\xc0\xaf", 1}, Case{"\xc1\xbf", 1},         // overlong 2-byte
                 Case{"\xe0\x80\xaf", 1},                          // overlong 3-byte
                 Case{"\xf0\x80\x80\xaf", 1},                      // overlong 4-byte
                 Case{"\xed\xa0\x80", 1}, Case{"\xed\xbf\xbf", 1}, // surrogates
                 Case{"\xf4\x90\x80\x80", 1}, Case{"\xf5\x80", 1}, // past U+10FFFF
                 Case{"\xe2\x82", 2}, Case{"\xe2", 1},             // cut short by the end
                 Case{"\xf0\x9f\x98", 3}, Case{"\xe2\x82x", 2},    // cut short by ASCII
                 Case{"\xc2\xc2\xa9", 1}}) {
    CAPTURE(c.bytes);
    Utf8Step st = utf8_step(c.bytes, 0);
    CHECK_FALSE(st.valid);
    CHECK(st.len == c.len);
  }
}

TEST_CASE("sanitize_utf8 keeps valid text and puts one U+FFFD per invalid stretch") {
  const std::string fffd = "\xef\xbf\xbd";
  CHECK(sanitize_utf8("plain ascii") == "plain ascii");
  CHECK(sanitize_utf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80") ==
        "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
  CHECK(sanitize_utf8("\xff\xfe") == fffd + fffd);
  CHECK(sanitize_utf8(std::string("a\xc0\xaf") + "b") == "a" + fffd + fffd + "b");
  CHECK(sanitize_utf8("\xed\xa0\x80") == fffd + fffd + fffd);
  CHECK(sanitize_utf8("ab\xe2\x82") == "ab" + fffd);
  CHECK(sanitize_utf8(std::string("\xe2\x82") + "c") == fffd + "c");
  // NUL and control bytes are valid UTF-8: kept here, escaped by whoever writes them out.
  CHECK(sanitize_utf8(std::string_view("a\0\x1b", 3)) == std::string("a\0\x1b", 3));
}

TEST_CASE("sanitize_utf8 cuts at the limit on a character boundary") {
  const std::string euro = "\xe2\x82\xac";
  std::string three_euros = euro + euro + euro; // 9 bytes
  for (size_t max = 0; max <= 10; ++max) {
    CAPTURE(max);
    std::string out = sanitize_utf8(three_euros, max);
    CHECK(out.size() <= max);
    CHECK(out.size() == std::min<size_t>(max / 3 * 3, 9)); // whole characters only
    CHECK(sanitize_utf8(out) == out);                      // still valid
  }
  // A replacement character is three bytes and is not split either.
  CHECK(sanitize_utf8("a\xff", 3) == "a");
  CHECK(sanitize_utf8("a\xff", 4) == "a\xef\xbf\xbd");
  std::string long_text(10000, 'x');
  CHECK(sanitize_utf8(long_text, 256).size() == 256);
}

TEST_CASE("utf8_truncate never cuts through a character, whatever its length") {
  const std::string text = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"; // 1 + 2 + 3 + 4 bytes
  const size_t boundaries[] = {0, 1, 3, 6, 10};
  for (size_t max = 0; max <= text.size() + 1; ++max) {
    CAPTURE(max);
    std::string_view cut = utf8_truncate(text, max);
    size_t want = 0;
    for (size_t b : boundaries) {
      if (b <= max)
        want = b;
    }
    CHECK(cut.size() == want);
    CHECK(cut == std::string_view(text).substr(0, want));
  }
  CHECK(utf8_truncate("short", 100) == "short");
}
