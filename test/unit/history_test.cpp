#include "history.h"

#include <doctest/doctest.h>
#include <hiredis/hiredis.h>
#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

using namespace sidecar;

namespace {

// A real redisReply, parsed by hiredis from RESP bytes, as a link hands it over.
struct Reply {
  redisReply *r = nullptr;
  explicit Reply(const std::string &resp) {
    redisReader *reader = redisReaderCreate();
    REQUIRE(redisReaderFeed(reader, resp.data(), resp.size()) == REDIS_OK);
    void *out = nullptr;
    REQUIRE(redisReaderGetReply(reader, &out) == REDIS_OK);
    REQUIRE(out != nullptr);
    r = static_cast<redisReply *>(out);
    redisReaderFree(reader);
  }
  ~Reply() { freeReplyObject(r); }
  Reply(const Reply &) = delete;
  Reply &operator=(const Reply &) = delete;
};

std::string bulk(const std::string &s) {
  return "$" + std::to_string(s.size()) + "\r\n" + s + "\r\n";
}

HistoryRead make_read(std::string epoch, uint64_t top, uint64_t first, uint64_t last) {
  HistoryRead r{std::move(epoch), top, {}};
  for (uint64_t o = first; o <= last && first != 0; ++o)
    r.entries.emplace_back(o, "m" + std::to_string(o));
  return r;
}

} // namespace

// ---------------------------------------------------------------------------- config

TEST_CASE("a valid history list has no problems") {
  std::vector<HistoryConfig> list = {{"org:{org}", 1000, 3600, 300},
                                     {"org:{org}:user:{user}", 10, 60, 10},
                                     {"sidecar:broadcast", 1, 1, 1}};
  CHECK(check_history(list).empty());
}

TEST_CASE("every bad history entry is reported with its index and key") {
  std::vector<HistoryConfig> list = {{"org:{tenant}", 1000, 3600, 300}, // unknown placeholder
                                     {"org:{org", 10, 60, 10},          // unbalanced
                                     {"", 10, 60, 10},                  // empty
                                     {"org:{org}{user}", 10, 60, 10},   // ambiguous
                                     {"a:{org}", 0, 0, 0},              // all zero
                                     {"b:{org}", 10, 60, 11},           // max_recover > size
                                     {"a:{org}", 10, 60, kMaxRecover + 1}};
  auto problems = check_history(list);
  auto has = [&](size_t i, const std::string &key) {
    for (const auto &p : problems)
      if (p.index == i && p.key == key)
        return true;
    return false;
  };
  CHECK(has(0, "channel"));
  CHECK(has(1, "channel"));
  CHECK(has(2, "channel"));
  CHECK(has(3, "channel"));
  CHECK(has(4, "size"));
  CHECK(has(4, "ttl_s"));
  CHECK(has(4, "max_recover"));
  CHECK(has(5, "max_recover"));
  CHECK(has(6, "channel")); // listed twice
  CHECK(has(6, "max_recover"));
}

TEST_CASE("a template matches the channels it expands to and no others") {
  CHECK(channel_matches_template("org:{org}", "org:acme"));
  CHECK(channel_matches_template("org:{org}", "org:a.b_c-d"));
  CHECK_FALSE(channel_matches_template("org:{org}", "org:"));
  CHECK_FALSE(channel_matches_template("org:{org}", "org:a b"));
  CHECK_FALSE(channel_matches_template("org:{org}", "xorg:acme"));
  CHECK_FALSE(channel_matches_template("org:{org}", "org:acme/x"));
  CHECK(channel_matches_template("org:{org}:user:{user}", "org:acme:user:bob"));
  CHECK_FALSE(channel_matches_template("org:{org}:user:{user}", "org:acme:user:"));
  CHECK(channel_matches_template("sidecar:broadcast", "sidecar:broadcast"));
  CHECK_FALSE(channel_matches_template("sidecar:broadcast", "sidecar:broadcastx"));
  // Org ids may hold ':', so the room template also matches a user channel's name.
  CHECK(channel_matches_template("org:{org}", "org:acme:user:bob"));
}

