// Log output; see log.h. One thread, so the level and format are plain globals.
#include "log.h"

#include <cstdio>
#include <ctime>
#include <sys/time.h>

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

std::string timestamp() {
  timeval tv{};
  gettimeofday(&tv, nullptr);
  tm t{};
  gmtime_r(&tv.tv_sec, &t);
  char buf[64];
  snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", t.tm_year + 1900, t.tm_mon + 1,
           t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, static_cast<int>(tv.tv_usec / 1000));
  return buf;
}

bool needs_quotes(std::string_view v) {
  if (v.empty())
    return true;
  for (char c : v) {
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || static_cast<unsigned char>(c) < 0x20)
      return true;
  }
  return false;
}

void logfmt_value(std::string &out, std::string_view v) {
  if (!needs_quotes(v)) {
    out.append(v);
    return;
  }
  out.push_back('"');
  json_escape_into(out, v);
  out.push_back('"');
}

} // namespace

void json_escape_into(std::string &out, std::string_view s) {
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    switch (c) {
    case '"':
      out.append("\\\"");
      break;
    case '\\':
      out.append("\\\\");
      break;
    case '\n':
      out.append("\\n");
      break;
    case '\r':
      out.append("\\r");
      break;
    case '\t':
      out.append("\\t");
      break;
    default:
      if (u < 0x20) {
        char buf[8];
        snprintf(buf, sizeof buf, "\\u%04x", u);
        out.append(buf);
      } else {
        out.push_back(c);
      }
    }
  }
}

void log_configure(LogConfig::Level level, LogConfig::Format format) {
  g_level = level;
  g_format = format;
}

bool log_enabled(LogConfig::Level level) { return level >= g_level; }

void log_event(LogConfig::Level level, std::string_view event,
               std::initializer_list<LogField> fields) {
  if (!log_enabled(level))
    return;
  std::string line;
  line.reserve(128);
  if (g_format == LogConfig::Format::json) {
    line.append("{\"time\":\"").append(timestamp()).append("\",\"level\":\"");
    line.append(level_name(level)).append("\",\"event\":\"");
    json_escape_into(line, event);
    line.push_back('"');
    for (const auto &f : fields) {
      line.append(",\"");
      json_escape_into(line, f.key);
      line.append("\":");
      if (f.quoted_in_json) {
        line.push_back('"');
        json_escape_into(line, f.value);
        line.push_back('"');
      } else {
        line.append(f.value);
      }
    }
    line.append("}\n");
  } else {
    line.append("time=").append(timestamp()).append(" level=").append(level_name(level));
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
}

} // namespace sidecar
