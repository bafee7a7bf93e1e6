// A Session with no Server and no socket: its SessionEnv is built here from a loop, a Config,
// Metrics, Rooms over a fake bus, a FlushList and a fake owner. Nothing in these tests writes to
// the socket (the session is never accepted), so what is checked is what the session queues,
// counts and asks of its owner.
#include "session.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "client_messages.h"
#include "clock.h"
#include "config.h"
#include "metrics.h"
#include "shared_frame.h"

using namespace sidecar;

namespace {

struct NullBus final : Subscriber {
  void subscribe(const std::string &) override {}
  void unsubscribe(const std::string &) override {}
};

struct FakeOwner final : SessionOwner {
  int requests = 0, leaving = 0, closed = 0;
  void on_request(Session &, const HttpRequest &) override { ++requests; }
  bool forward_inbound(Session &, std::string_view) override { return true; }
  void session_leaving(Session &) noexcept override { ++leaving; }
  void session_closed(Session &) override { ++closed; }
};

struct World {
  uv_loop_t loop{};
  Config cfg;
  Metrics metrics;
  NullBus bus;
  Rooms rooms{bus, metrics.publish};
  FlushList flush;
  FakeOwner owner;
  FrameRef ping{SharedFrame::make(Opcode::ping, {})};
  char buf[64]{};
  SessionEnv env{&loop, cfg, metrics, rooms, flush, owner, ping.get(), buf, sizeof buf};

  World() { REQUIRE(uv_loop_init(&loop) == 0); }
  ~World() { uv_loop_close(&loop); }

  // An upgraded session in room "org:acme", with what the upgrade queued already counted.
  Session &open(Session &s, int64_t token_exp = 0) {
    UpgradeGrant g;
    g.org = "acme";
    g.key = "dGhlIHNhbXBsZSBub25jZQ==";
    g.room_channel = "org:acme";
    g.token_exp = token_exp;
    s.upgrade(std::move(g), welcome_message("t-1", "acme", "", 25000));
    REQUIRE(s.is_open());
    return s;
  }
};

// The size of a server text frame of `payload` (payloads here are under 126 bytes).
uint64_t text_frame_size(const std::string &payload) { return 2 + payload.size(); }

} // namespace

TEST_CASE("a published message is queued to the session and counted, with no Server") {
  World w;
  Session s(w.env, 1);
  w.open(s);
  uint64_t before = s.queued_bytes();
  CHECK(w.rooms.publish("org:acme", "hello") == 1);
  CHECK(s.messages_out() == 1);
  CHECK(s.queued_bytes() == before + text_frame_size("hello"));
}

TEST_CASE("a session over its byte budget is closed as a slow consumer when it flushes") {
  World w;
  w.cfg.limits.max_outbound_bytes = 400;
  Session s(w.env, 2);
  w.open(s);
  w.rooms.publish("org:acme", std::string(300, 'x')); // over budget with the upgrade queued
  CHECK(s.messages_out() == 0);
  CHECK(w.metrics.slow_consumer_closes == 0); // counted in flush, outside the fan-out
  s.flush();
  CHECK(w.metrics.slow_consumer_closes == 1);
  CHECK(s.phase() == Session::Phase::closing);
  CHECK(w.owner.leaving == 1);
  CHECK(s.last_error() == "slow consumer");
}

TEST_CASE("a token about to expire is warned once, then closed with 4001 at expiry") {
  World w;
  w.cfg.auth.expiry_warning_s = 30;
  w.cfg.auth.jwt.leeway_s = 0;
  Session s(w.env, 3);
  int64_t exp = unix_now() + 10;
  w.open(s, exp);
  uint64_t before = s.queued_bytes();
  s.tick(uv_now(&w.loop));
  CHECK(s.queued_bytes() == before + text_frame_size(token_expiring_message(exp)));
  s.tick(uv_now(&w.loop));
  CHECK(s.queued_bytes() == before + text_frame_size(token_expiring_message(exp))); // once
  CHECK(s.is_open());

  Session late(w.env, 4);
  w.open(late, unix_now() - 1);
  before = late.queued_bytes();
  late.tick(uv_now(&w.loop));
  CHECK(late.phase() == Session::Phase::closing);
  // A close frame: 2-byte header, the code 4001, then the reason.
  CHECK(late.queued_bytes() == before + 2 + 2 + std::string("token expired").size());
}

TEST_CASE("with auth.on_expiry keep, an expired token only gets its warning") {
  World w;
  w.cfg.auth.on_expiry = AuthConfig::Expiry::keep;
  w.cfg.auth.jwt.leeway_s = 0;
  Session s(w.env, 5);
  int64_t exp = unix_now() - 1;
  w.open(s, exp);
  uint64_t before = s.queued_bytes();
  s.tick(uv_now(&w.loop));
  CHECK(s.is_open());
  CHECK(s.queued_bytes() == before + text_frame_size(token_expiring_message(exp)));
}
