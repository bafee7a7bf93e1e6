// Fuzzes the Origin allowlist: patterns as a config would hold them and an Origin header as any
// stranger may send it, before authentication.
//
// Input layout: byte 0 sets allow_missing (bit 0) and whether the request has an Origin at all
// (bit 1); the rest is split at '\n': the first line is the Origin header, every further line a
// pattern. Patterns that parse_origin_pattern refuses are left out, as config loading would.
//
// Invariants, each an abort when broken:
// - no Origin header: the answer is allow_missing, whatever the patterns.
// - an empty allowlist admits every origin; "*" admits every origin.
// - every accepted pattern admits the origin a browser would send for it: the pattern text itself,
//   "a." in place of "*." and a port in place of ":*" (origin.h promises that a pattern which no
//   browser Origin can match is a config error, not a silent 403).
// - case does not matter: upper-casing ASCII letters of the Origin never changes the answer.
// - an Origin with a path, a query, userinfo, whitespace or a trailing dot matches nothing but
//   "*", so such a variant of an admitted origin is refused.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_stats.h"
#include "origin.h"

namespace {

enum : size_t { kPatternsParsed, kAllowed, kRefused, kWildcardAllowed };
fuzz::Stats stats("fuzz_origin", {{"patterns_parsed", true},
                                  {"allowed", true},
                                  {"refused", true},
                                  {"wildcard_allowed", true}});

[[noreturn]] void broken(const char *what, std::string_view origin, std::string_view pattern) {
  std::fprintf(stderr, "fuzz_origin: %s (origin \"%.*s\", pattern \"%.*s\")\n", what,
               static_cast<int>(origin.size()), origin.data(), static_cast<int>(pattern.size()),
               pattern.data());
  std::abort();
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (char &c : out) {
    if (c >= 'a' && c <= 'z')
      c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

// The Origin a browser would send for a page that this pattern is meant to admit.
std::string browser_origin_for(const sidecar::OriginPattern &p) {
  std::string text = p.text;
  size_t star = text.find("://*.");
  if (star != std::string::npos)
    text.replace(star + 3, 1, "a");
  if (text.size() >= 2 && text.compare(text.size() - 2, 2, ":*") == 0)
    text.replace(text.size() - 1, 1, "8443");
  return text;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > 4096)
    return 0;
  const bool allow_missing = (data[0] & 1) != 0;
  const bool has_origin = (data[0] & 2) != 0;
  std::string_view rest(reinterpret_cast<const char *>(data + 1), size - 1);
  size_t nl = rest.find('\n');
  std::string_view origin = rest.substr(0, nl);
  std::vector<std::string_view> lines;
  while (nl != std::string_view::npos) {
    rest.remove_prefix(nl + 1);
    nl = rest.find('\n');
    lines.push_back(rest.substr(0, nl));
  }

  sidecar::OriginsConfig cfg;
  cfg.allow_missing = allow_missing;
  bool any = false;
  for (std::string_view line : lines) {
    if (auto p = sidecar::parse_origin_pattern(line)) {
      if (p->text != line)
        broken("a pattern does not keep its text", origin, line);
      any = any || p->any;
      cfg.allowed.push_back(std::move(*p));
      stats.hit(kPatternsParsed);
    } else if (p.error.empty()) {
      broken("a refused pattern has no reason", origin, line);
    }
  }

  if (!has_origin) {
    if (sidecar::origin_allowed(cfg, std::nullopt) != allow_missing)
      broken("a request without Origin did not get allow_missing", origin, "");
    return 0;
  }

  const bool allowed = sidecar::origin_allowed(cfg, origin);
  stats.hit(allowed ? kAllowed : kRefused);
  if ((cfg.allowed.empty() || any) && !allowed)
    broken("an empty or \"*\" allowlist refused an origin", origin, "");
  if (sidecar::origin_allowed(cfg, std::string_view(upper(origin))) != allowed)
    broken("upper-casing the origin changed the answer", origin, "");
  if (allowed && !any && !cfg.allowed.empty()) {
    for (const char *tail : {"/", "/x", "?q", "#f", " ", ".", "\t"}) {
      std::string variant = std::string(origin) + tail;
      if (sidecar::origin_allowed(cfg, std::string_view(variant)))
        broken("an origin with a path, query, space or trailing dot was admitted", variant, "");
    }
    size_t sep = origin.find("://");
    if (sep != std::string_view::npos) {
      std::string userinfo =
          std::string(origin.substr(0, sep + 3)) + "u@" + std::string(origin.substr(sep + 3));
      if (sidecar::origin_allowed(cfg, std::string_view(userinfo)))
        broken("an origin with userinfo was admitted", userinfo, "");
    }
  }

  for (const auto &p : cfg.allowed) {
    if (p.any)
      continue;
    sidecar::OriginsConfig one;
    one.allowed.push_back(p);
    std::string browser = browser_origin_for(p);
    if (!sidecar::origin_allowed(one, std::string_view(browser)))
      broken("a pattern does not admit the origin it names", browser, p.text);
    if (p.any_subdomain) {
      stats.hit(kWildcardAllowed);
      // "*.example.com" is one or more labels before the domain, never the bare domain.
      std::string bare = browser;
      bare.erase(bare.find("://") + 3, 2);
      if (sidecar::origin_allowed(one, std::string_view(bare)))
        broken("a wildcard pattern admitted the bare domain", bare, p.text);
    }
  }
  return 0;
}
