// Handshake: bytes of an HTTP/1.1 request (through llhttp) -> HttpRequest, and the checks that
// turn a request into a WebSocket upgrade or a real HTTP answer. No uv calls here, so doctest and
// the fuzzer can drive it byte by byte.
#pragma once

#include <llhttp.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sidecar {

struct HttpRequest {
  std::string method;
  std::string target; // as sent: path and query
  std::string path;   // target before '?'
  std::string query;  // target after '?', without it
  uint8_t http_major = 0;
  uint8_t http_minor = 0;
  std::vector<std::pair<std::string, std::string>> headers; // names lower-cased, values trimmed
  uint64_t accepted_ns = 0; // when its connection was accepted (monotonic), for the latency

  // First header with this lower-case name, or nullptr.
  const std::string *header(std::string_view lower_name) const;
  // All values of a header joined with ", " (as RFC 9110 allows for list headers).
  std::string header_list(std::string_view lower_name) const;
  // Percent-decoded query parameter: the first one of that name.
  std::optional<std::string> query_param(std::string_view name) const;
  // Every value of a repeatable parameter, percent-decoded, in the order sent.
  std::vector<std::string> query_params(std::string_view name) const;
  // The client offered this subprotocol in Sec-WebSocket-Protocol (compared exactly, as
  // browsers compare the one echoed back).
  bool offers_protocol(std::string_view protocol) const;
  std::optional<std::string> cookie(std::string_view name) const;
};

struct HttpAnswer {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  // Extra headers. A Cache-Control here replaces the default no-store.
  std::vector<std::pair<std::string, std::string>> headers;
  // HEAD and 304: the head alone, with the Content-Length the body would have had (RFC 9110
  // sections 9.3.2 and 15.4.5), so a client reading by that length sees the connection end.
  bool head_only = false;
};

// The subprotocol of positioned delivery (issue 11): envelopes, positions and resyncs.
inline constexpr std::string_view kV1Protocol = "sidecar.v1";

// A JSON error answer: {"error":"<code>","message":"<message>"}.
HttpAnswer json_error(int status, std::string_view code, std::string_view message);
const char *http_reason(int status);
// Serialises an answer; every answer closes the connection.
std::string serialize_answer(const HttpAnswer &a);

class RequestParser {
public:
  enum class State { need_more, done, error };

  explicit RequestParser(size_t max_head_bytes);
  RequestParser(const RequestParser &) = delete;
  RequestParser &operator=(const RequestParser &) = delete;

  // Feeds the next bytes. On done, `consumed` is how many of these bytes belonged to the request;
  // the rest are the client's first WebSocket frames. On error, error_answer() says what to send.
  State feed(const char *data, size_t len, size_t &consumed);
  const HttpRequest &request() const { return req_; }
  void set_accepted_ns(uint64_t ns) { req_.accepted_ns = ns; }
  const HttpAnswer &error_answer() const { return error_; }

private:
  static int on_url(llhttp_t *p, const char *at, size_t len);
  static int on_header_field(llhttp_t *p, const char *at, size_t len);
  static int on_header_value(llhttp_t *p, const char *at, size_t len);
  static int on_headers_complete(llhttp_t *p);
  State fail(int status, std::string_view code, std::string_view message);

  llhttp_t parser_;
  HttpRequest req_;
  HttpAnswer error_;
  size_t max_head_bytes_;
  size_t seen_ = 0;
  bool in_value_ = false;
  bool complete_ = false;
};

// The RFC 6455 section 4.2.1 checks of an upgrade request. On success, `key` holds the client's
// Sec-WebSocket-Key.
struct UpgradeCheck {
  bool is_upgrade = false; // the client asked for a WebSocket at all
  std::optional<HttpAnswer> refusal;
  std::string key;
};
UpgradeCheck check_upgrade(const HttpRequest &req);

// "HTTP/1.1 101 Switching Protocols" with the accept key and, when chosen, the subprotocol and
// the Sec-WebSocket-Extensions answer (permessage-deflate's agreement).
std::string build_switching_protocols(std::string_view client_key, std::string_view protocol,
                                      std::string_view extensions = {});

// Splits a comma-separated header list into trimmed, non-empty items.
std::vector<std::string> split_list(std::string_view value);
bool iequals(std::string_view a, std::string_view b);

} // namespace sidecar