TEST_CASE("the first template that matches a channel wins") {
  std::vector<HistoryConfig> list = {{"org:{org}:user:{user}", 10, 60, 10},
                                     {"org:{org}", 1000, 3600, 300}};
  REQUIRE(find_history(list, "org:acme:user:bob") == &list[0]);
  REQUIRE(find_history(list, "org:acme") == &list[1]);
  CHECK(find_history(list, "sidecar:broadcast") == nullptr);
}

TEST_CASE("history keys hash-tag the whole channel name") {
  CHECK(history_stream_key("org:acme") == "sidecar:{org:acme}:s");
  CHECK(history_meta_key("org:acme") == "sidecar:{org:acme}:m");
}

TEST_CASE("the library bakes every template in as an escaped Lua literal") {
  std::string lib = history_library({{"org:{org}", 1000, 3600, 300}, {"a\"b\n{user}", 5, 7, 5}});
  CHECK(lib.starts_with("#!lua name=sidecar\n"));
  CHECK(lib.find("size = 1000, ttl = 3600") != std::string::npos);
  CHECK(lib.find("size = 5, ttl = 7") != std::string::npos);
  CHECK(lib.find("a\"b") == std::string::npos); // the quote is escaped, not written
  CHECK(lib.find("a\\034b\\010") != std::string::npos);
  CHECK(lib.find("register_function{function_name = 'sidecar_publish'") != std::string::npos);
}

TEST_CASE("sidecar_publish publishes with PUBLISH, or SPUBLISH for sharded pub/sub") {
  std::vector<HistoryConfig> list = {{"org:{org}", 1000, 3600, 300}};
  std::string global = history_library(list);
  CHECK(global.find("local publish_command = 'PUBLISH'") != std::string::npos);
  CHECK(global.find("SPUBLISH") == std::string::npos);
  CHECK(global.find("redis.call(publish_command, channel") != std::string::npos);
  std::string sharded = history_library(list, true);
  CHECK(sharded.find("local publish_command = 'SPUBLISH'") != std::string::npos);
  // Nothing else differs, so both modes keep the same positions and keys.
  CHECK(sharded.size() == global.size() + 1);
}

// ---------------------------------------------------------------------------- live messages

TEST_CASE("a live message with the header has a position and the payload after it") {
  const std::string raw = "\x1esidecar1 18b2c3d4e0001f 17\n{\"a\":1}";
  LiveMessage m = parse_live_message(raw);
  REQUIRE(m.kind == LiveMessage::Kind::positioned);
  CHECK(m.epoch == "18b2c3d4e0001f");
  CHECK(m.offset == 17);
  CHECK(m.payload == "{\"a\":1}");
}

TEST_CASE("the payload after the header is verbatim, newlines and NUL bytes included") {
  std::string raw = std::string("\x1esidecar1 e 1\n") + std::string("a\n\0b", 4);
  LiveMessage m = parse_live_message(raw);
  REQUIRE(m.kind == LiveMessage::Kind::positioned);
  CHECK(m.payload == std::string("a\n\0b", 4));
  CHECK(parse_live_message("\x1esidecar1 e 1\n").payload.empty());
}

TEST_CASE("a message without the exact prefix is plain, whatever it starts with") {
  for (std::string raw : {std::string("{\"a\":1}"), std::string(""), std::string("\x1e"),
                          std::string("\x1esidecar2 e 1\nx"), std::string("sidecar1 e 1\nx")}) {
    CAPTURE(raw);
    LiveMessage m = parse_live_message(raw);
    CHECK(m.kind == LiveMessage::Kind::plain);
    CHECK(m.payload == raw);
  }
}

TEST_CASE("a message that claims a header and breaks it is malformed") {
  for (std::string raw :
       {"\x1esidecar1 ", "\x1esidecar1 e 1", "\x1esidecar1 e\n1 x", "\x1esidecar1 E 1\nx",
        "\x1esidecar1 e 0\nx", "\x1esidecar1 e 01\nx", "\x1esidecar1 e -1\nx",
        "\x1esidecar1 e 18446744073709551616\nx", "\x1esidecar1  1\nx", "\x1esidecar1 e 1 \nx"}) {
    CAPTURE(raw);
    CHECK(parse_live_message(raw).kind == LiveMessage::Kind::malformed);
  }
}

