// The dashboard page as compiled in, and its policy: the page is self-contained (nothing it
// loads comes from elsewhere) and its Content-Security-Policy allows exactly its own inline
// script and style by hash, so a page edit that adds a second block, an inline handler or a
// style attribute fails here rather than silently in a browser.
#include "dashboard.h"

#include <doctest/doctest.h>
#include <openssl/sha.h>

#include <cctype>
#include <string>

#include "encoding.h"

using namespace sidecar;

namespace {

// Whether some "<...>" span holds whitespace, then `name` (or "on" and letters when `name` is
// empty: an inline handler), then optional spaces and '='. Written out rather than with
// <regex>, whose GCC 12 headers warn (maybe-uninitialized) under the sanitizer build's -Werror.
bool tag_has_attribute(const std::string &page, std::string_view name) {
  auto space = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
  auto lower = [](char c) { return c >= 'a' && c <= 'z'; };
  for (size_t lt = page.find('<'); lt != std::string::npos; lt = page.find('<', lt + 1)) {
    size_t gt = page.find('>', lt);
    std::string_view tag(page.data() + lt, (gt == std::string::npos ? page.size() : gt) - lt);
    for (size_t i = 1; i < tag.size(); ++i) {
      if (!space(tag[i - 1]))
        continue;
      size_t j = i;
      if (name.empty()) {
        if (tag.substr(j, 2) != "on")
          continue;
        j += 2;
        size_t letters = j;
        while (j < tag.size() && lower(tag[j]))
          ++j;
        if (j == letters)
          continue;
      } else {
        if (tag.substr(j, name.size()) != name)
          continue;
        j += name.size();
      }
      while (j < tag.size() && space(tag[j]))
        ++j;
      if (j < tag.size() && tag[j] == '=')
        return true;
    }
  }
  return false;
}

const std::string *header(const HttpAnswer &a, std::string_view name) {
  for (const auto &[n, v] : a.headers) {
    if (iequals(n, name))
      return &v;
  }
  return nullptr;
}

// SHA-256 as CSP writes it: base64 of the digest, computed here with OpenSSL's one-shot SHA256.
std::string csp_hash(std::string_view text) {
  unsigned char digest[32];
  SHA256(reinterpret_cast<const unsigned char *>(text.data()), text.size(), digest);
  return "'sha256-" + base64_encode(std::string_view(reinterpret_cast<const char *>(digest), 32)) +
         "'";
}

std::string between(const std::string &s, const std::string &open, const std::string &close) {
  size_t a = s.find(open);
  REQUIRE(a != std::string::npos);
  a += open.size();
  size_t b = s.find(close, a);
  REQUIRE(b != std::string::npos);
  return s.substr(a, b - a);
}

} // namespace

TEST_CASE("the dashboard is HTML with a policy that allows its own script and style by hash") {
  HttpAnswer a = dashboard_answer();
  CHECK(a.status == 200);
  CHECK(a.content_type == "text/html; charset=utf-8");
  REQUIRE(header(a, "content-security-policy") != nullptr);
  const std::string &csp = *header(a, "content-security-policy");
  std::string script = between(a.body, "<script>", "</script>");
  std::string style = between(a.body, "<style>", "</style>");
  CHECK(csp == "default-src 'none'; script-src " + csp_hash(script) + "; style-src " +
                   csp_hash(style) +
                   "; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
                   "frame-ancestors 'none'");
  CHECK(csp.find("unsafe") == std::string::npos);
  REQUIRE(header(a, "x-content-type-options") != nullptr);
  CHECK(*header(a, "x-content-type-options") == "nosniff");
  CHECK(header(a, "cache-control") != nullptr);
}

TEST_CASE("the dashboard page loads nothing from elsewhere and has nothing the policy blocks") {
  std::string page = dashboard_answer().body;
  // No URL of another origin anywhere: no CDN, font, script or image.
  CHECK(page.find("http://") == std::string::npos);
  CHECK(page.find("https://") == std::string::npos);
  CHECK(page.find("url(") == std::string::npos);
  CHECK(page.find("@import") == std::string::npos);
  // One script and one style, both inline; no src= and no <link> but the empty data: favicon.
  CHECK(page.find("<script src") == std::string::npos);
  size_t link = page.find("<link");
  REQUIRE(link != std::string::npos);
  std::string favicon = R"(<link rel="icon" href="data:,">)";
  CHECK(page.compare(link, favicon.size(), favicon) == 0);
  CHECK(page.find("<link", link + 1) == std::string::npos);
  // Inline handlers and style attributes would be blocked by a hash-only policy.
  CHECK_FALSE(tag_has_attribute(page, ""));
  CHECK_FALSE(tag_has_attribute(page, "style"));
  // It polls exactly the endpoints that share its protection.
  CHECK(page.find("\"/metrics\"") != std::string::npos);
  CHECK(page.find("\"/api/websocket/status?\"") != std::string::npos);
}

TEST_CASE("the attribute scanner finds inline handlers and style attributes") {
  CHECK(tag_has_attribute("<button onclick=\"x()\">", ""));
  CHECK(tag_has_attribute("<div\n  onload = go>", ""));
  CHECK(tag_has_attribute("<p style=\"color:red\">", "style"));
  CHECK_FALSE(tag_has_attribute("<button id=on>", ""));
  CHECK_FALSE(tag_has_attribute("<p data-style=x>", "style"));
  CHECK_FALSE(tag_has_attribute("<p> onclick=x", ""));
}

TEST_CASE("a page without exactly one script and one style gets no policy") {
  CHECK(dashboard_csp("<style>a{}</style><script>1</script>") != "");
  CHECK(dashboard_csp("<style>a{}</style>") == "");
  CHECK(dashboard_csp("<script>1</script>") == "");
  CHECK(dashboard_csp("<style>a{}</style><script>1</script><script>2</script>") == "");
  CHECK(dashboard_csp("<style>a{}</style><script>1</script><script src=x></script>") == "");
  CHECK(dashboard_csp("<style>a{}</style><script>1") == "");
}
