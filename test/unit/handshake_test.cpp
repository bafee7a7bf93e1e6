#include "handshake.h"

#include <doctest/doctest.h>

using namespace sidecar;

namespace {

const std::string kUpgrade = "GET /ws/acme?token=a%20b&x=1 HTTP/1.1\r\n"
                             "Host: example.com\r\n"
                             "uPgRaDe: WebSocket\r\n"
                             "Connection: keep-alive, Upgrade\r\n"
                             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                             "Sec-WebSocket-Version: 13\r\n"
                             "Cookie: a=1; token=\"tok\"\r\n"
                             "\r\n";

} // namespace

TEST_CASE("a request split at every byte parses the same, and trailing frame bytes are kept") {
  std::string bytes = kUpgrade + "\x81\x80"
                                 "FRAME";
  for (size_t cut = 1; cut < bytes.size(); ++cut) {
    RequestParser p(16384);
    size_t used = 0;
    auto st = p.feed(bytes.data(), cut, used);
    size_t total = used;
    if (st == RequestParser::State::need_more) {
      st = p.feed(bytes.data() + cut, bytes.size() - cut, used);
      total = cut + used;
    }
    REQUIRE(st == RequestParser::State::done);
    CHECK(total == kUpgrade.size());
    const HttpRequest &r = p.request();
    CHECK(r.method == "GET");
    CHECK(r.path == "/ws/acme");
    CHECK(r.query_param("token").value() == "a b");
    CHECK(r.cookie("token").value() == "tok");
    CHECK(*r.header("upgrade") == "WebSocket");
    auto up = check_upgrade(r);
    CHECK(up.is_upgrade);
    CHECK_FALSE(up.refusal.has_value());
  }
}

TEST_CASE("a request head over the limit is answered 431") {
  std::string big = "GET / HTTP/1.1\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n";
  RequestParser p(16384);
  size_t used = 0;
  CHECK(p.feed(big.data(), big.size(), used) == RequestParser::State::error);
  CHECK(p.error_answer().status == 431);
}

TEST_CASE("garbage is answered 400") {
  RequestParser p(16384);
  size_t used = 0;
  std::string junk = "\x16\x03\x01 hello\r\n\r\n";
  CHECK(p.feed(junk.data(), junk.size(), used) == RequestParser::State::error);
  CHECK(p.error_answer().status == 400);
}

namespace {
HttpRequest parse(const std::string &s) {
  RequestParser p(16384);
  size_t used = 0;
  REQUIRE(p.feed(s.data(), s.size(), used) == RequestParser::State::done);
  return p.request();
}
} // namespace

TEST_CASE("upgrade checks give the status RFC 6455 and HTTP ask for") {
  auto status_of = [](const std::string &req) {
    auto c = check_upgrade(parse(req));
    return c.refusal ? c.refusal->status : 101;
  };
  std::string base = "Host: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
  std::string key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
  CHECK(status_of("GET / HTTP/1.1\r\n" + base + key + "Sec-WebSocket-Version: 13\r\n\r\n") == 101);
  CHECK(status_of("GET / HTTP/1.1\r\n" + base + key + "Sec-WebSocket-Version: 8\r\n\r\n") == 426);
  CHECK(status_of("GET / HTTP/1.1\r\n" + base + "Sec-WebSocket-Version: 13\r\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/1.1\r\n" + base +
                  "Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n") == 400);
  CHECK(status_of("POST / HTTP/1.1\r\n" + base + key + "Sec-WebSocket-Version: 13\r\n\r\n") == 405);
  CHECK(status_of("GET / HTTP/1.0\r\n" + base + key + "Sec-WebSocket-Version: 13\r\n\r\n") == 505);
  CHECK(status_of("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: close\r\n" + key +
                  "Sec-WebSocket-Version: 13\r\n\r\n") == 400);
  auto a =
      check_upgrade(parse("GET / HTTP/1.1\r\n" + base + key + "Sec-WebSocket-Version: 7\r\n\r\n"));
  bool has_version = false;
  for (auto &[k, v] : a.refusal->headers)
    has_version = has_version || (k == "Sec-WebSocket-Version" && v == "13");
  CHECK(has_version);
}

TEST_CASE("the 101 answer carries the accept key and only the chosen subprotocol") {
  std::string r = build_switching_protocols("dGhlIHNhbXBsZSBub25jZQ==", "bearer");
  CHECK(r.find("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") != std::string::npos);
  CHECK(r.find("Sec-WebSocket-Protocol: bearer\r\n") != std::string::npos);
  CHECK(r.substr(r.size() - 4) == "\r\n\r\n");
  CHECK(build_switching_protocols("dGhlIHNhbXBsZSBub25jZQ==", "").find("Sec-WebSocket-Protocol") ==
        std::string::npos);
}

TEST_CASE("answers are complete HTTP responses that close the connection") {
  std::string s = serialize_answer(json_error(404, "NOT_FOUND", "no \"such\" path"));
  CHECK(s.rfind("HTTP/1.1 404 Not Found\r\n", 0) == 0);
  CHECK(s.find("Connection: close\r\n") != std::string::npos);
  CHECK(s.find("{\"error\":\"NOT_FOUND\",\"message\":\"no \\\"such\\\" path\"}") !=
        std::string::npos);
}

TEST_CASE("a repeated query parameter gives every value, form-decoded, in order") {
  HttpRequest r;
  r.query = "recover=org%3Aa%40e%3A1&x=1&recover=b+c&recover&recov=z";
  CHECK(r.query_params("recover") == std::vector<std::string>{"org:a@e:1", "b c", ""});
  CHECK(r.query_param("recover").value() == "org:a@e:1");
  CHECK(r.query_params("none").empty());
}

TEST_CASE("a subprotocol is offered only when one item of the header is exactly it") {
  HttpRequest r;
  r.headers = {{"sec-websocket-protocol", "bearer, tok"}, {"sec-websocket-protocol", "sidecar.v1"}};
  CHECK(r.offers_protocol("sidecar.v1"));
  CHECK(r.offers_protocol("bearer"));
  CHECK_FALSE(r.offers_protocol("Sidecar.V1"));
  r.headers = {{"sec-websocket-protocol", "sidecar.v10"}};
  CHECK_FALSE(r.offers_protocol("sidecar.v1"));
}
