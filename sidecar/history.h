// History: the pure pieces of per-channel history and resume (issue 11). A channel with history
// keeps its publications in a Redis Stream, each at a consecutive position 1, 2, 3, ... within an
// epoch that is created with the stream; a Redis Function library (history_lua.cpp) appends and
// publishes atomically and answers range reads. This file holds what the sidecar decides about
// those bytes: which channels have history, the live message header, the sidecar.v1 envelope,
// the `recover` query parameters, the read reply and the resume verdict. No I/O, no uv.h.
//
// Keys of channel C share C's Cluster slot because the hash tag is the whole channel name:
// stream `sidecar:{C}:s` (entry id N-0, field d = payload) and metadata hash `sidecar:{C}:m`
// (fields epoch, top). Channel names never contain braces: templates allow only {org} and
// {user}, whose values are org ids.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

struct redisReply;

namespace sidecar {

// One `history:` entry. Validated by check_history; config.cpp parses it from YAML.
struct HistoryConfig {
  std::string channel_template; // "org:{org}", as in routes and channels
  uint32_t size = 1000;         // entries kept (XADD MAXLEN ~)
  uint32_t ttl_s = 3600;        // both keys expire this long after the last publish
  uint32_t max_recover = 300;   // most entries replayed on one resume or gap read
  bool operator==(const HistoryConfig &) const = default;
};

// Upper bounds, with their reasons. A resume reply carries up to max_recover entries in one
// reply that the sidecar holds whole, and the reply parser refuses arrays over 2^20 elements.
inline constexpr uint32_t kMaxHistorySize = 10'000'000;
inline constexpr uint32_t kMaxRecover = 10'000;
inline constexpr uint32_t kMaxHistoryTtlS = 366 * 24 * 3600;

struct HistoryProblem {
  size_t index = 0; // which entry of the list
  std::string key;  // "channel", "size", "ttl_s", "max_recover"
  std::string reason;
};
// Every problem of a list: placeholders other than {org} and {user}, unbalanced or empty
// templates, size/ttl_s/max_recover out of range, max_recover > size, a template twice.
std::vector<HistoryProblem> check_history(const std::vector<HistoryConfig> &list);

// A template cut into literal text and placeholders ("{org}", "{user}"), for the matcher here
// and the Lua patterns in history_lua.cpp. False with a reason on an unknown placeholder, a
// stray brace, an empty template or two placeholders side by side (they could split any way).
struct TemplatePiece {
  bool placeholder = false;
  std::string_view text; // the literal, or the placeholder's name ("org")
};
bool split_template(std::string_view tmpl, std::vector<TemplatePiece> &out, std::string &why);

// Whether `channel` is one that `tmpl` expands to: literal bytes equal, each placeholder one or
// more of [A-Za-z0-9._:-] (what is_valid_org admits for orgs and users). Org ids may contain
// ':', so "org:{org}" also matches "org:a:user:b"; that is why the first template wins.
bool channel_matches_template(std::string_view tmpl, std::string_view channel);
// The first entry, in list order, whose template matches; nullptr when none does. The Lua
// library applies the same rule, so the sidecar and sidecar_publish always agree.
const HistoryConfig *find_history(const std::vector<HistoryConfig> &list, std::string_view channel);

std::string history_stream_key(std::string_view channel); // "sidecar:{C}:s"
std::string history_meta_key(std::string_view channel);   // "sidecar:{C}:m"

// The `#!lua name=sidecar` library for FUNCTION LOAD REPLACE, with every template, size and
// ttl_s baked in (history_lua.cpp). `list` must have passed check_history.
// `sharded`: sidecar_publish sends the live message with SPUBLISH instead of PUBLISH.
std::string history_library(const std::vector<HistoryConfig> &list, bool sharded = false);

// ---------------------------------------------------------------------------- live messages

// sidecar_publish publishes "\x1esidecar1 <epoch> <offset>\n<payload>" on the channel; a plain
// PUBLISH arrives without it. The record separator cannot begin JSON or ordinary text.
inline constexpr std::string_view kLiveHeaderPrefix = "\x1esidecar1 ";

struct LiveMessage {
  enum class Kind {
    plain,      // no header: the payload is all of it, with no position
    positioned, // header read: epoch, offset and the payload after it
    malformed,  // starts with kLiveHeaderPrefix but the rest is not a header
  };
  Kind kind = Kind::plain;
  std::string_view epoch;
  uint64_t offset = 0;
  std::string_view payload;
};
// Only the exact prefix claims a header. A message that claims one and breaks it is `malformed`
// and must be dropped (and counted): delivering it as plain would hand clients our header bytes,
// and delivering it at a guessed position could present a hole as complete.
LiveMessage parse_live_message(std::string_view raw);

// Epochs are what sidecar_publish writes: 1..32 of [0-9a-z]. Anything else from a client is a
// bad parameter, and from Redis a malformed message.
bool is_valid_epoch(std::string_view epoch);

// ---------------------------------------------------------------------------- client messages

struct StreamPosition {
  std::string epoch;
  uint64_t offset = 0;
};

// The sidecar.v1 publication, built once per message for every member of a room:
// {"type":"message","channel":C,"epoch":E,"offset":N,"data":D}; without a position (a plain
// PUBLISH) the epoch and offset are left out. D is the payload itself when it is valid JSON
// (copied verbatim, never re-serialised), else a JSON string when it is valid UTF-8; a payload
// that is not valid UTF-8 becomes "data_b64":"<standard base64>" instead of "data".
std::string build_envelope(std::string_view channel, const StreamPosition *pos,
                           std::string_view payload);

enum class ResyncReason : uint8_t {
  none,
  epoch_changed,     // the client's epoch is not the stream's (lost stream, restart, expiry)
  trimmed,           // entries after the client's position are no longer in the stream
  too_many,          // more missed entries than max_recover
  bad_position,      // the client claims a position beyond the stream's top
  unavailable,       // the history could not be read (Redis error or link down)
  redis_reconnected, // a channel without history lost its subscription for a while
};
const char *resync_reason_name(ResyncReason r);

// {"type":"resync","channel":C,"reason":R} and, when known, "epoch" and "offset": the position
// that delivery continues after, which the client stores as its last seen.
std::string build_resync(std::string_view channel, ResyncReason reason, const StreamPosition *pos);

// ---------------------------------------------------------------------------- resume requests

inline constexpr size_t kMaxRecoverParams = 16;

struct RecoverRequest {
  std::string channel;
  StreamPosition pos; // the last position the client saw
};
struct RecoverParse {
  std::vector<RecoverRequest> requests;
  std::string error; // "" when every value was good; else why (never echoes the value)
};
// `values` are the already percent-decoded values of every `recover` query parameter, in order.
// Each is CHANNEL@EPOCH:OFFSET; the channel is what precedes the last '@' (1..512 printable
// ASCII bytes), the epoch passes is_valid_epoch and the offset is plain decimal. A channel twice,
// more than max_params values, or any bad value refuses the whole list: a client that sent a
// position wants it honoured or to be told, not silently ignored.
RecoverParse parse_recover_params(std::span<const std::string> values,
                                  size_t max_params = kMaxRecoverParams);

// ---------------------------------------------------------------------------- history reads

// What `FCALL sidecar_read 1 C from count` answered. Its RESP reply is a flat array
// [epoch, top, offset_1, payload_1, offset_2, payload_2, ...]: the entries after `from`, in
// order, at most `count`, and none at all when top - from > count (the caller then knows it is
// too many without being sent them).
struct HistoryRead {
  std::string epoch;
  uint64_t top = 0;
  std::vector<std::pair<uint64_t, std::string>> entries; // (offset, payload), ascending
};
struct HistoryReadResult {
  HistoryRead read;
  std::string error; // "" on success; else the Redis error text or what was wrong with the shape
};
HistoryReadResult parse_history_read(const redisReply &reply);

// The verdict on a client at (epoch, offset) given a read from that offset. Recovered: the
// entries read.entries[first, first + count) are positions offset+1 .. read.top exactly, in
// order (count 0 when the client is at the top). Otherwise nothing is replayed and the client
// is told `reason`; its position becomes (read.epoch, read.top).
struct ResumeDecision {
  bool recovered = false;
  ResyncReason reason = ResyncReason::none;
  size_t first = 0;
  size_t count = 0;
};
ResumeDecision decide_resume(std::string_view epoch, uint64_t offset, const HistoryRead &read,
                             uint32_t max_recover);

} // namespace sidecar
