// The client library as compiled in: the module the sidecar serves carries the sidecar's own
// version, and its answers let a page on another origin import it and revalidate it cheaply.
#include "client_js.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "handshake.h"

using namespace sidecar;

namespace {

const std::string *header(const HttpAnswer &a, std::string_view name) {
  for (const auto &[n, v] : a.headers) {
    if (iequals(n, name))
      return &v;
  }
  return nullptr;
}

} // namespace

TEST_CASE("the compiled-in client exports the sidecar's version") {
  std::string want = std::string("export const VERSION = \"") + SIDECAR_VERSION + "\";";
  CHECK(client_js_text().find(want) != std::string_view::npos);
  CHECK(client_dts_text().find("SidecarClient") != std::string_view::npos);
}

TEST_CASE("client.js is public JavaScript that any origin may import") {
  HttpAnswer a = client_js_answer("");
  CHECK(a.status == 200);
  CHECK(a.content_type == "text/javascript; charset=utf-8");
  CHECK(a.body == client_js_text());
  REQUIRE(header(a, "Access-Control-Allow-Origin") != nullptr);
  CHECK(*header(a, "Access-Control-Allow-Origin") == "*");
  CHECK(*header(a, "X-Content-Type-Options") == "nosniff");
  CHECK(*header(a, "Cache-Control") == "public, max-age=300");
  CHECK(*header(a, "ETag") == content_etag(client_js_text()));
  std::string wire = serialize_answer(a);
  CHECK(wire.find("Cache-Control: no-store") == std::string::npos);
  CHECK(wire.find("Cache-Control: public, max-age=300\r\n") != std::string::npos);
}

TEST_CASE("a matching If-None-Match gets 304 with the head alone") {
  std::string etag = content_etag(client_js_text());
  for (const std::string &inm : std::vector<std::string>{etag, "W/" + etag, "\"other\", " + etag,
                                                         "*", " \"x\" ,W/" + etag}) {
    CAPTURE(inm);
    HttpAnswer a = client_js_answer(inm);
    CHECK(a.status == 304);
    std::string wire = serialize_answer(a);
    CHECK(wire.substr(wire.size() - 4) == "\r\n\r\n");
    CHECK(wire.find("ETag: " + etag + "\r\n") != std::string::npos);
  }
  for (const std::string &inm :
       std::vector<std::string>{"\"other\"", "W/\"other\"", ",", etag.substr(1)}) {
    CAPTURE(inm);
    CHECK(client_js_answer(inm).status == 200);
  }
}

TEST_CASE("the ETag follows the content, not the version") {
  CHECK(content_etag("a") != content_etag("b"));
  CHECK(content_etag("a") == content_etag("a"));
  CHECK(content_etag("a").front() == '"');
  CHECK(content_etag("a").back() == '"');
  CHECK(content_etag(client_js_text()) != content_etag(client_dts_text()));
}

TEST_CASE("a head-only answer keeps the body's Content-Length and sends no body") {
  HttpAnswer a = client_dts_answer("");
  a.head_only = true;
  std::string wire = serialize_answer(a);
  CHECK(wire.find("Content-Length: " + std::to_string(client_dts_text().size()) + "\r\n") !=
        std::string::npos);
  CHECK(wire.substr(wire.size() - 4) == "\r\n\r\n");
  CHECK(wire.find("SidecarClient") == std::string::npos);
}
