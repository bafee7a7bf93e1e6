// Text helpers; see text.h.
#include "text.h"

#include <charconv>
#include <cstdio>
#include <ctime>

namespace sidecar {

int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

namespace {

} // namespace

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

std::string quote(std::string_view text) { return "\"" + std::string(text) + "\""; }

bool parse_u64(std::string_view text, uint64_t &out) {
  if (text.empty())
    return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

std::optional<std::string> percent_decode(std::string_view text, PercentRule rule) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '%') {
      int hi = i + 2 < text.size() ? hex_value(text[i + 1]) : -1;
      int lo = i + 2 < text.size() ? hex_value(text[i + 2]) : -1;
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
      if (rule == PercentRule::strict)
        return std::nullopt;
    } else if (c == '+' && rule == PercentRule::form) {
      c = ' ';
    }
    out.push_back(c);
  }
  return out;
}

std::string iso8601_ms(int64_t unix_ms) {
  // Floor division, so that a time before 1970 still prints a valid (if unlikely) date.
  int64_t secs = unix_ms / 1000, ms = unix_ms % 1000;
  if (ms < 0)
    secs -= 1, ms += 1000;
  auto t_secs = static_cast<time_t>(secs);
  tm t{};
  gmtime_r(&t_secs, &t);
  char buf[64];
  snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", t.tm_year + 1900, t.tm_mon + 1,
           t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, static_cast<int>(ms));
  return buf;
}

} // namespace sidecar
