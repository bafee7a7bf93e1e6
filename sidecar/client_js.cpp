// The client's answers; see client_js.h.
#include "client_js.h"

#include "encoding.h"
#include "text.h"

namespace sidecar {

extern const std::string_view kClientJs;  // generated from client/sidecar-client.js
extern const std::string_view kClientDts; // generated from client/sidecar-client.d.ts

namespace {

std::string_view strip_weak(std::string_view tag) {
  return tag.substr(0, 2) == "W/" ? tag.substr(2) : tag;
}

HttpAnswer static_answer(std::string_view text, const std::string &etag,
                         std::string_view content_type, std::string_view if_none_match) {
  HttpAnswer a;
  a.content_type = std::string(content_type);
  a.body = std::string(text);
  // Module scripts are fetched with CORS, so a page on another origin needs this to import the
  // client at all. The file is the same for everyone and carries no credentials; "*" is right.
  // Five minutes of caching spares a page load a request without keeping a client for long after
  // an upgrade; the ETag makes the check after that cheap.
  a.headers = {{"Access-Control-Allow-Origin", "*"},
               {"X-Content-Type-Options", "nosniff"},
               {"Cache-Control", "public, max-age=300"},
               {"ETag", etag}};
  if (!if_none_match.empty() && etag_listed(if_none_match, etag)) {
    a.status = 304;
    a.head_only = true;
  }
  return a;
}

} // namespace

std::string_view client_js_text() { return kClientJs; }
std::string_view client_dts_text() { return kClientDts; }

std::string content_etag(std::string_view text) {
  // 16 bytes of the digest are plenty to tell versions of one file apart.
  return "\"" + base64url_encode(sha256_digest(text).substr(0, 16)) + "\"";
}

bool etag_listed(std::string_view if_none_match, std::string_view etag) {
  std::string_view want = strip_weak(etag);
  while (!if_none_match.empty()) {
    size_t comma = if_none_match.find(',');
    std::string_view item = trim(if_none_match.substr(0, comma));
    if (item == "*" || (!item.empty() && strip_weak(item) == want))
      return true;
    if (comma == std::string_view::npos)
      break;
    if_none_match.remove_prefix(comma + 1);
  }
  return false;
}

HttpAnswer client_js_answer(std::string_view if_none_match) {
  // Computed at the first request, from bytes that never change while the process runs.
  static const std::string etag = content_etag(kClientJs);
  return static_answer(kClientJs, etag, "text/javascript; charset=utf-8", if_none_match);
}

HttpAnswer client_dts_answer(std::string_view if_none_match) {
  static const std::string etag = content_etag(kClientDts);
  // No registered type for TypeScript declarations; text/plain lets a browser show them.
  return static_answer(kClientDts, etag, "text/plain; charset=utf-8", if_none_match);
}

} // namespace sidecar
