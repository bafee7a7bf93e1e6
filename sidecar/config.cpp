// Config loading: YAML text -> Config, with every check and every message about a bad setting.
// Nothing here throws to the caller: yaml-cpp's exceptions and every rule we check become
// ConfigErrors that name the file, the line, the dotted key and the reason, all of them at once.
#include "config.h"

#include "client_ip.h"

#include <arpa/inet.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

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

namespace {

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kGiB = 1024 * kMiB;
// A config file is a page of settings; anything this large is a mistake (a binary, a log file).
constexpr std::uintmax_t kMaxConfigFileBytes = 1 * kMiB;

std::string quote(std::string_view text) { return "\"" + std::string(text) + "\""; }

// What a node is, for "must be X, got Y" messages.
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

// A byte count is a plain integer or an integer followed by KiB, MiB or GiB. Decimal units
// ("1MB") are refused on purpose: half of the readers would take them as 1000 and half as 1024.
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

// Checks the placeholders of a channel or stream template: each "{...}" must name one of
// `allowed`, and each of `required` must appear.
std::string check_template(std::string_view tmpl, std::initializer_list<std::string_view> allowed,
                           std::initializer_list<std::string_view> required) {
  for (std::string_view need : required) {
    std::string placeholder = "{" + std::string(need) + "}";
    if (tmpl.find(placeholder) == std::string_view::npos)
      return "must contain " + quote(placeholder) + ", got " + quote(tmpl);
  }
  for (size_t open = tmpl.find('{'); open != std::string_view::npos;
       open = tmpl.find('{', open + 1)) {
    size_t close = tmpl.find('}', open);
    std::string_view name = close == std::string_view::npos
                                ? std::string_view{}
                                : tmpl.substr(open + 1, close - open - 1);
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end())
      return "unknown placeholder in " + quote(tmpl) + "; only {org} and {user} are replaced";
  }
  if (tmpl.find('}') != std::string_view::npos &&
      std::count(tmpl.begin(), tmpl.end(), '{') != std::count(tmpl.begin(), tmpl.end(), '}'))
    return "unbalanced braces in " + quote(tmpl);
  return {};
}

// The line (1-based) of the first line that is neither blank, a comment nor a document marker.
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

// The line (1-based) of a second YAML document's "---" marker, or 0. A marker at column 0 after
// any content starts a new document (block scalar content is always indented, so this cannot be
// inside a value). This is a text scan on purpose: yaml-cpp 0.7's multi-document parsing can
// spin on a stray token such as a line starting with ",".
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

// Where a value sits: its dotted key (for messages and key_lines) and its line.
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

class Parser {
public:
  Parser(ConfigResult &result, const std::string &file, const EnvLookup &env)
      : result_(result), cfg_(result.config), file_(file), env_(env) {
    cfg_.file = file;
  }

  void run(const std::string &text);

private:
  void fail(int line, std::string key, std::string reason) {
    result_.errors.push_back(ConfigError{file_, line, std::move(key), std::move(reason)});
  }
  void fail(const At &at, std::string reason) { fail(at.line, at.path, std::move(reason)); }
  int line_of(const std::string &key) const {
    auto it = cfg_.key_lines.find(key);
    return it == cfg_.key_lines.end() ? 0 : it->second;
  }
  std::optional<std::string> env(const std::string &name) const;

  void walk_map(const At &at, const std::string &rel, const std::vector<Field> &fields);
  void unknown_key(const At &at, const std::string &rel, const std::vector<Field> &fields);
  template <typename Fn> bool walk_list(const At &at, Fn &&each);

