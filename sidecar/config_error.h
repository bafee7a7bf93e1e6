// What config loading reports and reads besides the file: one error with its place, and the
// environment lookup (tests pass their own). Kept apart from config.h's schema and from
// yaml_reader.h so that neither the schema's users nor its errors' users pull in yaml-cpp.
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace sidecar {

struct ConfigError {
  std::string file;
  int line = 0; // 1-based; 0 when the problem has no single line (e.g. a missing file)
  std::string key;
  std::string reason;
  // "config/sidecar.yaml:14: limits.max_message_bytes: must be 1 KiB..16 MiB, got \"2x\""
  std::string to_string() const;
};

// Reads the environment; tests pass their own.
using EnvLookup = std::function<std::optional<std::string>(const std::string &)>;
EnvLookup process_env();

} // namespace sidecar
