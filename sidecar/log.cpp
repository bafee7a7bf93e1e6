// Log output; see log.h. One thread, so the level and format are plain globals.
#include "log.h"

#include <cstdio>

#include "clock.h"
#include "encoding.h"
#include "text.h"

namespace sidecar {
namespace {

LogConfig::Level g_level = LogConfig::Level::info;
LogConfig::Format g_format = LogConfig::Format::text;

const char *level_name(LogConfig::Level l) {
  switch (l) {
  case LogConfig::Level::debug:
    return "debug";
  case LogConfig::Level::info:
    return "info";
  case LogConfig::Level::warn:
    return "warn";
  case LogConfig::Level::error:
    return "error";
  }
  return "info";
}

bool needs_quotes(std::string_view v) {
  if (v.empty())
    return true;
  for (char c : v) {
    auto u = static_cast<unsigned char>(c);
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || u < 0x20 || u >= 0x7f)
      return true;
  }
  return false;
}

// A value as it goes into a line: cut to kMaxLogValueBytes (on a character boundary, so the cut
// itself adds no U+FFFD), then escaped to ASCII.
void escaped_value(std::string &out, std::string_view v) {
  std::string_view cut = utf8_truncate(v, kMaxLogValueBytes);
  json_escape_into(out, cut, true);
  if (cut.size() < v.size())
    out.append("...");
}

void logfmt_value(std::string &out, std::string_view v) {
  if (!needs_quotes(v) && v.size() <= kMaxLogValueBytes) {
    out.append(v);
    return;
  }
  out.push_back('"');
  escaped_value(out, v);
  out.push_back('"');
}

} // namespace

void log_configure(LogConfig::Level level, LogConfig::Format format) {
  g_level = level;
  g_format = format;
}

bool log_enabled(LogConfig::Level level) { return level >= g_level; }

void log_event(LogConfig::Level level, std::string_view event,
               std::initializer_list<LogField> fields) noexcept try {
  if (!log_enabled(level))
    return;
  std::string line;
  line.reserve(128);
  if (g_format == LogConfig::Format::json) {
    line.append("{\"time\":\"").append(iso8601_ms(wall_ms())).append("\",\"level\":\"");
    line.append(level_name(level)).append("\",\"event\":\"");
    escaped_value(line, event);
    line.push_back('"');
    for (const auto &f : fields) {
      line.append(",\"");
      escaped_value(line, f.key);
      line.append("\":");
      if (f.quoted_in_json) {
        line.push_back('"');
        escaped_value(line, f.value);
        line.push_back('"');
      } else {
        line.append(f.value);
      }
    }
    line.append("}\n");
  } else {
    line.append("time=").append(iso8601_ms(wall_ms())).append(" level=").append(level_name(level));
    line.append(" event=");
    logfmt_value(line, event);
    for (const auto &f : fields) {
      line.push_back(' ');
      line.append(f.key).push_back('=');
      logfmt_value(line, f.value);
    }
    line.push_back('\n');
  }
  fwrite(line.data(), 1, line.size(), stderr);
} catch (...) {
  // Out of memory while building the line: losing one line beats losing the process.
}

} // namespace sidecar
