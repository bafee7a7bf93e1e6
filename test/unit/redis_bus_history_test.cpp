// RedisBus's history side against a real redis-server that each test starts on a free loopback
// port: the Function library loaded on every connect, coalesced reads, cancelled waiters, every
// failure answered, and the subscriber events rooms start their reads from. redis-server must be
// on PATH; a test that cannot start it fails rather than skips.
#include "redis_bus.h"

#include <doctest/doctest.h>
#include <hiredis/hiredis.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

using namespace sidecar;

namespace {

uint16_t free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

struct ReplyFree {
  void operator()(redisReply *r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyFree>;

// A private redis-server without persistence, and a blocking admin connection to it.
class RedisProcess {
public:
  RedisProcess() : port_(free_port()) { start(); }
  ~RedisProcess() { kill(); }

  void start() {
    std::string port = std::to_string(port_);
    pid_ = fork();
    if (pid_ == 0) {
      int devnull = open("/dev/null", O_WRONLY);
      dup2(devnull, 1);
      execlp("redis-server", "redis-server", "--port", port.c_str(), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--loglevel", "warning", (char *)nullptr);
      _exit(127);
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      timeval tv{1, 0};
      admin_ = redisConnectWithTimeout("127.0.0.1", port_, tv);
      if (admin_ != nullptr && admin_->err == 0 && text({"PING"}) == "PONG")
        return;
      if (admin_ != nullptr)
        redisFree(admin_);
      admin_ = nullptr;
      usleep(20'000); // a process starting: there is no event to wait on
    }
    FAIL("redis-server did not start on port " << port_ << " (is it on PATH?)");
  }

  void kill() {
    if (admin_ != nullptr)
      redisFree(admin_);
    admin_ = nullptr;
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    pid_ = 0;
  }

  uint16_t port() const { return port_; }

  Reply command(const std::vector<std::string> &args) {
    std::vector<const char *> argv;
    std::vector<size_t> lens;
    for (const auto &a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    REQUIRE(admin_ != nullptr);
    return Reply(static_cast<redisReply *>(
        redisCommandArgv(admin_, static_cast<int>(argv.size()), argv.data(), lens.data())));
  }
  // The reply as text: a status, string or error's text, an integer in decimal.
  std::string text(const std::vector<std::string> &args) {
    Reply r = command(args);
    if (!r)
      return "<no reply>";
    if (r->type == REDIS_REPLY_INTEGER)
      return std::to_string(r->integer);
    if (r->str != nullptr)
      return std::string(r->str, r->len);
    if (r->type == REDIS_REPLY_ARRAY)
      return "array of " + std::to_string(r->elements);
    return "";
  }
  // How many times Redis ran `cmd` since the last CONFIG RESETSTAT (INFO commandstats).
  long calls(const std::string &cmd) {
    std::string info = text({"INFO", "commandstats"});
    std::string key = "cmdstat_" + cmd + ":calls=";
    size_t at = info.find(key);
    return at == std::string::npos ? 0 : std::stol(info.substr(at + key.size()));
  }
  bool library_loaded() {
    Reply r = command({"FUNCTION", "LIST", "LIBRARYNAME", "sidecar"});
    return r && r->type == REDIS_REPLY_ARRAY && r->elements == 1;
  }

private:
  uint16_t port_;
  pid_t pid_ = 0;
  redisContext *admin_ = nullptr;
};

struct Events final : RedisSink {
  std::vector<std::string> seen; // "subscribed org:a", "reconnected", "up", "down"
  void on_redis_message(std::string_view, std::string_view) override {}
  void on_redis_state(bool up) override { seen.push_back(up ? "up" : "down"); }
  void on_subscribed(std::string_view channel) override {
    seen.push_back("subscribed " + std::string(channel));
  }
  void on_subscriber_reconnected() override { seen.push_back("reconnected"); }
  size_t count(const std::string &what) const {
    return static_cast<size_t>(std::count(seen.begin(), seen.end(), what));
  }
};

const std::vector<HistoryConfig> kHistory = {{"org:{org}", 100, 600, 50}};

// One bus on its own loop, pointed at `port`.
struct Bus {
  uv_loop_t loop{};
  Events events;
  RedisConfig cfg;
  std::unique_ptr<RedisBus> bus;

  explicit Bus(uint16_t port, std::vector<HistoryConfig> history = kHistory, std::string user = {},
               std::string password = {}) {
    uv_loop_init(&loop);
    cfg.host = "127.0.0.1";
    cfg.port = port;
    cfg.username = std::move(user);
    cfg.password = std::move(password);
    cfg.connect_timeout_ms = 1000;
    cfg.reconnect_initial_ms = 20;
    cfg.reconnect_max_ms = 200;
    cfg.ping_interval_ms = 200;
    cfg.reply_timeout_ms = 1000;
    bus = std::make_unique<RedisBus>(&loop, cfg, events, std::move(history));
    REQUIRE(bus->start() == 0);
  }
  ~Bus() {
    bus->stop();
    uv_run(&loop, UV_RUN_DEFAULT);
    bus.reset();
    uv_loop_close(&loop);
  }

  // Runs the loop until pred() holds or timeout_ms pass; a 5 ms timer keeps it turning.
  template <typename Pred> bool run_until(Pred pred, int timeout_ms = 5000) {
    uv_timer_t wake;
    uv_timer_init(&loop, &wake);
    uv_timer_start(
        &wake, [](uv_timer_t *) {}, 5, 5);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    bool ok = false;
    while (!(ok = pred()) && std::chrono::steady_clock::now() < deadline)
      uv_run(&loop, UV_RUN_ONCE);
    uv_close(reinterpret_cast<uv_handle_t *>(&wake), nullptr);
    uv_run(&loop, UV_RUN_NOWAIT);
    return ok;
  }
};

// What one waiter was told.
struct Answer {
  bool called = false;
  HistoryReadResult result;
};

HistoryReadCallback into(std::vector<std::string> &order, const std::string &name, Answer &a) {
  return [&order, name, &a](const HistoryReadResult &r) {
    order.push_back(name);
    a.called = true;
    a.result = r;
  };
}

} // namespace

TEST_CASE("the history library is loaded on connect and again after Redis lost it") {
  RedisProcess redis;
  Bus b(redis.port());
  REQUIRE(b.run_until([&] { return b.bus->history_ready(); }));
  CHECK(redis.library_loaded());
  CHECK(b.bus->history_error().empty());

  // FUNCTION FLUSH and a dropped command link: the new connection loads it again.
  CHECK(redis.text({"FUNCTION", "FLUSH"}) == "OK");
  CHECK(redis.text({"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"}) != "0");
  REQUIRE(b.run_until([&] { return b.bus->function_loads() == 2 && b.bus->history_ready(); }));
  CHECK(redis.library_loaded());

  // A restarted Redis (no persistence: it comes back empty) gets the library on reconnect.
  redis.kill();
  REQUIRE(b.run_until([&] { return !b.bus->history_ready(); }));
  redis.start();
  REQUIRE(b.run_until([&] { return b.bus->function_loads() == 3 && b.bus->history_ready(); }));
  CHECK(redis.library_loaded());
  CHECK(b.bus->function_load_failures() == 0);
}

TEST_CASE("with history off no FUNCTION LOAD is sent and a read is refused, not sent") {
  RedisProcess redis;
  Bus b(redis.port(), {});
  REQUIRE(b.run_until([&] { return b.bus->command_connected(); }));
  CHECK_FALSE(b.bus->history_enabled());
  CHECK_FALSE(b.bus->history_ready());
  std::vector<std::string> order;
  Answer a;
  b.bus->read_history("org:a", 0, 10, into(order, "a", a));
  CHECK_FALSE(a.called); // answers always come from the loop, never from read_history
  REQUIRE(b.run_until([&] { return a.called; }));
  CHECK(a.result.error.find("not configured") != std::string::npos);
  CHECK(redis.calls("function|load") == 0);
  CHECK(redis.calls("fcall") == 0);
  CHECK_FALSE(redis.library_loaded());
  CHECK(b.bus->reads_sent() == 0);
}

TEST_CASE("two reads of one key share one FCALL and are answered in request order") {
  RedisProcess redis;
  Bus b(redis.port());
  REQUIRE(b.run_until([&] { return b.bus->history_ready(); }));
  for (const char *p : {"one", "two", "three"})
    CHECK(redis.text({"FCALL", "sidecar_publish", "1", "org:a", p}) != "");
  CHECK(redis.text({"CONFIG", "RESETSTAT"}) == "OK");

  std::vector<std::string> order;
  Answer a, c, other;
  b.bus->read_history("org:a", 1, 10, into(order, "a", a));
  b.bus->read_history("org:b", 0, 10, into(order, "other", other));
  b.bus->read_history("org:a", 1, 10, into(order, "c", c));
  REQUIRE(b.run_until([&] { return a.called && c.called && other.called; }));
  CHECK(order == std::vector<std::string>{"a", "c", "other"});
  REQUIRE(a.result.error.empty());
  CHECK(a.result.read.top == 3);
  REQUIRE(a.result.read.entries.size() == 2);
  CHECK(a.result.read.entries[0] == std::pair<uint64_t, std::string>{2, "two"});
  CHECK(a.result.read.entries[1] == std::pair<uint64_t, std::string>{3, "three"});
  CHECK(c.result.read.epoch == a.result.read.epoch);
  CHECK(c.result.read.entries == a.result.read.entries);
  CHECK(other.result.error.empty());
  CHECK(other.result.read.top == 0);
  CHECK(b.bus->reads_sent() == 2);
  CHECK(b.bus->reads_coalesced() == 1);
  CHECK(redis.calls("fcall") == 2);
}

TEST_CASE("a cancelled waiter is never called; the others of its read are") {
  RedisProcess redis;
  Bus b(redis.port());
  REQUIRE(b.run_until([&] { return b.bus->history_ready(); }));
  std::vector<std::string> order;
  Answer a, gone, c;
  b.bus->read_history("org:a", 0, 10, into(order, "a", a));
  HistoryReadToken t = b.bus->read_history("org:a", 0, 10, into(order, "gone", gone));
  b.bus->read_history("org:a", 0, 10, into(order, "c", c));
  b.bus->cancel_history_read(t);
  b.bus->cancel_history_read(t);      // twice is harmless
  b.bus->cancel_history_read(999999); // so is a token that never was
  REQUIRE(b.run_until([&] { return a.called && c.called; }));
  CHECK(order == std::vector<std::string>{"a", "c"});
  CHECK_FALSE(gone.called);

  // A read whose every waiter left is not sent at all.
  Answer lone;
  CHECK(redis.text({"CONFIG", "RESETSTAT"}) == "OK");
  b.bus->cancel_history_read(b.bus->read_history("org:z", 0, 1, into(order, "lone", lone)));
  Answer after;
  b.bus->read_history("org:y", 0, 1, into(order, "after", after));
  REQUIRE(b.run_until([&] { return after.called; }));
  CHECK_FALSE(lone.called);
  CHECK(redis.calls("fcall") == 1);
}

TEST_CASE("a waiter may ask again from inside its callback; that read is a new FCALL") {
  RedisProcess redis;
  Bus b(redis.port());
  REQUIRE(b.run_until([&] { return b.bus->history_ready(); }));
  std::vector<std::string> order;
  Answer second;
  Answer first;
  b.bus->read_history("org:a", 0, 5, [&](const HistoryReadResult &r) {
    first.called = true;
    first.result = r;
    b.bus->read_history("org:a", 0, 5, into(order, "second", second));
  });
  REQUIRE(b.run_until([&] { return second.called; }));
  CHECK(second.result.error.empty());
  CHECK(b.bus->reads_sent() == 2);
  CHECK(b.bus->reads_coalesced() == 0);
}

TEST_CASE("a dropped command link fails every waiter of a read in flight, with the reason") {
  RedisProcess redis;
  Bus b(redis.port());
  REQUIRE(b.run_until([&] { return b.bus->history_ready(); }));
  // sidecar_read may write (it makes a missing epoch), so a WRITE pause holds it unanswered
  // while CLIENT KILL still runs.
  CHECK(redis.text({"CLIENT", "PAUSE", "3000", "WRITE"}) == "OK");
  std::vector<std::string> order;
  Answer a, c;
  b.bus->read_history("org:a", 0, 10, into(order, "a", a));
  b.bus->read_history("org:a", 0, 10, into(order, "c", c));
  REQUIRE(b.run_until([&] { return b.bus->reads_sent() == 1; }));
  CHECK(redis.text({"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"}) != "0");
  REQUIRE(b.run_until([&] { return a.called && c.called; }));
  CHECK(order == std::vector<std::string>{"a", "c"});
  CAPTURE(a.result.error);
  CHECK(a.result.error.find("command link dropped with the read in flight") != std::string::npos);
  CHECK(c.result.error == a.result.error);
  CHECK(redis.text({"CLIENT", "UNPAUSE"}) == "OK");
}

TEST_CASE("an unanswered FCALL fails its waiters once redis.reply_timeout_ms has passed") {
  RedisProcess redis;
  Bus b(redis.port());
  REQUIRE(b.run_until([&] { return b.bus->history_ready(); }));
  CHECK(redis.text({"CLIENT", "PAUSE", "4000", "WRITE"}) == "OK");
  std::vector<std::string> order;
  Answer a;
  b.bus->read_history("org:a", 0, 10, into(order, "a", a));
  REQUIRE(b.run_until([&] { return a.called; }, 4000));
  CHECK(a.result.error.find("no reply from Redis to FCALL") != std::string::npos);
  CHECK(redis.text({"CLIENT", "UNPAUSE"}) == "OK");
}

TEST_CASE("an error reply fails the waiters with Redis's reason, and the library is reloaded") {
  RedisProcess redis;
  Bus b(redis.port());
  REQUIRE(b.run_until([&] { return b.bus->history_ready(); }));
  CHECK(redis.text({"FUNCTION", "FLUSH"}) == "OK");
  std::vector<std::string> order;
  Answer a, c;
  b.bus->read_history("org:a", 0, 10, into(order, "a", a));
  b.bus->read_history("org:a", 0, 10, into(order, "c", c));
  REQUIRE(b.run_until([&] { return a.called && c.called; }));
  CHECK(a.result.error.find("Function not found") != std::string::npos);
  CHECK(c.result.error == a.result.error);

  // The bus noticed that the library is gone and loads it again on the same connection.
  REQUIRE(b.run_until([&] { return b.bus->history_ready() && redis.library_loaded(); }));
  Answer again;
  b.bus->read_history("org:a", 0, 10, into(order, "again", again));
  REQUIRE(b.run_until([&] { return again.called; }));
  CHECK(again.result.error.empty());
}

TEST_CASE("a channel no template covers, hostile bytes and all, is an error answer") {
  RedisProcess redis;
  Bus b(redis.port());
  REQUIRE(b.run_until([&] { return b.bus->history_ready(); }));
  std::vector<std::string> order;
  Answer a;
  b.bus->read_history(std::string("nope\r\n*1\r\n$4\r\nPING\0x", 20), 0, 10, into(order, "a", a));
  REQUIRE(b.run_until([&] { return a.called; }));
  CHECK(a.result.error.find("no history configured") != std::string::npos);
  CHECK(b.bus->command_connected());
  CHECK(b.bus->history_ready());
}

TEST_CASE("a user without +function cannot load the library: reported, retried, not fatal") {
  RedisProcess redis;
  CHECK(redis.text({"ACL", "SETUSER", "sc", "reset", "on", ">pw", "~*", "&*", "+@all",
                    "-function"}) == "OK");
  Bus b(redis.port(), kHistory, "sc", "pw");
  REQUIRE(b.run_until([&] { return b.bus->function_load_failures() >= 1; }));
  CHECK_FALSE(b.bus->history_ready());
  CHECK(b.bus->history_error().find("NOPERM") != std::string::npos);
  CHECK(b.bus->command_connected());
  CHECK(b.bus->connected());

  std::vector<std::string> order;
  Answer a;
  b.bus->read_history("org:a", 0, 10, into(order, "a", a));
  REQUIRE(b.run_until([&] { return a.called; }));
  CHECK(a.result.error.find("NOPERM") != std::string::npos);

  // Retries follow the backoff (20..200 ms here), not a tight loop.
  uint64_t failures = b.bus->function_load_failures();
  b.run_until([] { return false; }, 500);
  CHECK(b.bus->function_load_failures() - failures <= 8);

  // Once the ACL allows it, a retry on the same connection loads the library.
  CHECK(redis.text({"ACL", "SETUSER", "sc", "+function"}) == "OK");
  REQUIRE(b.run_until([&] { return b.bus->history_ready(); }));
  CHECK(b.bus->history_error().empty());
  CHECK(redis.library_loaded());
}

TEST_CASE("a read asked while the command link is down waits for it and the library") {
  RedisProcess redis;
  Bus b(redis.port());
  REQUIRE(b.run_until([&] { return b.bus->history_ready(); }));
  redis.kill();
  REQUIRE(b.run_until([&] { return !b.bus->command_connected(); }));
  std::vector<std::string> order;
  Answer a;
  b.bus->read_history("org:a", 0, 10, into(order, "a", a));
  redis.start();
  REQUIRE(b.run_until([&] { return a.called; }));
  CHECK(a.result.error.empty());
  CHECK(a.result.read.top == 0);
}

TEST_CASE("a read waits for the command link no longer than redis.reply_timeout_ms") {
  Bus b(free_port()); // nothing listens there
  std::vector<std::string> order;
  Answer a;
  b.bus->read_history("org:a", 0, 10, into(order, "a", a));
  REQUIRE(b.run_until([&] { return a.called; }, 3000));
  CHECK(a.result.error.find("command link") != std::string::npos);
}

TEST_CASE("distinct reads beyond the limit are refused as failed") {
  Bus b(free_port()); // nothing listens: every read waits, so none leaves the table
  std::vector<std::string> order;
  std::vector<Answer> answers(kMaxHistoryReadsInFlight + 2);
  for (size_t i = 0; i < answers.size(); ++i)
    b.bus->read_history("org:a", i, 10, into(order, std::to_string(i), answers[i]));
  // A waiter joining a read already in the table is not a new read, so it is still taken.
  Answer joined;
  b.bus->read_history("org:a", 0, 10, into(order, "joined", joined));
  REQUIRE(b.run_until([&] { return answers.back().called; }, 500));
  CHECK(answers.back().result.error.find("too many") != std::string::npos);
  CHECK(answers[answers.size() - 2].called);
  CHECK_FALSE(answers[0].called);
  CHECK_FALSE(joined.called);
}

TEST_CASE("SUBSCRIBE confirmations and the subscriber's return are told to the sink in order") {
  RedisProcess redis;
  Bus b(redis.port(), {});
  REQUIRE(b.run_until([&] { return b.bus->connected(); }));
  CHECK(b.events.count("reconnected") == 0); // the first connect is not a return
  b.bus->subscribe("org:a");
  REQUIRE(b.run_until([&] { return b.events.count("subscribed org:a") == 1; }));
  CHECK(b.bus->subscribed("org:a"));

  CHECK(redis.text({"CLIENT", "KILL", "TYPE", "pubsub"}) != "0");
  REQUIRE(b.run_until([&] { return b.events.count("subscribed org:a") == 2; }));
  // Down, then back (before any confirmation of the new connection), then the channel again.
  auto at = [&](const std::string &what) {
    return std::find(b.events.seen.rbegin(), b.events.seen.rend(), what) - b.events.seen.rbegin();
  };
  CHECK(b.events.count("reconnected") == 1);
  CHECK(at("down") > at("reconnected"));
  CHECK(at("reconnected") > at("subscribed org:a"));
  CHECK(b.events.seen.back() == "subscribed org:a");
}

TEST_CASE("a waiter that asks while its key's FCALL is on the wire gets one written after it") {
  // Joining that FCALL could answer from a moment before the waiter started holding live
  // messages; the bus writes a second one for it (and for whoever joins it) once the first is
  // answered, so one key has at most one FCALL on the wire.
  RedisProcess redis;
  Bus b(redis.port());
  REQUIRE(b.run_until([&] { return b.bus->history_ready(); }));
  CHECK(redis.text({"CLIENT", "PAUSE", "300", "WRITE"}) == "OK");
  std::vector<std::string> order;
  Answer a, late, later;
  b.bus->read_history("org:a", 0, 10, into(order, "a", a));
  REQUIRE(b.run_until([&] { return b.bus->reads_sent() == 1; }));
  b.bus->read_history("org:a", 0, 10, into(order, "late", late));
  b.run_until([] { return false; }, 50);
  b.bus->read_history("org:a", 0, 10, into(order, "later", later));
  CHECK(b.bus->reads_sent() == 1);
  REQUIRE(b.run_until([&] { return late.called && later.called; }));
  CHECK(order == std::vector<std::string>{"a", "late", "later"});
  CHECK(b.bus->reads_sent() == 2);
  CHECK(b.bus->reads_coalesced() == 1);
  CHECK(late.result.error.empty());
}

TEST_CASE("a shared waiter joins the FCALL already on the wire and gets its answer") {
  // read_history_shared: for callers that check the answer's top themselves (a resuming
  // session), so a storm arriving over several loop turns costs one FCALL per key.
  RedisProcess redis;
  Bus b(redis.port());
  REQUIRE(b.run_until([&] { return b.bus->history_ready(); }));
  CHECK(redis.text({"CLIENT", "PAUSE", "300", "WRITE"}) == "OK");
  std::vector<std::string> order;
  Answer a, shared, other;
  b.bus->read_history("org:a", 0, 10, into(order, "a", a));
  REQUIRE(b.run_until([&] { return b.bus->reads_sent() == 1; }));
  b.bus->read_history_shared("org:a", 0, 10, into(order, "shared", shared));
  b.bus->read_history_shared("org:a", 1, 10, into(order, "other", other)); // another key
  REQUIRE(b.run_until([&] { return shared.called && other.called; }));
  CHECK(order == std::vector<std::string>{"a", "shared", "other"});
  CHECK(b.bus->reads_sent() == 2); // org:a 0 10 once, org:a 1 10 once
  CHECK(b.bus->reads_coalesced() == 1);
  CHECK(shared.result.error.empty());
}
