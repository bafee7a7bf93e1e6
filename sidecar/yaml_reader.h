// The generic half of config loading: reading one YAML document into plain values, with every
// problem recorded as a ConfigError that names the line and the dotted key. It knows how to walk
// maps against a table of known keys (unknown keys get a did-you-mean), lists, strings, integers,
// byte sizes ("64KiB"), numbers, bools, enums and string lists. It knows no key of sidecar's own:
// which keys exist, their ranges and defaults are config.cpp's schema.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config_error.h"

namespace sidecar {

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kGiB = 1024 * kMiB;

// Levenshtein distance, for suggesting the key that was probably meant.
size_t edit_distance(std::string_view a, std::string_view b);

// A byte count is a plain integer or an integer followed by KiB, MiB or GiB ("64KiB", "1 MiB").
bool parse_bytes(std::string_view text, uint64_t &out);
// The largest whole binary unit: 65536 -> "64 KiB", 1000 -> "1000".
std::string format_bytes(uint64_t bytes);

// The line (1-based) of the first line that is neither blank, a comment nor a document marker;
// 0 when there is none.
int first_content_line(const std::string &text);
// The line (1-based) of a second YAML document's "---" marker, or 0.
int second_document_line(const std::string &text);

// What a node is, for "must be X, got Y" messages: the quoted scalar, "a list", "a map".
std::string describe(const YAML::Node &node);

// Where a value sits: its dotted key (for messages and key lines) and its line.
// The node is held by value: yaml-cpp's iterators hand out temporaries, and a Node is a handle.
struct At {
  YAML::Node node;
  std::string path;
  int line;
};

// One known key, named by its dotted path below the map being walked ("redis.url").
struct Field {
  std::string_view name;
  std::function<void(const At &)> read;
};

// Reads values out of one document. Every read_* either stores a valid value in `out` or leaves
// it untouched (the default stays) and records an error; reading goes on either way, so that one
// run reports every problem in the file.
class YamlReader {
public:
  // Errors go to `errors`; the line of every key seen goes to `key_lines` ("redis.url" -> 7).
  YamlReader(std::vector<ConfigError> &errors, std::map<std::string, int> &key_lines,
             std::string file, const EnvLookup &env);

  // Parses `text` as exactly one YAML document and hands its root to `read_root` (not called for
  // an empty document). False when the text is no readable document at all (a syntax error, a
  // second document, a stray token); that error is recorded.
  bool read_document(const std::string &text, const std::function<void(const At &)> &read_root);

  void fail(int line, std::string key, std::string reason);
  void fail(const At &at, std::string reason) { fail(at.line, at.path, std::move(reason)); }
  // The line a key was read from, or 0 when it was not in the file.
  int line_of(const std::string &key) const;
  // An environment variable; an empty one counts as unset.
  std::optional<std::string> env(const std::string &name) const;
  const std::string &file() const { return file_; }
  // Errors recorded so far, so that a caller can tell whether one item of a list was clean.
  size_t error_count() const { return errors_.size(); }

  // Walks a map against a flat table of dotted names relative to `rel`: a name equal to a key's
  // relative path reads it; a name below it makes the key a section, itself a map. A null node
  // ("redis:" alone) keeps every default.
  void walk_map(const At &at, const std::string &rel, const std::vector<Field> &fields);
  // Calls `each` for every item; false (after one error) when the node is not a list.
  template <typename Fn> bool walk_list(const At &at, Fn &&each);

  bool read_string(const At &at, std::string &out);
  bool read_nonempty(const At &at, std::string &out);
  void read_uint(const At &at, uint64_t lo, uint64_t hi, uint32_t &out);
  template <typename T> void read_bytes(const At &at, uint64_t lo, uint64_t hi, T &out) {
    if (std::optional<uint64_t> value = bytes_in(at, lo, hi))
      out = static_cast<T>(*value);
  }
  // lo_open: the value must be greater than lo, not merely equal.
  void read_double(const At &at, double lo, bool lo_open, double hi, double &out);
  void read_bool(const At &at, bool &out);
  template <typename E>
  void read_enum(const At &at, std::initializer_list<std::pair<std::string_view, E>> names, E &out);
  // A non-empty list of non-empty strings, each one of `choices` when choices are given.
  void read_strings(const At &at, std::vector<std::string> &out,
                    std::initializer_list<std::string_view> choices = {});

private:
  void unknown_key(const At &at, const std::string &rel, const std::vector<Field> &fields);
  void note_line(const std::string &path, int line) { key_lines_.emplace(path, line); }
  std::optional<uint64_t> bytes_in(const At &at, uint64_t lo, uint64_t hi);

  std::vector<ConfigError> &errors_;
  std::map<std::string, int> &key_lines_;
  std::string file_;
  const EnvLookup &env_;
};

template <typename Fn> bool YamlReader::walk_list(const At &at, Fn &&each) {
  if (!at.node.IsSequence()) {
    fail(at, "must be a list, got " + describe(at.node));
    return false;
  }
  for (size_t i = 0; i < at.node.size(); ++i) {
    const YAML::Node item = at.node[i];
    int line = item.Mark().line >= 0 ? item.Mark().line + 1 : at.line;
    std::string path = at.path + "[" + std::to_string(i) + "]";
    note_line(path, line);
    each(At{item, path, line});
  }
  return true;
}

template <typename E>
void YamlReader::read_enum(const At &at,
                           std::initializer_list<std::pair<std::string_view, E>> names, E &out) {
  std::string choices;
  for (const auto &[name, value] : names) {
    if (at.node.IsScalar() && at.node.Scalar() == name)
      return void(out = value);
    choices += (choices.empty() ? "" : "|") + std::string(name);
  }
  fail(at, "must be one of " + choices + ", got " + describe(at.node));
}

} // namespace sidecar
