#include "redis_link.h"

#include <doctest/doctest.h>
#include <hiredis/hiredis.h>

#include <string>
#include <vector>

using namespace sidecar;

namespace {

// Records what a RedisReplies hands over, as text: "reply SUBSCRIBE org:a <- subscribe", "message
// org:a hello". `reset_on` makes the sink reset the parser when a reply of that command arrives,
// as a link does when an AUTH is refused.
struct Recorder final : RedisReplies::Sink {
  RedisReplies *replies = nullptr;
  std::vector<std::string> seen;
  bool reset_on_auth = false;

  void on_reply(const RedisPending &cmd, const redisReply &r) override {
    std::string what;
    if (r.type == REDIS_REPLY_ERROR || r.type == REDIS_REPLY_STATUS)
      what = std::string(r.str, r.len);
    else if (r.type == REDIS_REPLY_ARRAY && r.elements > 0)
      what = std::string(r.element[0]->str, r.element[0]->len);
    else if (r.type == REDIS_REPLY_STRING)
      what = std::string(r.str, r.len);
    seen.push_back(std::string("reply ") + redis_cmd_name(cmd.cmd) +
                   (cmd.channel.empty() ? "" : " " + cmd.channel) + " <- " + what);
    if (reset_on_auth && cmd.cmd == RedisCmd::auth)
      replies->reset();
  }
  void on_message(std::string_view pattern, std::string_view channel,
                  std::string_view payload) override {
    seen.push_back((pattern.empty() ? "message " : "pmessage " + std::string(pattern) + " ") +
                   std::string(channel) + " " + std::string(payload));
  }
  void on_shard_unsubscribed(std::string_view channel) override {
    seen.push_back("shard lost " + std::string(channel));
  }
};

// Feeds `bytes` split at `cut` (and whole when cut is 0); returns feed()'s verdict on the last
// part (the first part's verdict must be "").
std::string feed_split(RedisReplies &r, Recorder &rec, const std::string &bytes, size_t cut) {
  if (cut > 0 && cut < bytes.size()) {
    std::string first = r.feed(bytes.data(), cut, rec);
    if (!first.empty())
      return first;
    return r.feed(bytes.data() + cut, bytes.size() - cut, rec);
  }
  return r.feed(bytes.data(), bytes.size(), rec);
}

const std::string kSubscribed = "*3\r\n$9\r\nsubscribe\r\n$5\r\norg:a\r\n:1\r\n";
const std::string kMessage = "*3\r\n$7\r\nmessage\r\n$5\r\norg:a\r\n$5\r\nhello\r\n";
const std::string kPong = "*2\r\n$4\r\npong\r\n$0\r\n\r\n";

} // namespace

TEST_CASE("a PING pending while subscribed gets the pong, not the message that arrives first") {
  const std::string bytes = kSubscribed + kMessage + kPong;
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    CAPTURE(cut);
    RedisReplies r(true);
    Recorder rec;
    r.expect(RedisCmd::subscribe, "org:a", 10);
    r.expect(RedisCmd::ping, {}, 20);
    CHECK(feed_split(r, rec, bytes, cut).empty());
    CHECK(rec.seen == std::vector<std::string>{"reply SUBSCRIBE org:a <- subscribe",
                                               "message org:a hello", "reply PING <- pong"});
    CHECK(r.pending() == 0);
  }
}

TEST_CASE("an error reply to SUBSCRIBE goes to that SUBSCRIBE and the next reply to the next") {
  const std::string bytes = "-NOPERM this user has no permissions\r\n" + kSubscribed + kMessage;
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    CAPTURE(cut);
    RedisReplies r(true);
    Recorder rec;
    r.expect(RedisCmd::subscribe, "org:bad", 1);
    r.expect(RedisCmd::subscribe, "org:a", 2);
    CHECK(feed_split(r, rec, bytes, cut).empty());
    CHECK(rec.seen ==
          std::vector<std::string>{"reply SUBSCRIBE org:bad <- NOPERM this user has no permissions",
                                   "reply SUBSCRIBE org:a <- subscribe", "message org:a hello"});
  }
}

