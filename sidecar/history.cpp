// History: templates, the live header, the sidecar.v1 envelope, `recover` parameters, read
// replies and the resume verdict; see history.h. The Lua library is in history_lua.cpp.
#include "history.h"

#include <hiredis/hiredis.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>

#include "config.h"
#include "encoding.h"
#include "frame.h"
#include "json_text.h"

namespace sidecar {
namespace {

bool is_id_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == ':' || c == '-';
}

// Matches pieces[i..] against s, trying every length for a placeholder. Templates have a few
// placeholders and channels a few hundred bytes, so the backtracking stays small.
bool match_from(std::span<const TemplatePiece> pieces, std::string_view s) {
  if (pieces.empty())
    return s.empty();
  const TemplatePiece &p = pieces.front();
  if (!p.placeholder)
    return s.starts_with(p.text) && match_from(pieces.subspan(1), s.substr(p.text.size()));
  for (size_t n = 1; n <= s.size() && is_id_char(s[n - 1]); ++n) {
    if (match_from(pieces.subspan(1), s.substr(n)))
      return true;
  }
  return false;
}

std::string quote(std::string_view s) { return json_quoted(s); }

} // namespace

bool split_template(std::string_view tmpl, std::vector<TemplatePiece> &out, std::string &why) {
  out.clear();
  if (tmpl.empty()) {
    why = "must not be empty";
    return false;
  }
  size_t i = 0;
  while (i < tmpl.size()) {
    size_t open = tmpl.find_first_of("{}", i);
    if (open == std::string_view::npos) {
      out.push_back({false, tmpl.substr(i)});
      break;
    }
    if (open > i)
      out.push_back({false, tmpl.substr(i, open - i)});
    size_t close = tmpl.find('}', open);
    std::string_view name = close == std::string_view::npos || tmpl[open] == '}'
                                ? std::string_view{}
                                : tmpl.substr(open + 1, close - open - 1);
    if (name != "org" && name != "user") {
      why = "unknown placeholder or stray brace in " + quote(tmpl) +
            "; only {org} and {user} are replaced";
      return false;
    }
    if (!out.empty() && out.back().placeholder) {
      why = "two placeholders side by side in " + quote(tmpl) + " cannot be told apart";
      return false;
    }
    out.push_back({true, name});
    i = close + 1;
  }
  return true;
}

std::vector<HistoryProblem> check_history(const std::vector<HistoryConfig> &list) {
  std::vector<HistoryProblem> problems;
  std::vector<TemplatePiece> pieces;
  for (size_t i = 0; i < list.size(); ++i) {
    const HistoryConfig &h = list[i];
    std::string why;
    if (!split_template(h.channel_template, pieces, why))
      problems.push_back({i, "channel", why});
    for (size_t j = 0; j < i; ++j) {
      if (list[j].channel_template == h.channel_template) {
        problems.push_back({i, "channel", quote(h.channel_template) + " is listed twice"});
        break;
      }
    }
    if (h.size < 1 || h.size > kMaxHistorySize)
      problems.push_back(
          {i, "size",
           "must be 1.." + std::to_string(kMaxHistorySize) + ", got " + std::to_string(h.size)});
    if (h.ttl_s < 1 || h.ttl_s > kMaxHistoryTtlS)
      problems.push_back({i, "ttl_s",
                          "must be 1.." + std::to_string(kMaxHistoryTtlS) + " seconds, got " +
                              std::to_string(h.ttl_s)});
    if (h.max_recover < 1 || h.max_recover > kMaxRecover)
      problems.push_back(
          {i, "max_recover",
           "must be 1.." + std::to_string(kMaxRecover) + ", got " + std::to_string(h.max_recover)});
    else if (h.max_recover > h.size)
      problems.push_back({i, "max_recover",
                          "must not exceed size (" + std::to_string(h.size) +
                              "): entries beyond it are never kept, got " +
                              std::to_string(h.max_recover)});
  }
  return problems;
}

bool channel_matches_template(std::string_view tmpl, std::string_view channel) {
  std::vector<TemplatePiece> pieces;
  std::string why;
  return split_template(tmpl, pieces, why) && match_from(pieces, channel);
}

const HistoryConfig *find_history(const std::vector<HistoryConfig> &list,
                                  std::string_view channel) {
  for (const HistoryConfig &h : list) {
    if (channel_matches_template(h.channel_template, channel))
      return &h;
  }
  return nullptr;
}

