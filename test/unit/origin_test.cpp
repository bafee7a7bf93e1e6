// origin_allowed and parse_origin_pattern: a table of honest and abusive Origin headers.
#include "origin.h"

#include <doctest/doctest.h>

using namespace sidecar;

namespace {

OriginsConfig allow(std::vector<std::string> patterns, bool allow_missing = true) {
  OriginsConfig cfg;
  for (const auto &text : patterns) {
    auto parsed = parse_origin_pattern(text);
    REQUIRE_MESSAGE(parsed.ok(), text << ": " << parsed.error);
    cfg.allowed.push_back(std::move(*parsed));
  }
  cfg.allow_missing = allow_missing;
  return cfg;
}

struct Case {
  const char *origin;
  bool allowed;
};

void check_table(const OriginsConfig &cfg, std::initializer_list<Case> cases) {
  for (const auto &c : cases) {
    CAPTURE(c.origin);
    CHECK(origin_allowed(cfg, std::string_view(c.origin)) == c.allowed);
  }
}

} // namespace

TEST_CASE("an empty allowlist admits every origin, and a missing one unless told not to") {
  check_table(allow({}), {{"https://anything.test", true}, {"null", true}, {"garbage", true}});
  CHECK(origin_allowed(allow({}), std::nullopt));
  CHECK_FALSE(origin_allowed(allow({}, false), std::nullopt));
}

TEST_CASE("a missing origin follows allow_missing whatever the patterns") {
  CHECK(origin_allowed(allow({"https://app.example.com"}), std::nullopt));
  CHECK_FALSE(origin_allowed(allow({"https://app.example.com"}, false), std::nullopt));
  CHECK_FALSE(origin_allowed(allow({"*"}, false), std::nullopt));
}

TEST_CASE("an exact origin matches only itself, ignoring case and default ports") {
  check_table(allow({"https://app.example.com"}), {
                                                      {"https://app.example.com", true},
                                                      {"HTTPS://App.Example.COM", true},
                                                      {"https://app.example.com:443", true},
                                                      {"https://app.example.com:8443", false},
                                                      {"http://app.example.com", false},
                                                      {"https://app.example.com:80", false},
                                                      {"https://example.com", false},
                                                      {"https://x.app.example.com", false},
                                                      {"https://app.example.com.evil.io", false},
                                                      {"https://evilapp.example.com", false},
                                                      {"https://app.example.co", false},
                                                      {"https://app.example.com.", false},
                                                      {"https://app.example.com/", false},
                                                      {"https://app.example.com/path", false},
                                                      {"https://app.example.com?x=1", false},
                                                      {"https://app.example.com#f", false},
                                                      {"https://user@app.example.com", false},
                                                      {"https://app.example.com@evil.io", false},
                                                      {"https://evil.io\\@app.example.com", false},
                                                      {" https://app.example.com", false},
                                                      {"https://app.example.com ", false},
                                                      {"https://app.example.com\t", false},
                                                      {"https://app .example.com", false},
                                                      {"https://app%2eexample.com", false},
                                                      {"https://app.example.com:", false},
                                                      {"https://app.example.com:0443", false},
                                                      {"https://app.example.com:+443", false},
                                                      {"https://app.example.com:99999", false},
                                                      {"https://app.example.com:443:443", false},
                                                      {"https:/app.example.com", false},
                                                      {"app.example.com", false},
                                                      {"null", false},
                                                      {"", false},
                                                  });
}

TEST_CASE("a pattern's explicit default port equals no port") {
  check_table(allow({"https://app.example.com:443", "http://plain.example.com:80"}),
              {
                  {"https://app.example.com", true},
                  {"https://app.example.com:443", true},
                  {"http://plain.example.com", true},
                  {"http://plain.example.com:80", true},
                  {"http://plain.example.com:443", false},
              });
}

TEST_CASE("a non-default port must match exactly") {
  check_table(allow({"http://127.0.0.1:3000"}), {
                                                    {"http://127.0.0.1:3000", true},
                                                    {"http://127.0.0.1:3001", false},
                                                    {"http://127.0.0.1", false},
                                                    {"http://127.0.0.1:300", false},
                                                });
}

