#include "json_text.h"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

using namespace sidecar;

namespace {

std::string escaped(std::string_view s, bool ascii_only = false) {
  std::string out;
  json_escape_into(out, s, ascii_only);
  return out;
}

bool parses_as_string(const std::string &quoted, const std::string &want) {
  auto j = nlohmann::json::parse(quoted, nullptr, false);
  return !j.is_discarded() && j.is_string() && j.get<std::string>() == want;
}

} // namespace

TEST_CASE("json_escape_into escapes what would end or break a string or a line") {
  CHECK(escaped("a\"b\\c") == "a\\\"b\\\\c");
  CHECK(escaped("1\n2\r3\t4") == "1\\n2\\r3\\t4");
  CHECK(escaped(std::string_view("\0\x01\x1b\x1f\x7f", 5)) ==
        "\\u0000\\u0001\\u001b\\u001f\\u007f");
  CHECK(escaped(std::string("a\xe2\x80\xa8") + "b\xe2\x80\xa9") == "a\\u2028b\\u2029");
  CHECK(escaped("caf\xc3\xa9") == "caf\xc3\xa9");
}

TEST_CASE("json_escape_into replaces invalid UTF-8 so that a strict parser accepts the result") {
  const std::string fffd = "\xef\xbf\xbd";
  CHECK(escaped("\xff\xfe") == fffd + fffd);
  CHECK(escaped("x\xe2\x82") == "x" + fffd);
  for (std::string_view hostile : {"\xff\xfe", "\xc0\xaf", "\xed\xa0\x80", "ab\xe2\x82",
                                   "say \"hi\" \\", "x\nlevel=error event=forged"}) {
    CAPTURE(hostile);
    auto j = nlohmann::json::parse(json_quoted(hostile), nullptr, false);
    CHECK(j.is_string());
  }
}

TEST_CASE("json_escape_into with ascii_only writes printable ASCII only") {
  CHECK(escaped("caf\xc3\xa9", true) == "caf\\u00e9");
  CHECK(escaped("\xe2\x82\xac", true) == "\\u20ac");
  CHECK(escaped("\xf0\x9f\x98\x80", true) == "\\ud83d\\ude00"); // a surrogate pair
  CHECK(escaped("\xff", true) == "\\ufffd");
  std::string all;
  for (int c = 0; c < 256; ++c)
    all.push_back(static_cast<char>(c));
  std::string out = escaped(all, true);
  for (char c : out) {
    auto u = static_cast<unsigned char>(c);
    CHECK((u >= 0x20 && u < 0x7f));
  }
  CHECK(parses_as_string("\"" + escaped("\xf0\x9f\x98\x80", true) + "\"", "\xf0\x9f\x98\x80"));
}

TEST_CASE("json_text writes invalid UTF-8 as U+FFFD where dump() would throw") {
  nlohmann::json j = {{"userAgent", std::string("\xff\xfe")}, {"n", 1}};
  CHECK_THROWS(j.dump());
  CHECK(json_text(j) == "{\"n\":1,\"userAgent\":\"\xef\xbf\xbd\xef\xbf\xbd\"}");
  CHECK(json_text(nlohmann::json("ok")) == "\"ok\"");
}