std::string history_stream_key(std::string_view channel) {
  return "sidecar:{" + std::string(channel) + "}:s";
}
std::string history_meta_key(std::string_view channel) {
  return "sidecar:{" + std::string(channel) + "}:m";
}

bool is_valid_epoch(std::string_view epoch) {
  return !epoch.empty() && epoch.size() <= 32 &&
         std::all_of(epoch.begin(), epoch.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z'); });
}

LiveMessage parse_live_message(std::string_view raw) {
  LiveMessage m;
  if (!raw.starts_with(kLiveHeaderPrefix)) {
    m.payload = raw;
    return m;
  }
  m.kind = LiveMessage::Kind::malformed;
  std::string_view rest = raw.substr(kLiveHeaderPrefix.size());
  size_t space = rest.find(' ');
  size_t eol = rest.find('\n');
  if (space == std::string_view::npos || eol == std::string_view::npos || eol < space)
    return m;
  std::string_view epoch = rest.substr(0, space);
  std::string_view offset = rest.substr(space + 1, eol - space - 1);
  uint64_t n = 0;
  if (!is_valid_epoch(epoch) || !parse_u64(offset, n) || n == 0 || offset[0] == '0')
    return m;
  m.kind = LiveMessage::Kind::positioned;
  m.epoch = epoch;
  m.offset = n;
  m.payload = rest.substr(eol + 1);
  return m;
}

std::string build_envelope(std::string_view channel, const StreamPosition *pos,
                           std::string_view payload) {
  std::string out;
  out.reserve(payload.size() + channel.size() + 96);
  out.append(R"({"type":"message","channel":")");
  json_escape_into(out, channel);
  out.push_back('"');
  if (pos != nullptr) {
    out.append(R"(,"epoch":)");
    out.append(json_quoted(pos->epoch));
    out.append(R"(,"offset":)");
    out.append(std::to_string(pos->offset));
  }
  // nlohmann's accept() parses without building values and without recursion, so a deeply
  // nested payload costs neither memory nor stack; it refuses invalid UTF-8 inside strings.
  bool utf8 = is_valid_utf8(payload);
  if (utf8 && nlohmann::json::accept(payload)) {
    out.append(R"(,"data":)");
    out.append(payload);
  } else if (utf8) {
    out.append(R"(,"data":")");
    json_escape_into(out, payload);
    out.push_back('"');
  } else {
    out.append(R"(,"data_b64":")");
    out.append(base64_encode(payload));
    out.push_back('"');
  }
  out.push_back('}');
  return out;
}

const char *resync_reason_name(ResyncReason r) {
  switch (r) {
  case ResyncReason::none:
    return "none";
  case ResyncReason::epoch_changed:
    return "epoch_changed";
  case ResyncReason::trimmed:
    return "trimmed";
  case ResyncReason::too_many:
    return "too_many";
  case ResyncReason::bad_position:
    return "bad_position";
  case ResyncReason::unavailable:
    return "unavailable";
  case ResyncReason::redis_reconnected:
    return "redis_reconnected";
  }
  return "none";
}

std::string build_resync(std::string_view channel, ResyncReason reason, const StreamPosition *pos) {
  std::string out = R"({"type":"resync","channel":)" + json_quoted(channel) + R"(,"reason":")" +
                    resync_reason_name(reason) + '"';
  if (pos != nullptr)
    out += R"(,"epoch":)" + json_quoted(pos->epoch) + R"(,"offset":)" + std::to_string(pos->offset);
  out.push_back('}');
  return out;
}