  bool read_string(const At &at, std::string &out);
  bool read_nonempty(const At &at, std::string &out);
  void read_uint(const At &at, uint64_t lo, uint64_t hi, uint32_t &out);
  template <typename T> void read_bytes(const At &at, uint64_t lo, uint64_t hi, T &out);
  void read_double(const At &at, double lo, bool lo_open, double hi, double &out);
  void read_bool(const At &at, bool &out);
  template <typename E>
  void read_enum(const At &at, std::initializer_list<std::pair<std::string_view, E>> names, E &out);
  void read_strings(const At &at, std::vector<std::string> &out,
                    std::initializer_list<std::string_view> choices = {});
  bool read_template(const At &at, std::string &out,
                     std::initializer_list<std::string_view> allowed,
                     std::initializer_list<std::string_view> required);

  void read_root(const At &at);
  void read_routes(const At &at);
  void read_origins(const At &at);
  void read_origin_patterns(const At &at);
  void finish();
  void check_auth();
  void check_key_file(const std::string &key, std::string &path);

  ConfigResult &result_;
  Config &cfg_;
  std::string file_;
  const EnvLookup &env_;
};

std::optional<std::string> Parser::env(const std::string &name) const {
  if (!env_)
    return std::nullopt;
  std::optional<std::string> value = env_(name);
  // An empty variable counts as unset: "FOO= sidecar" is how shells clear things.
  if (value && value->empty())
    return std::nullopt;
  return value;
}

void Parser::run(const std::string &text) {
  try {
    if (int second = second_document_line(text); second != 0)
      return fail(second, "", "only one YAML document is allowed");
    // An empty text or one of only comments is no document: every default stays in place.
    YAML::Node root = YAML::Load(text);
    if (root.IsDefined() && !root.IsNull()) {
      read_root(At{root, "", 1});
    } else if (int line = first_content_line(text); line != 0) {
      // yaml-cpp 0.7 reads a document that starts with a stray "," as empty; that must not pass
      // as "all defaults".
      return fail(line, "", "invalid YAML: unexpected character");
    }
  } catch (const YAML::Exception &e) {
    // Syntax errors land here; our readers avoid the conversions that throw.
    fail(e.mark.line >= 0 ? e.mark.line + 1 : 0, "", "invalid YAML: " + e.msg);
    return;
  }
  finish();
}

// Walks a map against a flat table of dotted names relative to `rel`: a name equal to a key's
// relative path reads it; a name below it makes the key a section, itself a map.
void Parser::walk_map(const At &at, const std::string &rel, const std::vector<Field> &fields) {
  if (at.node.IsNull())
    return; // "redis:" with nothing under it keeps the defaults.
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
    cfg_.key_lines.emplace(child.path, line);
    if (exact != fields.end())
      exact->read(child);
    else
      walk_map(child, key, fields);
  }
}