TEST_CASE("pmessage and smessage are pushes; the channel is the one published to, a pmessage "
          "names its pattern") {
  RedisReplies r(true);
  Recorder rec;
  std::string bytes = "*4\r\n$8\r\npmessage\r\n$5\r\norg:*\r\n$5\r\norg:b\r\n$2\r\nhi\r\n"
                      "*3\r\n$8\r\nsmessage\r\n$5\r\norg:c\r\n$0\r\n\r\n";
  CHECK(r.feed(bytes.data(), bytes.size(), rec).empty());
  CHECK(rec.seen == std::vector<std::string>{"pmessage org:* org:b hi", "message org:c "});
}

TEST_CASE("a PONG outside subscribed mode and an XADD id are replies in order") {
  RedisReplies r(false);
  Recorder rec;
  r.expect(RedisCmd::ping, {}, 1);
  r.expect(RedisCmd::xadd, {}, 2);
  std::string bytes = "+PONG\r\n$15\r\n1700000000000-0\r\n";
  CHECK(r.feed(bytes.data(), bytes.size(), rec).empty());
  CHECK(rec.seen ==
        std::vector<std::string>{"reply PING <- PONG", "reply XADD <- 1700000000000-0"});
}

TEST_CASE("on the command link a message-shaped array is a reply, never a push") {
  RedisReplies r(false);
  Recorder rec;
  r.expect(RedisCmd::xadd, {}, 1);
  CHECK(r.feed(kMessage.data(), kMessage.size(), rec).empty());
  CHECK(rec.seen == std::vector<std::string>{"reply XADD <- message"});
}

TEST_CASE("a reply that no command asked for ends the connection") {
  RedisReplies r(true);
  Recorder rec;
  std::string bytes = "-ERR surprise\r\n";
  CHECK(r.feed(bytes.data(), bytes.size(), rec) == "a reply that no command asked for");
  CHECK(rec.seen.empty());
}

TEST_CASE("bytes that are not RESP end the connection") {
  RedisReplies r(true);
  Recorder rec;
  r.expect(RedisCmd::ping, {}, 1);
  std::string bytes = "?what\r\n";
  CHECK(r.feed(bytes.data(), bytes.size(), rec).starts_with("not RESP"));
}

TEST_CASE("an array count no reply of ours could have ends the connection, allocating nothing") {
  // hiredis 0.14 would allocate the element table for the declared count up front: 16 GiB here.
  for (bool subscriber : {true, false}) {
    RedisReplies r(subscriber);
    Recorder rec;
    r.expect(RedisCmd::ping, {}, 1);
    std::string bytes = "*2147483647\r\n";
    CHECK(r.feed(bytes.data(), bytes.size(), rec).starts_with("not RESP"));
    CHECK(rec.seen.empty());
  }
  // A count within the cap is parsed as usual.
  RedisReplies r(false);
  Recorder rec;
  r.expect(RedisCmd::ping, {}, 1);
  std::string bytes = "*2\r\n$4\r\npong\r\n$0\r\n\r\n";
  CHECK(r.feed(bytes.data(), bytes.size(), rec).empty());
  CHECK(rec.seen == std::vector<std::string>{"reply PING <- pong"});
}

TEST_CASE("a message of the wrong shape ends the connection") {
  RedisReplies r(true);
  Recorder rec;
  std::string bytes = "*3\r\n$7\r\nmessage\r\n$5\r\norg:a\r\n:5\r\n";
  CHECK(r.feed(bytes.data(), bytes.size(), rec) == "a pub/sub message of the wrong shape");
}