RecoverParse parse_recover_params(std::span<const std::string> values, size_t max_params) {
  RecoverParse r;
  auto fail = [&r](size_t i, const std::string &why) {
    r.requests.clear();
    r.error = "recover[" + std::to_string(i) + "]: " + why;
    return r;
  };
  if (values.size() > max_params) {
    r.error = "at most " + std::to_string(max_params) + " recover parameters, got " +
              std::to_string(values.size());
    return r;
  }
  for (size_t i = 0; i < values.size(); ++i) {
    std::string_view v = values[i];
    size_t at = v.rfind('@');
    if (at == std::string_view::npos)
      return fail(i, "must be CHANNEL@EPOCH:OFFSET");
    std::string_view channel = v.substr(0, at);
    std::string_view pos = v.substr(at + 1);
    size_t colon = pos.find(':');
    if (colon == std::string_view::npos)
      return fail(i, "must be CHANNEL@EPOCH:OFFSET");
    if (channel.empty() || channel.size() > 512 ||
        !std::all_of(channel.begin(), channel.end(), [](char c) { return c > 0x20 && c < 0x7F; }))
      return fail(i, "the channel must be 1..512 printable ASCII characters");
    std::string_view epoch = pos.substr(0, colon);
    if (!is_valid_epoch(epoch))
      return fail(i, "the epoch must be 1..32 of [0-9a-z]");
    uint64_t offset = 0;
    if (!parse_u64(pos.substr(colon + 1), offset))
      return fail(i, "the offset must be a decimal number below 2^64");
    for (const RecoverRequest &seen : r.requests) {
      if (seen.channel == channel)
        return fail(i, "a channel may be recovered once");
    }
    r.requests.push_back({std::string(channel), {std::string(epoch), offset}});
  }
  return r;
}

HistoryReadResult parse_history_read(const redisReply &reply) {
  HistoryReadResult r;
  if (reply.type == REDIS_REPLY_ERROR) {
    r.error = std::string(reply.str, reply.len);
    return r;
  }
  if (reply.type != REDIS_REPLY_ARRAY || reply.elements < 2 || reply.elements % 2 != 0) {
    r.error = "sidecar_read: expected [epoch, top, offset, payload, ...]";
    return r;
  }
  const redisReply &epoch = *reply.element[0];
  const redisReply &top = *reply.element[1];
  if (epoch.type != REDIS_REPLY_STRING || !is_valid_epoch(std::string_view(epoch.str, epoch.len)) ||
      top.type != REDIS_REPLY_INTEGER || top.integer < 0) {
    r.error = "sidecar_read: bad epoch or top";
    return r;
  }
  r.read.epoch.assign(epoch.str, epoch.len);
  r.read.top = static_cast<uint64_t>(top.integer);
  r.read.entries.reserve((reply.elements - 2) / 2);
  uint64_t prev = 0;
  for (size_t i = 2; i < reply.elements; i += 2) {
    const redisReply &off = *reply.element[i];
    const redisReply &data = *reply.element[i + 1];
    // Offsets must rise and stay within top; the verdict relies on both.
    if (off.type != REDIS_REPLY_INTEGER || off.integer <= 0 ||
        static_cast<uint64_t>(off.integer) <= prev ||
        static_cast<uint64_t>(off.integer) > r.read.top || data.type != REDIS_REPLY_STRING) {
      r.read = {};
      r.error = "sidecar_read: bad entry " + std::to_string((i - 2) / 2);
      return r;
    }
    prev = static_cast<uint64_t>(off.integer);
    r.read.entries.emplace_back(prev, std::string(data.str, data.len));
  }
  return r;
}

ResumeDecision decide_resume(std::string_view epoch, uint64_t offset, const HistoryRead &read,
                             uint32_t max_recover) {
  ResumeDecision d;
  if (epoch != read.epoch) {
    d.reason = ResyncReason::epoch_changed;
    return d;
  }
  if (offset > read.top) {
    d.reason = ResyncReason::bad_position;
    return d;
  }
  uint64_t missed = read.top - offset;
  if (missed > max_recover) {
    d.reason = ResyncReason::too_many;
    return d;
  }
  auto it = std::upper_bound(read.entries.begin(), read.entries.end(), offset,
                             [](uint64_t o, const auto &e) { return o < e.first; });
  d.first = static_cast<size_t>(it - read.entries.begin());
  size_t have = read.entries.size() - d.first;
  // The entries after `offset` must be exactly offset+1 .. top. Offsets rise strictly, so a
  // first of offset+1 and `missed` entries ending at top leave no room for a hole. Anything less
  // means the stream no longer holds them (trimmed, expired, an XDEL), or the read was made from
  // another offset; either way it is never presented as complete.
  if (missed > 0 && (have < missed || it->first != offset + 1 ||
                     read.entries[d.first + missed - 1].first != read.top)) {
    d.reason = ResyncReason::trimmed;
    return d;
  }
  d.recovered = true;
  d.count = static_cast<size_t>(missed);
  return d;
}

} // namespace sidecar
