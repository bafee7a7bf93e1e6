// Handshake parsing and checks; see handshake.h.
#include "handshake.h"

#include <algorithm>
#include <cctype>

#include "encoding.h"
#include "log.h"
#include "text.h"

namespace sidecar {
namespace {

bool list_contains(std::string_view value, std::string_view token) {
  for (const auto &item : split_list(value)) {
    if (iequals(item, token))
      return true;
  }
  return false;
}

} // namespace

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::vector<std::string> split_list(std::string_view value) {
  std::vector<std::string> out;
  while (!value.empty()) {
    size_t comma = value.find(',');
    std::string_view item = trim(value.substr(0, comma));
    if (!item.empty())
      out.emplace_back(item);
    if (comma == std::string_view::npos)
      break;
    value.remove_prefix(comma + 1);
  }
  return out;
}

const std::string *HttpRequest::header(std::string_view lower_name) const {
  for (const auto &[k, v] : headers) {
    if (k == lower_name)
      return &v;
  }
  return nullptr;
}

std::string HttpRequest::header_list(std::string_view lower_name) const {
  std::string out;
  for (const auto &[k, v] : headers) {
    if (k != lower_name)
      continue;
    if (!out.empty())
      out.append(", ");
    out.append(v);
  }
  return out;
}

namespace {

// Calls each(value) for every parameter named `name`, decoded, until it returns false. A query
// string is form-encoded: "+" is a space and a malformed escape stays as sent.
template <typename Fn> void for_each_param(std::string_view q, std::string_view name, Fn &&each) {
  while (!q.empty()) {
    size_t amp = q.find('&');
    std::string_view pair = q.substr(0, amp);
    size_t eq = pair.find('=');
    std::string_view k = pair.substr(0, eq);
    if (percent_decode(k, PercentRule::form) == name) {
      std::string value = eq == std::string_view::npos
                              ? std::string()
                              : *percent_decode(pair.substr(eq + 1), PercentRule::form);
      if (!each(std::move(value)))
        return;
    }
    if (amp == std::string_view::npos)
      break;
    q.remove_prefix(amp + 1);
  }
}

} // namespace

std::optional<std::string> HttpRequest::query_param(std::string_view name) const {
  std::optional<std::string> found;
  for_each_param(query, name, [&](std::string v) {
    found = std::move(v);
    return false;
  });
  return found;
}

std::vector<std::string> HttpRequest::query_params(std::string_view name) const {
  std::vector<std::string> out;
  for_each_param(query, name, [&](std::string v) {
    out.push_back(std::move(v));
    return true;
  });
  return out;
}

bool HttpRequest::offers_protocol(std::string_view protocol) const {
  for (const std::string &item : split_list(header_list("sec-websocket-protocol"))) {
    if (item == protocol)
      return true;
  }
  return false;
}

std::optional<std::string> HttpRequest::cookie(std::string_view name) const {
  for (const auto &[k, v] : headers) {
    if (k != "cookie")
      continue;
    std::string_view rest = v;
    while (!rest.empty()) {
      size_t semi = rest.find(';');
      std::string_view pair = trim(rest.substr(0, semi));
      size_t eq = pair.find('=');
      if (eq != std::string_view::npos && trim(pair.substr(0, eq)) == name) {
        std::string_view val = trim(pair.substr(eq + 1));
        if (val.size() >= 2 && val.front() == '"' && val.back() == '"') {
          val = val.substr(1, val.size() - 2);
        }
        return std::string(val);
      }
      if (semi == std::string_view::npos)
        break;
      rest.remove_prefix(semi + 1);
    }
  }
  return std::nullopt;
}

const char *http_reason(int status) {
  switch (status) {
  case 101:
    return "Switching Protocols";
  case 200:
    return "OK";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 408:
    return "Request Timeout";
  case 413:
    return "Content Too Large";
  case 426:
    return "Upgrade Required";
  case 429:
    return "Too Many Requests";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 503:
    return "Service Unavailable";
  case 505:
    return "HTTP Version Not Supported";
  default:
    return "Unknown";
  }
}

HttpAnswer json_error(int status, std::string_view code, std::string_view message) {
  HttpAnswer a;
  a.status = status;
  a.body = "{\"error\":\"";
  json_escape_into(a.body, code);
  a.body.append("\",\"message\":\"");
  json_escape_into(a.body, message);
  a.body.append("\"}\n");
  return a;
}

std::string serialize_answer(const HttpAnswer &a) {
  std::string out = "HTTP/1.1 " + std::to_string(a.status) + " " + http_reason(a.status) + "\r\n";
  out.append("Content-Type: ").append(a.content_type).append("\r\n");
  out.append("Content-Length: ").append(std::to_string(a.body.size())).append("\r\n");
  bool cache_control = false;
  for (const auto &[k, v] : a.headers)
    cache_control = cache_control || iequals(k, "Cache-Control");
  if (!cache_control)
    out.append("Cache-Control: no-store\r\n");
  out.append("Connection: close\r\n");
  for (const auto &[k, v] : a.headers)
    out.append(k).append(": ").append(v).append("\r\n");
  out.append("\r\n");
  if (!a.head_only)
    out.append(a.body);
  return out;
}

RequestParser::RequestParser(size_t max_head_bytes) : max_head_bytes_(max_head_bytes) {
  // llhttp reads its callbacks from here for the parser's whole life, so they are static.
  static const llhttp_settings_t cbs = [] {
    llhttp_settings_t v;
    llhttp_settings_init(&v);
    v.on_url = &RequestParser::on_url;
    v.on_header_field = &RequestParser::on_header_field;
    v.on_header_value = &RequestParser::on_header_value;
    v.on_headers_complete = &RequestParser::on_headers_complete;
    return v;
  }();
  llhttp_init(&parser_, HTTP_REQUEST, &cbs);
  parser_.data = this;
}

int RequestParser::on_url(llhttp_t *p, const char *at, size_t len) {
  auto *self = static_cast<RequestParser *>(p->data);
  self->req_.target.append(at, len);
  return 0;
}

int RequestParser::on_header_field(llhttp_t *p, const char *at, size_t len) {
  auto *self = static_cast<RequestParser *>(p->data);
  if (self->in_value_ || self->req_.headers.empty()) {
    self->req_.headers.emplace_back();
    self->in_value_ = false;
  }
  std::string &name = self->req_.headers.back().first;
  for (size_t i = 0; i < len; ++i) {
    name.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(at[i]))));
  }
  return 0;
}