// ---------------------------------------------------------------------------- envelopes

TEST_CASE("a JSON payload is the envelope's data, byte for byte") {
  StreamPosition pos{"e1", 17};
  std::string env = build_envelope("org:acme", &pos, R"({"type":"SYNC", "n": [1, 2.50]})");
  CHECK(env == R"({"type":"message","channel":"org:acme","epoch":"e1","offset":17,)"
               R"("data":{"type":"SYNC", "n": [1, 2.50]}})");
  CHECK(nlohmann::json::accept(env));
}

TEST_CASE("text that is not JSON becomes a JSON string, and a plain PUBLISH has no position") {
  std::string env = build_envelope("org:acme", nullptr, "hello \"world\"\n");
  CHECK(env == R"({"type":"message","channel":"org:acme","data":"hello \"world\"\n"})");
  auto j = nlohmann::json::parse(build_envelope("c", nullptr, "{not json"));
  CHECK(j["data"] == "{not json");
  CHECK(nlohmann::json::parse(build_envelope("c", nullptr, ""))["data"] == "");
}

TEST_CASE("a payload that is not UTF-8 becomes data_b64") {
  std::string payload("\xff\x00\x01", 3);
  StreamPosition pos{"e1", 1};
  auto j = nlohmann::json::parse(build_envelope("c", &pos, payload));
  CHECK_FALSE(j.contains("data"));
  CHECK(j["data_b64"] == "/wAB");
}

TEST_CASE("a deeply nested JSON payload is embedded without recursion") {
  std::string deep(200000, '[');
  deep += std::string(200000, ']');
  std::string env = build_envelope("c", nullptr, deep);
  CHECK(env.size() ==
        deep.size() + std::string(R"({"type":"message","channel":"c","data":})").size());
}

TEST_CASE("a resync names its reason and, when known, where delivery continues") {
  StreamPosition pos{"e2", 40};
  CHECK(build_resync("org:acme", ResyncReason::trimmed, &pos) ==
        R"({"type":"resync","channel":"org:acme","reason":"trimmed","epoch":"e2","offset":40})");
  CHECK(build_resync("org:acme", ResyncReason::redis_reconnected, nullptr) ==
        R"({"type":"resync","channel":"org:acme","reason":"redis_reconnected"})");
}

// ---------------------------------------------------------------------------- recover params

TEST_CASE("recover values parse into channel, epoch and offset") {
  std::vector<std::string> v = {"org:acme@e1:17", "org:acme:user:bob@zz9:0"};
  RecoverParse p = parse_recover_params(v);
  REQUIRE(p.error.empty());
  REQUIRE(p.requests.size() == 2);
  CHECK(p.requests[0].channel == "org:acme");
  CHECK(p.requests[0].pos.epoch == "e1");
  CHECK(p.requests[0].pos.offset == 17);
  CHECK(p.requests[1].channel == "org:acme:user:bob");
  CHECK(p.requests[1].pos.offset == 0);
  CHECK(parse_recover_params({}).requests.empty());
}

TEST_CASE("hostile recover values are refused whole, with a reason that does not echo them") {
  for (std::string bad : std::vector<std::string>{"",
                                                  "@",
                                                  "org:acme",
                                                  "org:acme@",
                                                  "org:acme@e1",
                                                  "org:acme@e1:",
                                                  "@e1:1",
                                                  "org:acme@:1",
                                                  "org:acme@e1:-1",
                                                  "org:acme@e1:+1",
                                                  "org:acme@e1:1x",
                                                  "org:acme@e1:0x10",
                                                  "org:acme@e1:18446744073709551616",
                                                  "org:acme@E1:1",
                                                  "org:acme@e-1:1",
                                                  "org acme@e1:1",
                                                  std::string("org:\0acme@e1:1", 14),
                                                  "org:\xff@e1:1",
                                                  "org:acme@" + std::string(33, 'e') + ":1",
                                                  std::string(513, 'c') + "@e1:1"}) {
    CAPTURE(bad);
    std::vector<std::string> v = {"org:ok@e1:1", bad};
    RecoverParse p = parse_recover_params(v);
    CHECK(p.requests.empty());
    CHECK(p.error.starts_with("recover[1]: "));
    if (bad.size() > 3)
      CHECK(p.error.find(bad) == std::string::npos);
  }
}

