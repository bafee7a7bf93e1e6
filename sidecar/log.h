// Log: one line per event, logfmt or JSON, to stderr. Fields are key/value pairs so that both
// formats come from one call: log_info("redis_connected", {{"addr", a}}).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "config.h"

namespace sidecar {

struct LogField {
  std::string_view key;
  std::string value;
  bool quoted_in_json = true; // numbers and booleans are written bare in JSON
  LogField(std::string_view k, std::string_view v) : key(k), value(v) {}
  LogField(std::string_view k, const char *v) : key(k), value(v ? v : "") {}
  LogField(std::string_view k, const std::string &v) : key(k), value(v) {}
  template <typename N, typename = std::enable_if_t<std::is_arithmetic_v<N>>>
  LogField(std::string_view k, N v) : key(k), value(std::to_string(v)), quoted_in_json(false) {}
};

void log_configure(LogConfig::Level level, LogConfig::Format format);
bool log_enabled(LogConfig::Level level);
void log_event(LogConfig::Level level, std::string_view event,
               std::initializer_list<LogField> fields);

inline void log_debug(std::string_view e, std::initializer_list<LogField> f = {}) {
  if (log_enabled(LogConfig::Level::debug))
    log_event(LogConfig::Level::debug, e, f);
}
inline void log_info(std::string_view e, std::initializer_list<LogField> f = {}) {
  log_event(LogConfig::Level::info, e, f);
}
inline void log_warn(std::string_view e, std::initializer_list<LogField> f = {}) {
  log_event(LogConfig::Level::warn, e, f);
}
inline void log_error(std::string_view e, std::initializer_list<LogField> f = {}) {
  log_event(LogConfig::Level::error, e, f);
}

// JSON string escaping, shared with the endpoints that build small JSON bodies by hand.
void json_escape_into(std::string &out, std::string_view s);

} // namespace sidecar