TEST_CASE("the oldest pending command sets the deadline until its reply comes") {
  RedisReplies r(true);
  Recorder rec;
  CHECK(r.oldest_sent_ms() == 0);
  r.expect(RedisCmd::subscribe, "org:a", 100);
  r.expect(RedisCmd::ping, {}, 250);
  CHECK(r.oldest_sent_ms() == 100);
  CHECK(r.oldest_cmd() == RedisCmd::subscribe);
  // Pushes do not count as replies: the SUBSCRIBE is still the oldest after a message.
  CHECK(r.feed(kMessage.data(), kMessage.size(), rec).empty());
  CHECK(r.oldest_sent_ms() == 100);
  CHECK(r.feed(kSubscribed.data(), kSubscribed.size(), rec).empty());
  CHECK(r.oldest_sent_ms() == 250);
  CHECK(r.oldest_cmd() == RedisCmd::ping);
  CHECK(r.feed(kPong.data(), kPong.size(), rec).empty());
  CHECK(r.oldest_sent_ms() == 0);
}

TEST_CASE("a sink that resets the parser stops the dispatch of the old connection's bytes") {
  RedisReplies r(true);
  Recorder rec;
  rec.replies = &r;
  rec.reset_on_auth = true;
  r.expect(RedisCmd::auth, {}, 1);
  r.expect(RedisCmd::subscribe, "org:a", 2);
  std::string bytes = "-WRONGPASS invalid username-password pair\r\n" + kSubscribed + kMessage;
  CHECK(r.feed(bytes.data(), bytes.size(), rec).empty());
  CHECK(rec.seen ==
        std::vector<std::string>{"reply AUTH <- WRONGPASS invalid username-password pair"});
  CHECK(r.pending() == 0);
  // The parser is fresh: a new connection's bytes start clean.
  r.expect(RedisCmd::subscribe, "org:a", 3);
  CHECK(r.feed(kSubscribed.data(), kSubscribed.size(), rec).empty());
  CHECK(rec.seen.back() == "reply SUBSCRIBE org:a <- subscribe");
}

TEST_CASE("backoff doubles from reconnect_initial_ms up to reconnect_max_ms, within +-20 %") {
  RedisConfig cfg;
  cfg.reconnect_initial_ms = 100;
  cfg.reconnect_max_ms = 1000;
  const uint64_t want[] = {100, 200, 400, 800, 1000, 1000};
  for (uint32_t failures = 1; failures <= 6; ++failures) {
    for (int i = 0; i < 50; ++i) {
      uint64_t d = redis_backoff_ms(cfg, failures);
      CHECK(d >= want[failures - 1] * 8 / 10);
      CHECK(d <= want[failures - 1] * 12 / 10);
    }
  }
}

TEST_CASE("each reply comes back with the tag its command was sent with") {
  RedisReplies r(false);
  std::vector<uint64_t> tags;
  struct Tags final : RedisReplies::Sink {
    std::vector<uint64_t> *tags;
    void on_reply(const RedisPending &cmd, const redisReply &) override {
      tags->push_back(cmd.tag);
    }
    void on_message(std::string_view, std::string_view, std::string_view) override {}
  } sink;
  sink.tags = &tags;
  r.expect(RedisCmd::function_load, {}, 1);
  r.expect(RedisCmd::fcall, {}, 2, 7);
  r.expect(RedisCmd::fcall, {}, 3, 8);
  std::string bytes = "$7\r\nsidecar\r\n-ERR Function not found\r\n*2\r\n$5\r\nepoch\r\n:0\r\n";
  CHECK(r.feed(bytes.data(), bytes.size(), sink).empty());
  CHECK(tags == std::vector<uint64_t>{0, 7, 8});
}

TEST_CASE("a PSUBSCRIBE reply answers its command; a pmessage whose pattern is not a string is "
          "malformed") {
  RedisReplies r(true);
  Recorder rec;
  r.expect(RedisCmd::psubscribe, "conn:ab-*", 1);
  std::string bytes = "*3\r\n$10\r\npsubscribe\r\n$9\r\nconn:ab-*\r\n:2\r\n"
                      "*4\r\n$8\r\npmessage\r\n$9\r\nconn:ab-*\r\n$9\r\nconn:ab-7\r\n$2\r\nhi\r\n";
  CHECK(r.feed(bytes.data(), bytes.size(), rec).empty());
  CHECK(rec.seen == std::vector<std::string>{"reply PSUBSCRIBE conn:ab-* <- psubscribe",
                                             "pmessage conn:ab-* conn:ab-7 hi"});
  RedisReplies bad(true);
  std::string odd = "*4\r\n$8\r\npmessage\r\n:1\r\n$9\r\nconn:ab-7\r\n$2\r\nhi\r\n";
  CHECK(bad.feed(odd.data(), odd.size(), rec) == "a pub/sub message of the wrong shape");
}

