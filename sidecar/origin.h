// Origin allowlist: decides from the raw Origin header whether a browser page may open a socket.
// Pure string work, no I/O; patterns come from OriginsConfig.
#pragma once

#include "config.h"

#include <optional>
#include <string>
#include <string_view>

namespace sidecar {

// origin is the raw Origin header; std::nullopt when the request had none. An empty
// cfg.allowed admits every origin. Patterns are exact origins ("https://app.example.com"), a
// leading wildcard label ("https://*.example.com": one or more labels, never the bare domain), a
// wildcard port ("http://localhost:*"), or "*" for anything. Scheme and host compare
// case-insensitively; an explicit default port equals no port. An origin with a path, userinfo,
// a trailing dot, whitespace, or the value "null" matches nothing but "*".
bool origin_allowed(const OriginsConfig &cfg, std::optional<std::string_view> origin);

// For config checks: true when pattern is one of the forms above, else false with a reason.
bool origin_pattern_valid(std::string_view pattern, std::string &reason);

} // namespace sidecar
