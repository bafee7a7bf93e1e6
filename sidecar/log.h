// Log: one line per event, logfmt or JSON, to stderr. Fields are key/value pairs so that both
// formats come from one call: log_info("redis_connected", {{"addr", a}}).
//
// Values may hold anything a client sent (an address, a user, a reason), so every line is
// printable ASCII: quotes, backslashes, control bytes and all non-ASCII are escaped, invalid
// UTF-8 becomes U+FFFD and each value is cut at kMaxLogValueBytes. Nobody can end a line early,
// forge another, or write to the operator's terminal.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "config.h"
#include "json_text.h"

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

constexpr size_t kMaxLogValueBytes = 1024;

void log_configure(LogConfig::Level level, LogConfig::Format format);
bool log_enabled(LogConfig::Level level);
// Never throws: a line that cannot be built (out of memory) is dropped.
void log_event(LogConfig::Level level, std::string_view event,
               std::initializer_list<LogField> fields) noexcept;

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

} // namespace sidecar
