// Origin allowlist: decides from the raw Origin header whether a browser page may open a socket.
// Pure string work, no I/O. Patterns are parsed once, when the config is loaded, with the same
// rules as the header, so a pattern that could never match a browser's Origin is a config error
// rather than a silent 403 for every browser.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "result.h"

namespace sidecar {

// One parsed allowlist entry. Patterns are exact origins ("https://app.example.com"), a leading
// wildcard label ("https://*.example.com": one or more labels, never the bare domain), a wildcard
// port ("http://localhost:*"), or "*" for anything. Scheme and host are kept in lower case; an
// explicit default port equals no port.
struct OriginPattern {
  static constexpr int kNoPort = -1;
  static constexpr int kAnyPort = -2;

  std::string text;   // as written in the config, for messages and endpoints
  bool any = false;   // "*"
  std::string scheme; // lower case
  std::string host;   // lower case; for a wildcard pattern, the part after "*."
  bool any_subdomain = false;
  int port = kNoPort;
};

struct OriginsConfig {
  std::vector<OriginPattern> allowed; // empty: any origin
  bool allow_missing = true;          // requests without Origin (non-browser clients)
};

// Parses one pattern; an error when it is none of the forms above (a path, a query, userinfo, a
// trailing dot, no scheme, a bad port...).
Result<OriginPattern> parse_origin_pattern(std::string_view text);

// origin is the raw Origin header; std::nullopt when the request had none. An empty
// cfg.allowed admits every origin. An origin with a path, userinfo, a trailing dot, whitespace,
// or the value "null" matches nothing but "*".
bool origin_allowed(const OriginsConfig &cfg, std::optional<std::string_view> origin);

// Access-Control-Allow-Origin for a public document that only pages allowed to connect may read
// (GET /ws/config): "*" when the allowlist admits every origin; the request's own Origin when
// the list names it (it then passed the same parser as the patterns, so it is safe to echo into a
// header); empty (no header) otherwise, and when the request has no Origin.
std::string cors_allow_origin(const OriginsConfig &cfg, std::optional<std::string_view> origin);

} // namespace sidecar