int RequestParser::on_header_value(llhttp_t *p, const char *at, size_t len) {
  auto *self = static_cast<RequestParser *>(p->data);
  self->in_value_ = true;
  if (self->req_.headers.empty())
    self->req_.headers.emplace_back();
  self->req_.headers.back().second.append(at, len);
  return 0;
}

int RequestParser::on_headers_complete(llhttp_t *p) {
  auto *self = static_cast<RequestParser *>(p->data);
  self->complete_ = true;
  // 2: no body, and stop here with HPE_PAUSED_UPGRADE so that what follows stays unparsed.
  return 2;
}

RequestParser::State RequestParser::fail(int status, std::string_view code,
                                         std::string_view message) {
  error_ = json_error(status, code, message);
  return State::error;
}

RequestParser::State RequestParser::feed(const char *data, size_t len, size_t &consumed) {
  consumed = 0;
  llhttp_errno_t err = llhttp_execute(&parser_, data, len);
  if (complete_ && (err == HPE_PAUSED_UPGRADE || err == HPE_OK)) {
    const char *pos = err == HPE_PAUSED_UPGRADE ? llhttp_get_error_pos(&parser_) : data + len;
    consumed = pos != nullptr && pos >= data ? static_cast<size_t>(pos - data) : len;
    seen_ += consumed;
    if (seen_ > max_head_bytes_) {
      return fail(431, "HEADERS_TOO_LARGE", "request head exceeds limits.max_header_bytes");
    }
    req_.method = llhttp_method_name(static_cast<llhttp_method_t>(parser_.method));
    req_.http_major = parser_.http_major;
    req_.http_minor = parser_.http_minor;
    for (auto &[k, v] : req_.headers)
      v = std::string(trim(v));
    size_t q = req_.target.find('?');
    req_.path = req_.target.substr(0, q);
    req_.query = q == std::string::npos ? std::string() : req_.target.substr(q + 1);
    return State::done;
  }
  seen_ += len;
  if (err != HPE_OK) {
    return fail(400, "BAD_REQUEST",
                std::string("malformed HTTP request: ") + llhttp_errno_name(err));
  }
  if (seen_ > max_head_bytes_) {
    return fail(431, "HEADERS_TOO_LARGE", "request head exceeds limits.max_header_bytes");
  }
  return State::need_more;
}

UpgradeCheck check_upgrade(const HttpRequest &req) {
  UpgradeCheck c;
  const std::string *upgrade = req.header("upgrade");
  c.is_upgrade = upgrade != nullptr && list_contains(*upgrade, "websocket");
  if (!c.is_upgrade)
    return c;
  if (req.method != "GET") {
    HttpAnswer a = json_error(405, "METHOD_NOT_ALLOWED", "a WebSocket upgrade must use GET");
    a.headers.emplace_back("Allow", "GET");
    c.refusal = a;
    return c;
  }
  if (req.http_major != 1 || req.http_minor < 1) {
    c.refusal = json_error(505, "HTTP_VERSION", "a WebSocket upgrade needs HTTP/1.1");
    return c;
  }
  if (!list_contains(req.header_list("connection"), "upgrade")) {
    c.refusal = json_error(400, "BAD_UPGRADE", "Connection header must contain Upgrade");
    return c;
  }
  if (req.header("host") == nullptr) {
    c.refusal = json_error(400, "BAD_UPGRADE", "Host header is required");
    return c;
  }
  const std::string *version = req.header("sec-websocket-version");
  if (version == nullptr || *version != "13") {
    HttpAnswer a =
        json_error(426, "UNSUPPORTED_VERSION", "only Sec-WebSocket-Version 13 is supported");
    a.headers.emplace_back("Sec-WebSocket-Version", "13");
    a.headers.emplace_back("Upgrade", "websocket");
    c.refusal = a;
    return c;
  }
  const std::string *key = req.header("sec-websocket-key");
  // The key must be base64 of exactly 16 bytes (RFC 6455 section 4.1).
  std::optional<std::string> raw = key ? base64_decode(*key) : std::nullopt;
  if (!raw || raw->size() != 16) {
    c.refusal = json_error(400, "BAD_UPGRADE", "Sec-WebSocket-Key must be base64 of 16 bytes");
    return c;
  }
  c.key = *key;
  return c;
}

std::string build_switching_protocols(std::string_view client_key, std::string_view protocol,
                                      std::string_view extensions) {
  std::string out = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Accept: ";
  out.append(websocket_accept_key(client_key)).append("\r\n");
  if (!protocol.empty())
    out.append("Sec-WebSocket-Protocol: ").append(protocol).append("\r\n");
  if (!extensions.empty())
    out.append("Sec-WebSocket-Extensions: ").append(extensions).append("\r\n");
  out.append("\r\n");
  return out;
}

} // namespace sidecar