TEST_CASE("a wildcard label matches one or more labels, never the bare or a look-alike domain") {
  check_table(allow({"https://*.example.com"}), {
                                                    {"https://app.example.com", true},
                                                    {"https://a.b.example.com", true},
                                                    {"https://APP.EXAMPLE.com", true},
                                                    {"https://app.example.com:443", true},
                                                    {"https://app.example.com:8443", false},
                                                    {"http://app.example.com", false},
                                                    {"https://example.com", false},
                                                    {"https://.example.com", false},
                                                    {"https://a..example.com", false},
                                                    {"https://evilexample.com", false},
                                                    {"https://example.com.evil.io", false},
                                                    {"https://app.example.com.evil.io", false},
                                                    {"https://app.example.com.", false},
                                                    {"https://app.example.com/x", false},
                                                    {"https://app.example.co", false},
                                                    {"https://app-example.com", false},
                                                    {"null", false},
                                                });
}

TEST_CASE("a wildcard port admits any port of that host and scheme") {
  check_table(allow({"http://localhost:*"}), {
                                                 {"http://localhost", true},
                                                 {"http://localhost:3000", true},
                                                 {"http://LOCALHOST:65535", true},
                                                 {"https://localhost:3000", false},
                                                 {"http://localhost.evil.io:3000", false},
                                                 {"http://evil-localhost:3000", false},
                                                 {"http://localhost:3000/", false},
                                                 {"http://localhost:abc", false},
                                             });
}

TEST_CASE("the star pattern admits anything, even null and malformed origins") {
  check_table(allow({"https://app.example.com", "*"}),
              {{"https://evil.io", true}, {"null", true}, {"https://x.io/path", true}});
}

TEST_CASE("any of several patterns may match; bracketed IPv6 hosts compare exactly") {
  check_table(allow({"https://app.example.com", "http://[::1]:8080", "https://*.acme.io"}),
              {
                  {"https://app.example.com", true},
                  {"http://[::1]:8080", true},
                  {"http://[::1]", false},
                  {"http://[::2]:8080", false},
                  {"https://eu.acme.io", true},
                  {"https://acme.io", false},
                  {"http://[::1]:8080/", false},
              });
}

TEST_CASE("patterns that could never match a browser's Origin are refused with a reason") {
  for (auto p : {"app.example.com", "https://*", "https://*.*.example.com", "https://a.com/",
                 "https://a.com/login", "https://a.com?x=1", "https://a.com#top", "https://a.com.",
                 "https://a.com:0", "https://user@a.com", "https://a.com:*:*", "null", "",
                 // Brackets hold an IPv6 address, read by the same parser as client addresses.
                 "http://[1:2]", "http://[::1::2]", "http://[1.2.3.4]", "http://[fe80::1%25lo]"}) {
    CAPTURE(p);
    auto parsed = parse_origin_pattern(p);
    CHECK_FALSE(parsed.ok());
    CHECK(parsed.error.find("scheme://host[:port]") != std::string::npos);
  }
  for (auto p : {"*", "https://app.example.com", "https://*.example.com", "http://localhost:*",
                 "http://127.0.0.1:3000", "http://[::1]:8080", "HTTPS://APP.example.com:443"}) {
    CAPTURE(p);
    auto parsed = parse_origin_pattern(p);
    REQUIRE(parsed.ok());
    CHECK(parsed->text == p);
  }
}

TEST_CASE("discovery's CORS answer follows the allowlist and echoes only a listed origin") {
  OriginsConfig any;
  CHECK(cors_allow_origin(any, "https://evil.example") == "*");
  CHECK(cors_allow_origin(any, std::nullopt) == "*");
  OriginsConfig star;
  star.allowed.push_back(*parse_origin_pattern("*").value);
  CHECK(cors_allow_origin(star, "https://x.example") == "*");
  OriginsConfig listed;
  listed.allowed.push_back(*parse_origin_pattern("https://app.example.com").value);
  listed.allowed.push_back(*parse_origin_pattern("https://*.example.org").value);
  CHECK(cors_allow_origin(listed, "https://app.example.com") == "https://app.example.com");
  CHECK(cors_allow_origin(listed, "https://a.example.org") == "https://a.example.org");
  CHECK(cors_allow_origin(listed, "https://evil.example") == "");
  CHECK(cors_allow_origin(listed, "https://a.example.org\r\nSet-Cookie: x=1") == "");
  CHECK(cors_allow_origin(listed, "null") == "");
  CHECK(cors_allow_origin(listed, std::nullopt) == "");
}