TEST_CASE("a sunsubscribe push for a moved slot is told apart from the reply to our SUNSUBSCRIBE") {
  const std::string push_b = "*3\r\n$12\r\nsunsubscribe\r\n$1\r\nb\r\n:1\r\n";
  const std::string reply_a = "*3\r\n$12\r\nsunsubscribe\r\n$1\r\na\r\n:0\r\n";
  const std::string bytes = push_b + reply_a + kPong;
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    RedisReplies r(true);
    Recorder rec;
    r.expect(RedisCmd::unsubscribe, "a", 1);
    r.expect(RedisCmd::ping, {}, 1);
    REQUIRE(feed_split(r, rec, bytes, cut) == "");
    CHECK(rec.seen == std::vector<std::string>{"shard lost b",
                                               "reply UNSUBSCRIBE a <- sunsubscribe",
                                               "reply PING <- pong"});
    CHECK(r.pending() == 0);
  }
}

TEST_CASE("a sunsubscribe push with nothing pending is a push, not a reply nobody asked for") {
  const std::string push = "*3\r\n$12\r\nsunsubscribe\r\n$5\r\norg:a\r\n:0\r\n";
  RedisReplies r(true);
  Recorder rec;
  CHECK(r.feed(push.data(), push.size(), rec) == "");
  CHECK(rec.seen == std::vector<std::string>{"shard lost org:a"});
}

TEST_CASE("a SUBSCRIBE of several channels: each reply goes to its channel, an error to all") {
  RedisReplies r(true);
  Recorder rec;
  // One command naming org:a, org:b, org:c (RedisLink::send_batch), then a PING.
  for (uint32_t i = 0; i < 3; ++i)
    r.expect(RedisCmd::subscribe, std::string("org:") + char('a' + i), 0, 0, 2 - i, true);
  r.expect(RedisCmd::ping, "", 0);
  std::string ok = "*3\r\n$9\r\nsubscribe\r\n$5\r\norg:a\r\n:1\r\n"
                   "*3\r\n$9\r\nsubscribe\r\n$5\r\norg:b\r\n:2\r\n"
                   "*3\r\n$9\r\nsubscribe\r\n$5\r\norg:c\r\n:3\r\n" +
                   kPong;
  for (size_t cut : {size_t{0}, size_t{7}, size_t{40}, ok.size() - 3}) {
    RedisReplies fresh(true);
    Recorder seen;
    for (uint32_t i = 0; i < 3; ++i)
      fresh.expect(RedisCmd::subscribe, std::string("org:") + char('a' + i), 0, 0, 2 - i, true);
    fresh.expect(RedisCmd::ping, "", 0);
    CHECK(feed_split(fresh, seen, ok, cut) == "");
    CHECK(seen.seen == std::vector<std::string>{"reply SUBSCRIBE org:a <- subscribe",
                                                "reply SUBSCRIBE org:b <- subscribe",
                                                "reply SUBSCRIBE org:c <- subscribe",
                                                "reply PING <- pong"});
  }
  // Refused whole: one error reply, which every channel of the command gets; the PING's own
  // reply still goes to the PING.
  std::string refused =
      "-NOPERM this user has no permissions to access the 'org:b' channel\r\n" + kPong;
  CHECK(r.feed(refused.data(), refused.size(), rec) == "");
  REQUIRE(rec.seen.size() == 4);
  for (int i = 0; i < 3; ++i) {
    CHECK(rec.seen[i] == std::string("reply SUBSCRIBE org:") + char('a' + i) +
                             " <- NOPERM this user has no permissions to access the 'org:b' "
                             "channel");
  }
  CHECK(rec.seen[3] == "reply PING <- pong");
  CHECK(r.pending() == 0);
}