TEST_CASE("the largest offset parses; the channel ends at the last '@'") {
  std::vector<std::string> v = {"org:a@b@e1:18446744073709551615"}; // "org:a%40b@e1:..." decoded
  RecoverParse p = parse_recover_params(v);
  REQUIRE(p.error.empty());
  CHECK(p.requests[0].channel == "org:a@b");
  CHECK(p.requests[0].pos.offset == UINT64_MAX);
}

TEST_CASE("a channel recovered twice, or too many values, is refused") {
  std::vector<std::string> twice = {"org:a@e1:1", "org:b@e1:1", "org:a@e2:5"};
  CHECK(parse_recover_params(twice).error.starts_with("recover[2]: "));
  std::vector<std::string> many(1000);
  for (size_t i = 0; i < many.size(); ++i)
    many[i] = "org:c" + std::to_string(i) + "@e1:1";
  RecoverParse p = parse_recover_params(many);
  CHECK(p.requests.empty());
  CHECK(p.error == "at most 16 recover parameters, got 1000");
  many.resize(kMaxRecoverParams);
  CHECK(parse_recover_params(many).requests.size() == kMaxRecoverParams);
}

// ---------------------------------------------------------------------------- read replies

TEST_CASE("a read reply parses into epoch, top and entries") {
  Reply r("*6\r\n" + bulk("e1") + ":5\r\n:4\r\n" + bulk("four") + ":5\r\n" +
          bulk(std::string("f\0ve", 4)));
  HistoryReadResult h = parse_history_read(*r.r);
  REQUIRE(h.error.empty());
  CHECK(h.read.epoch == "e1");
  CHECK(h.read.top == 5);
  REQUIRE(h.read.entries.size() == 2);
  CHECK(h.read.entries[0] == std::pair<uint64_t, std::string>(4, "four"));
  CHECK(h.read.entries[1].second == std::string("f\0ve", 4));
}

TEST_CASE("a read reply of count 0 has just epoch and top") {
  Reply r("*2\r\n" + bulk("e1") + ":0\r\n");
  HistoryReadResult h = parse_history_read(*r.r);
  REQUIRE(h.error.empty());
  CHECK(h.read.top == 0);
  CHECK(h.read.entries.empty());
}

TEST_CASE("an error reply or a reply of the wrong shape is an error, never a read") {
  struct Case {
    std::string resp;
    std::string error_prefix;
  };
  std::vector<Case> cases = {
      {"-ERR sidecar_read: no history configured for channel x; use PUBLISH\r\n",
       "ERR sidecar_read: no history"},
      {"-NOSCRIPT No matching function\r\n", "NOSCRIPT"},
      {":5\r\n", "sidecar_read: expected"},
      {"*0\r\n", "sidecar_read: expected"},
      {"*1\r\n" + bulk("e1"), "sidecar_read: expected"},
      {"*3\r\n" + bulk("e1") + ":1\r\n:1\r\n", "sidecar_read: expected"},
      {"*2\r\n:1\r\n:1\r\n", "sidecar_read: bad epoch"},
      {"*2\r\n" + bulk("E!") + ":1\r\n", "sidecar_read: bad epoch"},
      {"*2\r\n" + bulk("e1") + bulk("1"), "sidecar_read: bad epoch"},
      {"*2\r\n" + bulk("e1") + ":-1\r\n", "sidecar_read: bad epoch"},
      {"*4\r\n" + bulk("e1") + ":5\r\n" + bulk("4") + bulk("x"), "sidecar_read: bad entry 0"},
      {"*4\r\n" + bulk("e1") + ":5\r\n:6\r\n" + bulk("x"), "sidecar_read: bad entry 0"},
      {"*4\r\n" + bulk("e1") + ":5\r\n:0\r\n" + bulk("x"), "sidecar_read: bad entry 0"},
      {"*4\r\n" + bulk("e1") + ":5\r\n:4\r\n:4\r\n", "sidecar_read: bad entry 0"},
      {"*6\r\n" + bulk("e1") + ":5\r\n:4\r\n" + bulk("x") + ":4\r\n" + bulk("y"),
       "sidecar_read: bad entry 1"},
  };
  for (const Case &c : cases) {
    CAPTURE(c.resp);
    Reply r(c.resp);
    HistoryReadResult h = parse_history_read(*r.r);
    CHECK(h.error.starts_with(c.error_prefix));
    CHECK(h.read.entries.empty());
  }
}