void Parser::unknown_key(const At &at, const std::string &rel, const std::vector<Field> &fields) {
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

// Calls `each` for every item; false (after one error) when the node is not a list.
template <typename Fn> bool Parser::walk_list(const At &at, Fn &&each) {
  if (!at.node.IsSequence()) {
    fail(at, "must be a list, got " + describe(at.node));
    return false;
  }
  for (size_t i = 0; i < at.node.size(); ++i) {
    const YAML::Node item = at.node[i];
    int line = item.Mark().line >= 0 ? item.Mark().line + 1 : at.line;
    std::string path = at.path + "[" + std::to_string(i) + "]";
    cfg_.key_lines.emplace(path, line);
    each(At{item, path, line});
  }
  return true;
}

bool Parser::read_string(const At &at, std::string &out) {
  if (!at.node.IsNull() && !at.node.IsScalar()) {
    fail(at, "must be a string, got " + describe(at.node));
    return false;
  }
  out = at.node.IsNull() ? "" : at.node.Scalar(); // "secret:" alone is an empty string.
  return true;
}

bool Parser::read_nonempty(const At &at, std::string &out) {
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

void Parser::read_uint(const At &at, uint64_t lo, uint64_t hi, uint32_t &out) {
  std::string range = std::to_string(lo) + ".." + std::to_string(hi);
  const std::string text = at.node.IsScalar() ? at.node.Scalar() : "";
  uint64_t value = 0;
  bool negative = text.starts_with("-") && parse_u64(text.substr(1), value);
  if (!negative && !parse_u64(text, value))
    fail(at, "must be an integer in " + range + ", got " + describe(at.node));
  else if (negative || value < lo || value > hi)
    fail(at, "must be " + range + ", got " + text);
  else
    out = static_cast<uint32_t>(value);
}

template <typename T> void Parser::read_bytes(const At &at, uint64_t lo, uint64_t hi, T &out) {
  uint64_t value = 0;
  if (!at.node.IsScalar() || !parse_bytes(at.node.Scalar(), value))
    fail(at, "must be a byte count like 65536 or \"64KiB\", got " + describe(at.node));
  else if (value < lo || value > hi)
    fail(at, "must be " + format_bytes(lo) + ".." + format_bytes(hi) + ", got " +
                 quote(at.node.Scalar()));
  else
    out = static_cast<T>(value);
}

void Parser::read_double(const At &at, double lo, bool lo_open, double hi, double &out) {
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

void Parser::read_bool(const At &at, bool &out) {
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

template <typename E>
void Parser::read_enum(const At &at, std::initializer_list<std::pair<std::string_view, E>> names,
                       E &out) {
  std::string choices;
  for (const auto &[name, value] : names) {
    if (at.node.IsScalar() && at.node.Scalar() == name)
      return void(out = value);
    choices += (choices.empty() ? "" : "|") + std::string(name);
  }
  fail(at, "must be one of " + choices + ", got " + describe(at.node));
}

void Parser::read_strings(const At &at, std::vector<std::string> &out,
                          std::initializer_list<std::string_view> choices) {
  std::vector<std::string> items;
  bool ok = true;
  bool is_list = walk_list(at, [&](const At &item) {
    std::string value;
    std::string names;
    for (std::string_view c : choices)
      names += (names.empty() ? "" : "|") + std::string(c);
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

bool Parser::read_template(const At &at, std::string &out,
                           std::initializer_list<std::string_view> allowed,
                           std::initializer_list<std::string_view> required) {
  std::string value;
  if (!read_string(at, value))
    return false;
  if (std::string why = check_template(value, allowed, required); !why.empty()) {
    fail(at, why);
    return false;
  }
  out = std::move(value);
  return true;
}

void Parser::read_root(const At &at) {
  Config &c = cfg_;
  AuthConfig &auth = c.auth;
  LimitsConfig &l = c.limits;
  // Ranges are wide on purpose: they catch a unit mistake (seconds written as milliseconds), not
  // a choice that is merely unusual.
  auto num = [this](uint64_t lo, uint64_t hi, uint32_t &out) {
    return [this, lo, hi, &out](const At &a) { read_uint(a, lo, hi, out); };
  };
  auto bytes = [this](uint64_t lo, uint64_t hi, auto &out) {
    return [this, lo, hi, &out](const At &a) { read_bytes(a, lo, hi, out); };
  };
  auto str = [this](std::string &out) {
    return [this, &out](const At &a) { read_string(a, out); };
  };
  auto name = [this](std::string &out) {
    return [this, &out](const At &a) { read_nonempty(a, out); };
  };
  constexpr uint64_t kHour = 3600000;
  constexpr uint64_t kTenMinutes = 600000;
  using Level = LogConfig::Level;
  using Format = LogConfig::Format;
  using Mode = AuthConfig::Mode;
  using Expiry = AuthConfig::Expiry;
  std::vector<Field> fields = {
      {"trusted_proxies",
       [this, &c](const At &a) {
         std::vector<std::string> items;
         bool ok = walk_list(a, [&](const At &item) {
           std::string value, reason;
           if (!read_nonempty(item, value))
             return;
           if (TrustedProxies::valid_pattern(value, reason))
             items.push_back(std::move(value));
           else
             fail(item, reason);
         });
         if (ok)
           c.trusted_proxies = std::move(items);
       }},
      {"listen",
       [this, &c](const At &a) {
         std::string reason;
         if (read_string(a, c.listen) && !parse_host_port(c.listen, c.listen_addr, reason))
           fail(a, reason);
       }},
      {"redis.url",
       [this, &c](const At &a) {
         std::string url, reason;
         if (read_string(a, url) && !parse_redis_url(url, c.redis, reason))
           fail(a, reason);
       }},
      {"redis.connect_timeout_ms", num(10, kTenMinutes, c.redis.connect_timeout_ms)},
      {"redis.reconnect_initial_ms", num(1, kTenMinutes, c.redis.reconnect_initial_ms)},
      {"redis.reconnect_max_ms", num(1, kHour, c.redis.reconnect_max_ms)},
      {"redis.ping_interval_ms", num(100, kTenMinutes, c.redis.ping_interval_ms)},
      {"redis.reply_timeout_ms", num(100, kTenMinutes, c.redis.reply_timeout_ms)},
      {"routes", [this](const At &a) { read_routes(a); }},
      {"channels.user",
       [this, &c](const At &a) {
         read_template(a, c.channels.user, {"org", "user"}, {"org", "user"});
       }},
      // Every session joins the one broadcast channel, so it cannot depend on org or user.
      {"channels.broadcast",
       [this, &c](const At &a) { read_template(a, c.channels.broadcast, {}, {}); }},
      {"websocket.heartbeat_ms", num(100, kHour, c.websocket.heartbeat_ms)},
      {"websocket.pong_timeout_ms", num(100, kTenMinutes, c.websocket.pong_timeout_ms)},
      {"websocket.handshake_timeout_ms", num(100, kTenMinutes, c.websocket.handshake_timeout_ms)},
      {"websocket.idle_timeout_ms", num(0, 24 * kHour, c.websocket.idle_timeout_ms)},
      {"websocket.close_timeout_ms", num(100, kTenMinutes, c.websocket.close_timeout_ms)},
      {"limits.max_message_bytes", bytes(kKiB, 16 * kMiB, l.max_message_bytes)},
      {"limits.max_connections", num(1, 10000000, l.max_connections)},
      {"limits.max_connections_per_org", num(0, 10000000, l.max_connections_per_org)},
      {"limits.max_connections_per_user", num(0, 10000000, l.max_connections_per_user)},
      {"limits.max_connections_per_ip", num(0, 10000000, l.max_connections_per_ip)},
      {"limits.handshakes_per_ip_per_s", num(0, 1000000, l.handshakes_per_ip_per_s)},
      {"limits.inbound_rate",
       [this, &l](const At &a) { read_double(a, 0, true, 1e6, l.inbound_rate); }},
      {"limits.inbound_burst",
       [this, &l](const At &a) { read_double(a, 1, false, 1e6, l.inbound_burst); }},
      {"limits.inbound_violations_before_close",
       num(1, 1000000, l.inbound_violations_before_close)},
      {"limits.max_outbound_bytes", bytes(64 * kKiB, kGiB, l.max_outbound_bytes)},
      {"limits.slow_consumer_close_code",
       [this, &l](const At &a) {
         read_enum<uint16_t>(a, {{"1008", 1008}, {"1013", 1013}}, l.slow_consumer_close_code);
       }},
      {"limits.max_header_bytes", bytes(kKiB, kMiB, l.max_header_bytes)},
      {"limits.max_json_depth", num(1, 256, l.max_json_depth)},
      {"log.level",
       [this, &c](const At &a) {
         read_enum<Level>(a,
                          {{"debug", Level::debug},
                           {"info", Level::info},
                           {"warn", Level::warn},
                           {"error", Level::error}},
                          c.log.level);
       }},
      {"log.format",
       [this, &c](const At &a) {
         read_enum<Format>(a, {{"text", Format::text}, {"json", Format::json}}, c.log.format);
       }},
      {"log.summary_interval_s", num(0, 86400, c.log.summary_interval_s)},
      {"auth.mode",
       [this, &auth](const At &a) {
         read_enum<Mode>(a, {{"none", Mode::none}, {"jwt", Mode::jwt}}, auth.mode);
       }},
      {"auth.jwt.algorithms",
       [this, &auth](const At &a) {
         read_strings(a, auth.jwt.algorithms,
                      {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384"});
       }},
      {"auth.jwt.secret", str(auth.jwt.secret)},
      {"auth.jwt.secret_env", str(auth.jwt.secret_env)},
      {"auth.jwt.public_key_file", str(auth.jwt.public_key_file)},
      {"auth.jwt.jwks_file", str(auth.jwt.jwks_file)},
      {"auth.jwt.issuer", str(auth.jwt.issuer)},
      {"auth.jwt.audience", str(auth.jwt.audience)},
      {"auth.jwt.leeway_s", num(0, 3600, auth.jwt.leeway_s)},
      {"auth.jwt.max_token_bytes", bytes(256, 64 * kKiB, auth.jwt.max_token_bytes)},
      {"auth.org_claim",
       [this, &auth](const At &a) {
         std::string one; // One claim name is common enough to be written without a list.
         if (!a.node.IsScalar() && !a.node.IsNull())
           read_strings(a, auth.org_claim);
         else if (read_nonempty(a, one))
           auth.org_claim = {one};
       }},
      {"auth.user_claim", name(auth.user_claim)},
      {"auth.token_sources",
       [this, &auth](const At &a) {
         read_strings(a, auth.token_sources, {"query", "header", "subprotocol", "cookie"});
       }},
      {"auth.query_param", name(auth.query_param)},
      {"auth.cookie_name",
       [this, &auth](const At &a) {
         std::string cookie;
         if (!read_nonempty(a, cookie))
           return;
         if (cookie.find_first_of(" \t;=,\"") != std::string::npos)
           fail(a, "must be a cookie name without spaces, ';', '=', ',' or quotes, got " +
                       quote(cookie));
         else
           auth.cookie_name = cookie;
       }},
      {"auth.on_expiry",
       [this, &auth](const At &a) {
         read_enum<Expiry>(a, {{"close", Expiry::close}, {"keep", Expiry::keep}}, auth.on_expiry);
       }},
      {"auth.expiry_warning_s", num(0, 86400, auth.expiry_warning_s)},
      {"origins", [this](const At &a) { read_origins(a); }},
      {"inbound.stream",
       [this, &c](const At &a) { read_template(a, c.inbound.stream, {"org"}, {}); }},
      {"inbound.maxlen", num(1, 1000000000, c.inbound.maxlen)},
      {"admin.listen",
       [this, &c](const At &a) {
         std::string reason;
         HostPort addr;
         if (!read_string(a, c.admin.listen) || c.admin.listen.empty())
           return;
         if (parse_host_port(c.admin.listen, addr, reason))
           c.admin.listen_addr = addr;
         else
           fail(a, reason);
       }},
      {"admin.token", str(c.admin.token)},
      {"shutdown.drain_timeout_ms", num(0, kTenMinutes, c.shutdown.drain_timeout_ms)},
      {"shutdown.reconnect_after_ms", num(0, kTenMinutes, c.shutdown.reconnect_after_ms)},
      {"shutdown.reconnect_jitter_ms", num(0, kTenMinutes, c.shutdown.reconnect_jitter_ms)},
  };
  walk_map(at, "", fields);
}

void Parser::read_routes(const At &at) {
  std::vector<Route> routes;
  std::map<std::string, int> paths; // path -> line of its first use
  bool ok = true;
  bool is_list = walk_list(at, [&](const At &item) {
    Route route;
    bool has_path = false;
    size_t errors = result_.errors.size();
    walk_map(
        item, "",
        {{"path",
          [&](const At &v) {
            std::string reason;
            has_path = true;
            if (!read_string(v, route.path))
              return;
            if (!parse_route_template(route.path, route, reason))
              fail(v, reason);
            else if (auto [prev, fresh] = paths.emplace(route.path, v.line); !fresh)
              fail(v, "duplicate route path (first at line " + std::to_string(prev->second) + ")");
          }},
         {"channel", [&](const At &v) { read_template(v, route.channel, {"org"}, {"org"}); }}});
    if (item.node.IsMap() && !has_path)
      fail(item, "missing \"path\", like path: \"/ws/{org}\"");
    ok = ok && errors == result_.errors.size();
    routes.push_back(std::move(route));
  });
  ok = ok && is_list;
  if (ok && routes.empty())
    fail(at, "must list at least one route, like - {path: \"/ws/{org}\", channel: \"org:{org}\"}");
  else if (ok)
    cfg_.routes = std::move(routes);
}

// Origins are a list of patterns, or a map that also says whether a missing Origin is allowed.
void Parser::read_origins(const At &at) {
  cfg_.origins.allowed.clear();
  if (at.node.IsSequence())
    return read_origin_patterns(at);
  if (at.node.IsNull())
    return;
  if (!at.node.IsMap())
    return fail(at, "must be a list of origin patterns or a map with \"allowed\", got " +
                        describe(at.node));
  walk_map(at, "",
           {{"allowed",
             [this](const At &v) {
               if (!v.node.IsNull())
                 read_origin_patterns(v);
             }},
            {"allow_missing", [this](const At &v) { read_bool(v, cfg_.origins.allow_missing); }}});
}

void Parser::read_origin_patterns(const At &at) {
  walk_list(at, [&](const At &item) {
    std::string pattern;
    if (!read_nonempty(item, pattern))
      return;
    if (pattern.find_first_of(" \t,") != std::string::npos)
      return fail(item, "must be one origin pattern without spaces or commas, got " +
                            quote(pattern));
    std::string reason;
    if (auto parsed = parse_origin_pattern(pattern, reason))
      cfg_.origins.allowed.push_back(std::move(*parsed));
    else
      fail(item, reason + ", got " + quote(pattern));
  });
}

void Parser::check_key_file(const std::string &key, std::string &path) {
  if (path.empty())
    return;
  namespace fs = std::filesystem;
  fs::path resolved(path);
  if (resolved.is_relative())
    resolved = fs::path(file_).parent_path() / resolved;
  path = resolved.string();
  std::error_code ec;
  if (!fs::exists(resolved, ec))
    return fail(line_of(key), key, quote(path) + " does not exist");
  if (fs::is_directory(resolved, ec))
    return fail(line_of(key), key, quote(path) + " is a directory, not a file");
  errno = 0;
  std::ifstream in(resolved, std::ios::binary);
  if (!in)
    return fail(line_of(key), key, "cannot read " + quote(path) + ": " + std::strerror(errno));
  if (in.peek() == std::ifstream::traits_type::eof())
    fail(line_of(key), key, quote(path) + " is empty");
}

void Parser::check_auth() {
  JwtConfig &jwt = cfg_.auth.jwt;
  if (!jwt.secret_env.empty()) {
    std::optional<std::string> value = env(jwt.secret_env);
    if (value)
      jwt.secret = *value;
    else if (!env("SIDECAR_JWT_SECRET"))
      fail(line_of("auth.jwt.secret_env"), "auth.jwt.secret_env",
           "environment variable " + quote(jwt.secret_env) + " is not set");
  }
  if (std::optional<std::string> value = env("SIDECAR_JWT_SECRET"))
    jwt.secret = *value;
  check_key_file("auth.jwt.public_key_file", jwt.public_key_file);
  check_key_file("auth.jwt.jwks_file", jwt.jwks_file);
  if (cfg_.auth.mode != AuthConfig::Mode::jwt)
    return;

  bool has_public = !jwt.public_key_file.empty() || !jwt.jwks_file.empty();
  int jwt_line = line_of("auth.jwt") ? line_of("auth.jwt") : line_of("auth.mode");
  if (jwt.secret.empty() && !has_public && jwt.secret_env.empty()) {
    fail(jwt_line, "auth.jwt",
         "auth.mode jwt needs a key: set secret, secret_env, public_key_file or jwks_file, or "
         "the SIDECAR_JWT_SECRET environment variable");
    return;
  }
  int alg_line = line_of("auth.jwt.algorithms") ? line_of("auth.jwt.algorithms") : jwt_line;
  for (const std::string &alg : jwt.algorithms) {
    bool hmac = alg.starts_with("HS");
    // Accepting HS* with only a public key is the classic algorithm-confusion hole: an attacker
    // signs with the (public) key bytes as an HMAC secret.
    if (hmac && jwt.secret.empty() && has_public)
      fail(alg_line, "auth.jwt.algorithms",
           alg + " needs a shared secret, but only a public key is configured; allowing it "
                 "invites algorithm confusion");
    else if (!hmac && !has_public)
      fail(alg_line, "auth.jwt.algorithms",
           alg + " needs auth.jwt.public_key_file or auth.jwt.jwks_file");
  }
}

void Parser::finish() {
  Config &c = cfg_;
  if (std::optional<std::string> url = env("SIDECAR_REDIS_URL")) {
    std::string reason;
    RedisConfig redis = c.redis;
    if (parse_redis_url(*url, redis, reason))
      c.redis = redis;
    else
      fail(0, "SIDECAR_REDIS_URL", reason);
  }
  if (std::optional<std::string> token = env("SIDECAR_ADMIN_TOKEN"))
    c.admin.token = *token;
  if (c.redis.reconnect_max_ms < c.redis.reconnect_initial_ms)
    fail(line_of("redis.reconnect_max_ms"), "redis.reconnect_max_ms",
         "must be at least redis.reconnect_initial_ms (" +
             std::to_string(c.redis.reconnect_initial_ms) + ")");
  if (c.admin.listen_addr && c.admin.listen_addr->port == c.listen_addr.port) {
    auto wildcard = [](const std::string &h) { return h == "0.0.0.0" || h == "::"; };
    const std::string &h = c.admin.listen_addr->host;
    if (h == c.listen_addr.host || wildcard(h) || wildcard(c.listen_addr.host))
      fail(line_of("admin.listen"), "admin.listen",
           "must differ from listen (" + c.listen +
               "); leave it empty to serve the admin "
               "endpoints on the main listener");
  }
  check_auth();
}

} // namespace

ConfigResult parse_config(const std::string &yaml_text, const std::string &file,
                          const EnvLookup &env) {
  ConfigResult result;
  try {
    Parser(result, file, env).run(yaml_text);
  } catch (const std::exception &e) {
    // Only allocation failure should get here; the contract is still "never throws".
    result.errors.push_back(ConfigError{file, 0, "", std::string("internal error: ") + e.what()});
  }
  return result;
}

ConfigResult load_config_file(const std::string &path, const EnvLookup &env) {
  namespace fs = std::filesystem;
  auto failed = [&](std::string reason) {
    ConfigResult result;
    result.config.file = path;
    result.errors.push_back(ConfigError{path, 0, "", std::move(reason)});
    return result;
  };
  std::error_code ec;
  if (!fs::exists(path, ec))
    return failed("cannot read the config file: it does not exist");
  if (fs::is_directory(path, ec))
    return failed("cannot read the config file: it is a directory");
  if (fs::file_size(path, ec) > kMaxConfigFileBytes && !ec)
    return failed("the config file is larger than 1 MiB; is it the right file?");
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return failed("cannot read the config file: " + std::string(strerror(errno)));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad())
    return failed("cannot read the config file: " + std::string(strerror(errno)));
  return parse_config(text.str(), path, env);
}

} // namespace sidecar
