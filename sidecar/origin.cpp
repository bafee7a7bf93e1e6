// Origin allowlist matching; see origin.h. Both the header and each pattern are parsed into
// scheme, host and port with the same strict rules, so that what matches is decided on parsed
// parts, never on substrings of the raw text ("https://example.com.evil.io" cannot pass as
// "https://*.example.com" and "https://evilexample.com" cannot either).
#include "origin.h"

#include "client_ip.h"

namespace sidecar {
namespace {

constexpr int kNoPort = OriginPattern::kNoPort;
constexpr int kAnyPort = OriginPattern::kAnyPort;

// A header and a pattern parse into the same parts; a header never has any/any_subdomain.
using Origin = OriginPattern;

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool parse_scheme(std::string_view text, std::string &out) {
  if (text.empty() || !is_alpha(text[0]))
    return false;
  for (char c : text) {
    if (!is_alpha(c) && !is_digit(c) && c != '+' && c != '-' && c != '.')
      return false;
    out.push_back(lower(c));
  }
  return true;
}

// A DNS name or IPv4 address: non-empty labels of letters, digits, '-' and '_', no trailing
// dot. Anything else (percent escapes, non-ASCII, empty labels) is not a serialized origin.
bool parse_name(std::string_view text, std::string &out) {
  if (text.empty() || text.back() == '.')
    return false;
  bool label_empty = true;
  for (char c : text) {
    if (c == '.') {
      if (label_empty)
        return false;
      label_empty = true;
    } else if (is_alpha(c) || is_digit(c) || c == '-' || c == '_') {
      label_empty = false;
    } else {
      return false;
    }
    out.push_back(lower(c));
  }
  return !label_empty;
}

// A bracketed IPv6 address, kept as written but in lower case: browsers send the compressed
// form, and a pattern is compared as text, so only its validity is checked here.
bool parse_ipv6(std::string_view text, std::string &out) {
  // text includes the brackets.
  if (text.size() < 4)
    return false;
  std::optional<IpAddress> ip = parse_ip(text.substr(1, text.size() - 2));
  if (!ip || ip->family != IpAddress::Family::v6)
    return false;
  for (char c : text)
    out.push_back(lower(c));
  return true;
}

// Port digits as a browser serializes them: 1..65535, no sign, no leading zero.
bool parse_port(std::string_view text, int &port) {
  if (text.empty() || text.size() > 5 || text[0] == '0')
    return false;
  int value = 0;
  for (char c : text) {
    if (!is_digit(c))
      return false;
    value = value * 10 + (c - '0');
  }
  if (value > 65535)
    return false;
  port = value;
  return true;
}

int default_port(const std::string &scheme) {
  if (scheme == "https" || scheme == "wss")
    return 443;
  if (scheme == "http" || scheme == "ws")
    return 80;
  return kNoPort;
}

// Parses "scheme://host[:port]". Patterns may also use "*." before the host and "*" as port.
bool parse_origin(std::string_view text, bool pattern, Origin &out) {
  size_t sep = text.find("://");
  if (sep == std::string_view::npos || !parse_scheme(text.substr(0, sep), out.scheme)) {
    return false;
  }
  std::string_view rest = text.substr(sep + 3);
  // A path, query, fragment or userinfo has no place in an Origin; nor has whitespace.
  for (char c : rest) {
    if (c == '/' || c == '?' || c == '#' || c == '@' || c == '\\' ||
        static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
      return false;
    }
  }
  std::string_view host = rest;
  std::string_view port;
  bool has_port = false;
  if (!rest.empty() && rest[0] == '[') {
    size_t close = rest.find(']');
    if (close == std::string_view::npos)
      return false;
    host = rest.substr(0, close + 1);
    std::string_view after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':')
        return false;
      port = after.substr(1);
      has_port = true;
    }
    if (!parse_ipv6(host, out.host))
      return false;
  } else {
    size_t colon = rest.find(':');
    if (colon != std::string_view::npos) {
      host = rest.substr(0, colon);
      port = rest.substr(colon + 1);
      has_port = true;
    }
    if (pattern && host.size() > 2 && host.substr(0, 2) == "*.") {
      out.any_subdomain = true;
      host.remove_prefix(2);
    }
    if (!parse_name(host, out.host))
      return false;
  }
  if (has_port) {
    if (pattern && port == "*") {
      out.port = kAnyPort;
    } else if (!parse_port(port, out.port)) {
      return false;
    }
  }
  if (out.port == default_port(out.scheme))
    out.port = kNoPort;
  return true;
}

bool host_matches(const OriginPattern &pattern, const std::string &host) {
  if (!pattern.any_subdomain)
    return host == pattern.host;
  // At least one whole label before ".<suffix>"; labels were checked non-empty when parsed.
  return host.size() > pattern.host.size() + 1 &&
         host.compare(host.size() - pattern.host.size(), pattern.host.size(), pattern.host) == 0 &&
         host[host.size() - pattern.host.size() - 1] == '.';
}

bool matches(const OriginPattern &pattern, const Origin &origin) {
  return pattern.scheme == origin.scheme &&
         (pattern.port == kAnyPort || pattern.port == origin.port) &&
         host_matches(pattern, origin.host);
}

} // namespace

Result<OriginPattern> parse_origin_pattern(std::string_view text) {
  OriginPattern p;
  p.text = std::string(text);
  if (text == "*") {
    p.any = true;
    return p;
  }
  if (!parse_origin(text, true, p))
    return Result<OriginPattern>::fail(
        "must be \"*\" or scheme://host[:port] with an optional leading \"*.\" label and "
        "port \"*\", without path, query, userinfo or trailing dot (a browser's Origin "
        "header has none of them, so this pattern would refuse every browser)");
  return p;
}

bool origin_allowed(const OriginsConfig &cfg, std::optional<std::string_view> origin) {
  if (!origin)
    return cfg.allow_missing;
  if (cfg.allowed.empty())
    return true;
  for (const auto &p : cfg.allowed) {
    if (p.any)
      return true;
  }
  Origin parsed;
  if (!parse_origin(*origin, false, parsed))
    return false;
  for (const auto &p : cfg.allowed) {
    if (matches(p, parsed))
      return true;
  }
  return false;
}

std::string cors_allow_origin(const OriginsConfig &cfg, std::optional<std::string_view> origin) {
  for (const auto &p : cfg.allowed) {
    if (p.any)
      return "*";
  }
  if (cfg.allowed.empty())
    return "*";
  if (!origin || !origin_allowed(cfg, origin))
    return "";
  return std::string(*origin);
}

} // namespace sidecar
