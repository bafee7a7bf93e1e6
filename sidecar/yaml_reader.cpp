// The generic YAML reader; see yaml_reader.h. Nothing here throws to the caller: yaml-cpp's
// exceptions become ConfigErrors, and the readers avoid yaml-cpp's conversions that throw.
#include "yaml_reader.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "text.h"

namespace sidecar {

std::string ConfigError::to_string() const {
  std::string out = file;
  if (line > 0)
    out += ":" + std::to_string(line);
  out += ": ";
  if (!key.empty())
    out += key + ": ";
  return out + reason;
}

EnvLookup process_env() {
  return [](const std::string &name) -> std::optional<std::string> {
    const char *value = std::getenv(name.c_str());
    if (value == nullptr)
      return std::nullopt;
    return std::string(value);
  };
}

std::string describe(const YAML::Node &node) {
  switch (node.Type()) {
  case YAML::NodeType::Scalar:
    return quote(node.Scalar());
  case YAML::NodeType::Sequence:
    return "a list";
  case YAML::NodeType::Map:
    return "a map";
  default:
    return "nothing";
  }
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j)
    row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// Decimal units ("1MB") are refused on purpose: half of the readers would take them as 1000 and
// half as 1024.
bool parse_bytes(std::string_view text, uint64_t &out) {
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9')
    ++digits;
  uint64_t count = 0;
  if (!parse_u64(text.substr(0, digits), count))
    return false;
  std::string_view unit = text.substr(digits);
  while (!unit.empty() && unit.front() == ' ')
    unit.remove_prefix(1);
  uint64_t scale = 1;
  if (unit == "KiB")
    scale = kKiB;
  else if (unit == "MiB")
    scale = kMiB;
  else if (unit == "GiB")
    scale = kGiB;
  else if (!unit.empty())
    return false;
  if (count > UINT64_MAX / scale)
    return false;
  out = count * scale;
  return true;
}

std::string format_bytes(uint64_t bytes) {
  if (bytes != 0 && bytes % kGiB == 0)
    return std::to_string(bytes / kGiB) + " GiB";
  if (bytes != 0 && bytes % kMiB == 0)
    return std::to_string(bytes / kMiB) + " MiB";
  if (bytes != 0 && bytes % kKiB == 0)
    return std::to_string(bytes / kKiB) + " KiB";
  return std::to_string(bytes);
}

int first_content_line(const std::string &text) {
  int line = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    std::string_view l(text.data() + pos, (eol == std::string::npos ? text.size() : eol) - pos);
    ++line;
    size_t first = l.find_first_not_of(" \t\r");
    if (first != std::string_view::npos && l[first] != '#' && l.substr(0, 3) != "---" &&
        l.substr(0, 3) != "...")
      return line;
    if (eol == std::string::npos)
      break;
    pos = eol + 1;
  }
  return 0;
}

// A marker at column 0 after any content starts a new document (block scalar content is always
// indented, so this cannot be inside a value). This is a text scan on purpose: yaml-cpp 0.7's
// multi-document parsing can spin on a stray token such as a line starting with ",".
int second_document_line(const std::string &text) {
  bool content = false;
  int line = 0;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t eol = text.find('\n', pos);
    std::string_view l(text.data() + pos, (eol == std::string::npos ? text.size() : eol) - pos);
    ++line;
    bool marker =
        l.substr(0, 3) == "---" && (l.size() == 3 || l[3] == ' ' || l[3] == '\t' || l[3] == '\r');
    if (marker && content)
      return line;
    size_t first = l.find_first_not_of(" \t\r");
    if (!marker && first != std::string_view::npos && l[first] != '#' && l.substr(0, 3) != "...")
      content = true;
    if (eol == std::string::npos)
      break;
    pos = eol + 1;
  }
  return 0;
}

YamlReader::YamlReader(std::vector<ConfigError> &errors, std::map<std::string, int> &key_lines,
                       std::string file, const EnvLookup &env)
    : errors_(errors), key_lines_(key_lines), file_(std::move(file)), env_(env) {}

