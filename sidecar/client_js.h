// GET /client.js and GET /client.d.ts: client/sidecar-client.js and its TypeScript declarations,
// compiled into the binary (cmake/embed_text.cmake) as the dashboard page is, so that a page
// always loads the client that speaks this binary's protocol. Both are public on the main
// listener: they hold no secret, and a page on another origin must be able to import them.
#pragma once

#include <string>
#include <string_view>

#include "handshake.h"

namespace sidecar {

// The module with its headers; 304 with the head alone when if_none_match (the request's
// If-None-Match, every value joined) names its ETag.
HttpAnswer client_js_answer(std::string_view if_none_match);
HttpAnswer client_dts_answer(std::string_view if_none_match);

// The compiled-in texts, for the unit test that holds them to the sidecar's version.
std::string_view client_js_text();
std::string_view client_dts_text();

// A strong ETag from the content's SHA-256: any edit to the file changes it, even one that
// forgets to bump the version.
std::string content_etag(std::string_view text);

// Whether an If-None-Match value lists this ETag or is "*". The comparison is weak (RFC 9110
// section 13.1.2): a W/ prefix on either side is ignored.
bool etag_listed(std::string_view if_none_match, std::string_view etag);

} // namespace sidecar