// ---------------------------------------------------------------------------- resume verdicts

TEST_CASE("a client at the top is recovered with nothing to replay") {
  ResumeDecision d = decide_resume("e1", 10, make_read("e1", 10, 0, 0), 300);
  CHECK(d.recovered);
  CHECK(d.count == 0);
}

TEST_CASE("a client one behind is recovered with exactly the one entry") {
  HistoryRead r = make_read("e1", 10, 10, 10);
  ResumeDecision d = decide_resume("e1", 9, r, 300);
  REQUIRE(d.recovered);
  CHECK(d.count == 1);
  CHECK(r.entries[d.first].first == 10);
}

TEST_CASE("a client further behind gets every entry after its position, in order") {
  HistoryRead r = make_read("e1", 10, 3, 10);
  ResumeDecision d = decide_resume("e1", 5, r, 300);
  REQUIRE(d.recovered);
  CHECK(d.first == 3);
  CHECK(d.count == 5);
  CHECK(r.entries[d.first].first == 6);
}

TEST_CASE("a client from position 0 of its epoch is recovered from the first entry") {
  ResumeDecision d = decide_resume("e1", 0, make_read("e1", 3, 1, 3), 300);
  CHECK(d.recovered);
  CHECK(d.count == 3);
}

TEST_CASE("entries trimmed past the client's position mean resync trimmed") {
  CHECK(decide_resume("e1", 5, make_read("e1", 10, 7, 10), 300).reason == ResyncReason::trimmed);
  CHECK(decide_resume("e1", 5, make_read("e1", 10, 0, 0), 300).reason ==
        ResyncReason::trimmed); // the stream expired but its metadata did not
}

TEST_CASE("a hole inside the entries (an XDEL) means resync trimmed, not a partial replay") {
  HistoryRead r = make_read("e1", 10, 6, 10);
  r.entries.erase(r.entries.begin() + 2);
  ResumeDecision d = decide_resume("e1", 5, r, 300);
  CHECK_FALSE(d.recovered);
  CHECK(d.reason == ResyncReason::trimmed);
}

TEST_CASE("entries that stop before the top are never presented as complete") {
  ResumeDecision d = decide_resume("e1", 5, make_read("e1", 10, 6, 8), 300);
  CHECK_FALSE(d.recovered);
  CHECK(d.reason == ResyncReason::trimmed);
}

TEST_CASE("another epoch means resync epoch_changed, whatever the offsets") {
  CHECK(decide_resume("e0", 5, make_read("e1", 10, 1, 10), 300).reason ==
        ResyncReason::epoch_changed);
  CHECK(decide_resume("e0", 0, make_read("e1", 0, 0, 0), 300).reason ==
        ResyncReason::epoch_changed);
}

TEST_CASE("more missed than max_recover means resync too_many") {
  CHECK(decide_resume("e1", 5, make_read("e1", 306, 0, 0), 300).reason == ResyncReason::too_many);
  CHECK(decide_resume("e1", 5, make_read("e1", 305, 6, 305), 300).recovered);
}

TEST_CASE("a position beyond the top means resync bad_position") {
  CHECK(decide_resume("e1", 11, make_read("e1", 10, 1, 10), 300).reason ==
        ResyncReason::bad_position);
  CHECK(decide_resume("e1", UINT64_MAX, make_read("e1", 10, 1, 10), 300).reason ==
        ResyncReason::bad_position);
}