void YamlReader::fail(int line, std::string key, std::string reason) {
  errors_.push_back(ConfigError{file_, line, std::move(key), std::move(reason)});
}

int YamlReader::line_of(const std::string &key) const {
  auto it = key_lines_.find(key);
  return it == key_lines_.end() ? 0 : it->second;
}

std::optional<std::string> YamlReader::env(const std::string &name) const {
  if (!env_)
    return std::nullopt;
  std::optional<std::string> value = env_(name);
  // An empty variable counts as unset: "FOO= sidecar" is how shells clear things.
  if (value && value->empty())
    return std::nullopt;
  return value;
}

bool YamlReader::read_document(const std::string &text,
                               const std::function<void(const At &)> &read_root) {
  try {
    if (int second = second_document_line(text); second != 0) {
      fail(second, "", "only one YAML document is allowed");
      return false;
    }
    // An empty text or one of only comments is no document: every default stays in place.
    YAML::Node root = YAML::Load(text);
    if (root.IsDefined() && !root.IsNull()) {
      read_root(At{root, "", 1});
    } else if (int line = first_content_line(text); line != 0) {
      // yaml-cpp 0.7 reads a document that starts with a stray "," as empty; that must not pass
      // as "all defaults".
      fail(line, "", "invalid YAML: unexpected character");
      return false;
    }
  } catch (const YAML::Exception &e) {
    // Syntax errors land here; our readers avoid the conversions that throw.
    fail(e.mark.line >= 0 ? e.mark.line + 1 : 0, "", "invalid YAML: " + e.msg);
    return false;
  }
  return true;
}

void YamlReader::walk_map(const At &at, const std::string &rel, const std::vector<Field> &fields) {
  if (at.node.IsNull())
    return;
  if (!at.node.IsMap())
    return fail(
        at.line, at.path,
        (at.path.empty() ? "the file must be a map of settings, got " : "must be a map, got ") +
            describe(at.node));
  std::map<std::string, int> seen;
  for (auto it = at.node.begin(); it != at.node.end(); ++it) {
    int line = it->first.Mark().line + 1;
    if (!it->first.IsScalar()) {
      fail(line, at.path, "keys must be plain names, got " + describe(it->first));
      continue;
    }
    const std::string &name = it->first.Scalar();
    At child{it->second, at.path.empty() ? name : at.path + "." + name, line};
    if (auto [prev, fresh] = seen.emplace(name, line); !fresh) {
      fail(child, "duplicate key (first at line " + std::to_string(prev->second) + ")");
      continue;
    }
    std::string key = rel.empty() ? name : rel + "." + name;
    auto exact = std::find_if(fields.begin(), fields.end(), [&](auto &f) { return f.name == key; });
    bool section = std::any_of(fields.begin(), fields.end(),
                               [&](auto &f) { return f.name.starts_with(key + "."); });
    if (exact == fields.end() && !section) {
      unknown_key(child, rel, fields);
      continue;
    }
    note_line(child.path, line);
    if (exact != fields.end())
      exact->read(child);
    else
      walk_map(child, key, fields);
  }
}

void YamlReader::unknown_key(const At &at, const std::string &rel,
                             const std::vector<Field> &fields) {
  std::string_view name = std::string_view(at.path).substr(at.path.rfind('.') + 1);
  std::string prefix = rel.empty() ? "" : rel + ".";
  size_t best = SIZE_MAX;
  std::string_view suggestion;
  for (const Field &f : fields) {
    if (!f.name.starts_with(prefix))
      continue;
    std::string_view sibling = f.name.substr(prefix.size());
    sibling = sibling.substr(0, sibling.find('.'));
    if (size_t d = edit_distance(name, sibling); d < best)
      best = d, suggestion = sibling;
  }
  std::string reason = "unknown key";
  if (best <= std::max<size_t>(2, name.size() / 3))
    return fail(at, reason + "; did you mean " + quote(suggestion) + "?");
  // A known key written in the wrong section ("heartbeat_ms" at the top) is a common slip.
  for (const Field &f : fields)
    if (f.name.ends_with("." + std::string(name)))
      return fail(at, reason + "; did you mean " + quote(f.name) + "?");
  fail(at, reason);
}

