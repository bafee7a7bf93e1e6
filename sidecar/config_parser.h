// The config Parser, shared by the two files that implement it: config.cpp (the schema: every
// key, its range and default, section by section) and config_checks.cpp (the list-valued
// sections and the rules across keys). Private to them; everyone else calls parse_config.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "config.h"
#include "yaml_reader.h"

namespace sidecar::config_parse {

constexpr uint64_t kHour = 3600000;
constexpr uint64_t kTenMinutes = 600000;

// Checks the placeholders of a channel or stream template: each "{...}" must name one of
// `allowed`, and each of `required` must appear. Empty when it passes, else the reason.
std::string check_template(std::string_view tmpl, std::initializer_list<std::string_view> allowed,
                           std::initializer_list<std::string_view> required);

class Parser : YamlReader {
public:
  Parser(ConfigResult &result, const std::string &file, const EnvLookup &env)
      : YamlReader(result.errors, result.config.key_lines, file, env), cfg_(result.config) {
    cfg_.file = file;
  }

  void run(const std::string &text) {
    if (read_document(text, [this](const At &root) { read_root(root); }))
      finish();
  }

private:
  bool read_template(const At &at, std::string &out,
                     std::initializer_list<std::string_view> allowed,
                     std::initializer_list<std::string_view> required);

  void read_root(const At &at);
  void add_server_fields(std::vector<Field> &fields);
  void add_limits_fields(std::vector<Field> &fields);
  void add_auth_fields(std::vector<Field> &fields);
  void add_edge_fields(std::vector<Field> &fields);

  // Readers for the field tables. Ranges are wide on purpose: they catch a unit mistake (seconds
  // written as milliseconds), not a choice that is merely unusual.
  std::function<void(const At &)> num(uint64_t lo, uint64_t hi, uint32_t &out) {
    return [this, lo, hi, &out](const At &a) { read_uint(a, lo, hi, out); };
  }
  template <typename T> std::function<void(const At &)> bytes(uint64_t lo, uint64_t hi, T &out) {
    return [this, lo, hi, &out](const At &a) { read_bytes(a, lo, hi, out); };
  }
  std::function<void(const At &)> small(uint8_t lo, uint8_t hi, uint8_t &out) {
    return [this, lo, hi, &out](const At &a) {
      uint32_t v = out;
      read_uint(a, lo, hi, v);
      out = static_cast<uint8_t>(v);
    };
  }
  std::function<void(const At &)> str(std::string &out) {
    return [this, &out](const At &a) { read_string(a, out); };
  }
  std::function<void(const At &)> name(std::string &out) {
    return [this, &out](const At &a) { read_nonempty(a, out); };
  }
  void read_routes(const At &at);
  void read_cluster(const At &at);
  template <class Entry, class Problem>
  void read_channel_list(const At &at, std::string_view example,
                         std::vector<Field> (*fields)(Parser &, Entry &),
                         std::vector<Problem> (*check)(const std::vector<Entry> &),
                         std::vector<Entry> &out);
  void read_history(const At &at);
  void read_presence(const At &at);
  void read_origins(const At &at);
  void read_origin_patterns(const At &at);
  void finish();
  void check_auth();
  void check_control();
  void check_key_file(const std::string &key, std::string &path);

  Config &cfg_;
};

} // namespace sidecar::config_parse
