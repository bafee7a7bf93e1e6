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