bool YamlReader::read_string(const At &at, std::string &out) {
  if (!at.node.IsNull() && !at.node.IsScalar()) {
    fail(at, "must be a string, got " + describe(at.node));
    return false;
  }
  out = at.node.IsNull() ? "" : at.node.Scalar(); // "secret:" alone is an empty string.
  return true;
}

bool YamlReader::read_nonempty(const At &at, std::string &out) {
  std::string value;
  if (!read_string(at, value))
    return false;
  if (value.empty()) {
    fail(at, "must not be empty");
    return false;
  }
  out = std::move(value);
  return true;
}

void YamlReader::read_uint(const At &at, uint64_t lo, uint64_t hi, uint32_t &out) {
  std::string range = std::to_string(lo) + ".." + std::to_string(hi);
  const std::string text = at.node.IsScalar() ? at.node.Scalar() : "";
  uint64_t value = 0;
  bool negative = text.starts_with("-") && parse_u64(std::string_view(text).substr(1), value);
  if (!negative && !parse_u64(text, value))
    fail(at, "must be an integer in " + range + ", got " + describe(at.node));
  else if (negative || value < lo || value > hi)
    fail(at, "must be " + range + ", got " + text);
  else
    out = static_cast<uint32_t>(value);
}

std::optional<uint64_t> YamlReader::bytes_in(const At &at, uint64_t lo, uint64_t hi) {
  uint64_t value = 0;
  if (!at.node.IsScalar() || !parse_bytes(at.node.Scalar(), value))
    fail(at, "must be a byte count like 65536 or \"64KiB\", got " + describe(at.node));
  else if (value < lo || value > hi)
    fail(at, "must be " + format_bytes(lo) + ".." + format_bytes(hi) + ", got " +
                 quote(at.node.Scalar()));
  else
    return value;
  return std::nullopt;
}

void YamlReader::read_double(const At &at, double lo, bool lo_open, double hi, double &out) {
  std::ostringstream range;
  range.precision(10); // "1000000", not "1e+06"
  range << (lo_open ? "greater than " : "at least ") << lo << " and at most " << hi;
  double value = 0;
  const std::string text = at.node.IsScalar() ? at.node.Scalar() : "";
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() ||
      !std::isfinite(value))
    fail(at, "must be a number " + range.str() + ", got " + describe(at.node));
  else if (value < lo || (lo_open && value <= lo) || value > hi)
    fail(at, "must be " + range.str() + ", got " + text);
  else
    out = value;
}

void YamlReader::read_bool(const At &at, bool &out) {
  std::string text = at.node.IsScalar() ? at.node.Scalar() : "";
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (text == "true" || text == "yes" || text == "on")
    out = true;
  else if (text == "false" || text == "no" || text == "off")
    out = false;
  else
    fail(at, "must be true or false, got " + describe(at.node));
}

void YamlReader::read_strings(const At &at, std::vector<std::string> &out,
                              std::initializer_list<std::string_view> choices) {
  std::string names;
  for (std::string_view c : choices)
    names += (names.empty() ? "" : "|") + std::string(c);
  std::vector<std::string> items;
  bool ok = true;
  bool is_list = walk_list(at, [&](const At &item) {
    std::string value;
    if (!read_nonempty(item, value))
      ok = false;
    else if (!names.empty() && std::find(choices.begin(), choices.end(), value) == choices.end())
      fail(item, "must be one of " + names + ", got " + quote(value)), ok = false;
    else
      items.push_back(std::move(value));
  });
  ok = ok && is_list;
  if (ok && items.empty())
    fail(at, "must not be an empty list"), ok = false;
  if (ok)
    out = std::move(items);
}

} // namespace sidecar
