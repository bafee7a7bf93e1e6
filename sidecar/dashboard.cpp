// The dashboard answer; see dashboard.h. The policy is computed once, from the page that was
// compiled in, so an edit to the page can never leave a stale hash behind.
#include "dashboard.h"

#include <optional>

#include "encoding.h"

namespace sidecar {

extern const std::string_view kDashboardHtml; // generated from dashboard.html

namespace {

// The text between the only <tag> and its </tag>, or nullopt when there is not exactly one
// (a second block would run without being allowed, and the page would break unseen).
std::optional<std::string_view> only_block(std::string_view html, std::string_view tag) {
  std::string open = "<" + std::string(tag) + ">";
  std::string close = "</" + std::string(tag) + ">";
  size_t start = html.find(open);
  if (start == std::string_view::npos)
    return std::nullopt;
  start += open.size();
  size_t end = html.find(close, start);
  if (end == std::string_view::npos)
    return std::nullopt;
  if (html.find("<" + std::string(tag), end) != std::string_view::npos)
    return std::nullopt;
  return html.substr(start, end - start);
}

std::string sha256_source(std::string_view text) {
  return "'sha256-" + base64_encode(sha256_digest(text)) + "'";
}

} // namespace

std::string dashboard_csp(std::string_view html) {
  std::optional<std::string_view> script = only_block(html, "script");
  std::optional<std::string_view> style = only_block(html, "style");
  if (!script || !style)
    return "";
  return "default-src 'none'; script-src " + sha256_source(*script) + "; style-src " +
         sha256_source(*style) +
         "; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
         "frame-ancestors 'none'";
}

HttpAnswer dashboard_answer() {
  // Computed at the first request, from bytes that never change while the process runs.
  static const std::string csp = dashboard_csp(kDashboardHtml);
  HttpAnswer a;
  if (csp.empty()) {
    // The build checks this too (dashboard_test); a page without its policy is not served.
    return json_error(500, "INTERNAL_ERROR", "the dashboard page has no valid policy");
  }
  a.content_type = "text/html; charset=utf-8";
  a.body = std::string(kDashboardHtml);
  a.headers = {{"Content-Security-Policy", csp},
               {"X-Content-Type-Options", "nosniff"},
               {"Referrer-Policy", "no-referrer"},
               {"Cache-Control", "no-store"},
               {"X-Frame-Options", "DENY"}};
  return a;
}

} // namespace sidecar
