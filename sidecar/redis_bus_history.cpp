// RedisBus's history half (issue 11): the Function library loaded on every command connect, and
// the history reads, one FCALL sidecar_read per distinct (channel, from, count) shared by every
// waiter that asked before it was written. See redis_bus.h.
#include <hiredis/hiredis.h>

#include "guard.h"
#include "log.h"
#include "redis_bus.h"

namespace sidecar {
namespace {

// Errors that pass by themselves: Redis loading its data set after a restart, a script or
// function running too long, a replica that lost its master for a moment.
bool is_transient_error(std::string_view reply) {
  std::string_view word = reply.substr(0, reply.find(' '));
  return word == "LOADING" || word == "BUSY" || word == "MASTERDOWN" || word == "TRYAGAIN";
}

} // namespace

void RedisBus::send_function_load() {
  if (cmd_.send(RedisCmd::function_load, {}, {"FUNCTION", "LOAD", "REPLACE", library_})) {
    lib_state_ = LibState::loading;
  } else {
    // The link is going down; the next connection loads it.
    lib_state_ = LibState::waiting;
  }
}

void RedisBus::function_load_answered(const redisReply &reply) {
  if (reply.type != REDIS_REPLY_ERROR) {
    ++function_loads_;
    lib_state_ = LibState::ready;
    log_info("redis_function_loaded", {{"library", "sidecar"},
                                       {"bytes", library_.size()},
                                       {"attempts", load_failures_in_row_ + 1}});
    load_failures_in_row_ = 0;
    lib_transient_ = false;
    history_error_.clear();
    return;
  }
  ++function_load_failures_;
  ++load_failures_in_row_;
  uint64_t delay = redis_backoff_ms(cfg_, load_failures_in_row_);
  load_retry_at_ms_ = uv_now(loop_) + delay;
  std::string text(reply_text(&reply));
  // One warning per cause; the retries that follow are debug lines.
  bool news = load_failures_in_row_ == 1 || text != history_error_;
  history_error_ = std::move(text);
  lib_state_ = LibState::failed;
  lib_transient_ = is_transient_error(history_error_);
  log_event(news ? LogConfig::Level::warn : LogConfig::Level::debug, "redis_function_load_failed",
            {{"reply", history_error_},
             {"attempt", load_failures_in_row_},
             {"retry_in_ms", delay},
             {"action", "history reads fail and clients get resync unavailable until it loads; "
                        "retrying with backoff (needs Redis 7 and +function for the redis.url "
                        "user)"}});
  // Reads written after this LOAD get their own error replies; those not yet written fail at
  // the next flush.
  wake_flush();
}

HistoryReadToken RedisBus::read_history(std::string channel, uint64_t from, uint32_t count,
                                        HistoryReadCallback cb) {
  return ask_read(ReadKey{std::move(channel), from, count, false}, std::move(cb));
}

HistoryReadToken RedisBus::read_history_asking(std::string channel, uint64_t from, uint32_t count,
                                               HistoryReadCallback cb) {
  return ask_read(ReadKey{std::move(channel), from, count, true}, std::move(cb));
}

HistoryReadToken RedisBus::ask_read(ReadKey key, HistoryReadCallback cb) {
  if (!history_enabled())
    return refuse_read(std::move(key), std::move(cb), "history is not configured");
  if (lib_refusing())
    return refuse_read(std::move(key), std::move(cb),
                       "the history library is not loaded: " + history_error_);
  HistoryReadToken token = next_id_++;
  if (auto k = keys_.find(key); k != keys_.end() && k->second.collecting != 0) {
    PendingRead &read = reads_.at(k->second.collecting);
    tokens_[token] = {k->second.collecting, read.waiters.size()};
    read.waiters.push_back({token, std::move(cb)});
    ++reads_coalesced_;
    return token;
  }
  if (reads_.size() >= kMaxHistoryReadsInFlight)
    return refuse_read(std::move(key), std::move(cb),
                       "too many history reads in flight (" +
                           std::to_string(kMaxHistoryReadsInFlight) + ")");
  uint64_t id = next_id_++;
  keys_[key].collecting = id;
  PendingRead &read = reads_[id];
  read.key = std::move(key);
  read.asked_ms = uv_now(loop_);
  read.waiters.push_back({token, std::move(cb)});
  tokens_[token] = {id, 0};
  wake_flush();
  return token;
}

HistoryReadToken RedisBus::read_history_shared(std::string channel, uint64_t from, uint32_t count,
                                               HistoryReadCallback cb) {
  if (history_enabled() && !lib_refusing()) {
    ReadKey key{channel, from, count};
    auto k = keys_.find(key);
    if (k != keys_.end() && k->second.collecting == 0 && k->second.sent != 0) {
      // Joins the FCALL on the wire; its waiters only grow until it is answered.
      PendingRead &read = reads_.at(k->second.sent);
      HistoryReadToken token = next_id_++;
      tokens_[token] = {k->second.sent, read.waiters.size()};
      read.waiters.push_back({token, std::move(cb)});
      ++reads_coalesced_;
      return token;
    }
  }
  return read_history(std::move(channel), from, count, std::move(cb));
}

HistoryReadToken RedisBus::refuse_read(ReadKey key, HistoryReadCallback cb, std::string why) {
  HistoryReadToken token = next_id_++;
  uint64_t id = next_id_++;
  PendingRead &read = reads_[id];
  read.key = std::move(key);
  read.asked_ms = uv_now(loop_);
  read.refusal = std::move(why);
  read.waiters.push_back({token, std::move(cb)});
  tokens_[token] = {id, 0};
  wake_flush();
  return token;
}

void RedisBus::cancel_history_read(HistoryReadToken token) {
  auto t = tokens_.find(token);
  if (t == tokens_.end())
    return;
  WaiterAt at = t->second;
  tokens_.erase(t);
  if (auto r = reads_.find(at.read); r != reads_.end())
    r->second.waiters[at.index].cb = nullptr;
  else if (answering_ != nullptr && answering_id_ == at.read && at.index < answering_->size())
    (*answering_)[at.index].cb = nullptr;
}

void RedisBus::wake_flush() {
  if (idle_init_ && !stopping_)
    uv_idle_start(&idle_, &RedisBus::on_idle);
}

void RedisBus::on_idle(uv_idle_t *h) {
  auto *self = static_cast<RedisBus *>(h->data);
  guarded("redis.flush_reads", 0, "reads left waiting fail at their deadline", [&] {
    uv_idle_stop(h);
    self->flush_reads();
  });
}

// Once per loop turn: refusals are answered, and reads that have gathered their waiters are
// written, at most one per key on the wire. What a callback asks from here waits for the next
// turn.
void RedisBus::flush_reads() {
  std::vector<uint64_t> ids;
  ids.reserve(reads_.size());
  for (const auto &[id, read] : reads_) {
    if (!read.sent)
      ids.push_back(id);
  }
  bool sendable = cmd_.up() && (lib_state_ == LibState::loading || lib_state_ == LibState::ready);
  for (uint64_t id : ids) {
    auto it = reads_.find(id);
    if (it == reads_.end() || it->second.sent)
      continue;
    PendingRead &read = it->second;
    if (!read.refusal.empty()) {
      fail_read(id, read.refusal);
      continue;
    }
    bool anyone = false;
    for (const Waiter &w : read.waiters)
      anyone = anyone || static_cast<bool>(w.cb);
    if (!anyone) {
      answer(id, {}); // every waiter left; nobody is called and nothing is sent
      continue;
    }
    if (lib_refusing()) {
      fail_read(id, "the history library is not loaded: " + history_error_);
      continue;
    }
    if (!sendable || keys_[read.key].sent != 0)
      continue;
    if (!send_read(id, read))
      return; // the link is going down; these wait for the next one
  }
}

bool RedisBus::send_read(uint64_t id, PendingRead &read) {
  std::string from = std::to_string(read.key.from);
  std::string count = std::to_string(read.key.count);
  bool sent = false;
  if (cfg_.is_cluster()) {
    // The history's own keys, so that a Cluster routes the read by where they are while the
    // slot migrates (the channel is never a key): the source while it has them, else ASK.
    std::string skey = "sidecar:{" + read.key.channel + "}:s";
    std::string mkey = "sidecar:{" + read.key.channel + "}:m";
    // ASKING holds for the next command on this connection, which the pipeline makes the FCALL.
    sent =
        (!read.key.asking || cmd_.send(RedisCmd::asking, {}, {"ASKING"})) &&
        cmd_.send(RedisCmd::fcall, {}, {"FCALL", "sidecar_read", "2", skey, mkey, from, count}, id);
  } else {
    sent = cmd_.send(RedisCmd::fcall, {},
                     {"FCALL", "sidecar_read", "1", read.key.channel, from, count}, id);
  }
  if (!sent)
    return false;
  read.sent = true;
  ++reads_sent_;
  KeyReads &k = keys_[read.key];
  if (k.collecting == id)
    k.collecting = 0;
  k.sent = id;
  return true;
}

void RedisBus::read_answered(uint64_t id, const redisReply &reply) {
  HistoryReadResult result = parse_history_read(reply);
  if (reply.type == REDIS_REPLY_ERROR) {
    // The library went missing under a live connection (FUNCTION FLUSH or DELETE, a replica
    // promoted without it): load it again at once. Reads already written behind this one fail
    // the same way but find the state `loading`, so this happens once, not once per read.
    if (lib_state_ == LibState::ready &&
        result.error.find("Function not found") != std::string::npos) {
      history_error_ = "the library is missing from Redis (" + result.error + "); loading it again";
      log_warn("redis_function_missing",
               {{"reply", result.error}, {"action", "loading the library again"}});
      send_function_load();
    }
  }
  if (!result.error.empty()) {
    // A storm of reads failing for one cause is one warning; the rest are debug lines.
    bool news = result.error != last_read_error_;
    last_read_error_ = result.error;
    auto it = reads_.find(id);
    log_event(news ? LogConfig::Level::warn : LogConfig::Level::debug, "redis_history_read_failed",
              {{"channel", it != reads_.end() ? std::string_view(it->second.key.channel) : ""},
               {"reply", result.error},
               {"action", "its waiters resync with reason unavailable"}});
  }
  answer(id, result);
}

void RedisBus::fail_read(uint64_t id, const std::string &why) {
  HistoryReadResult result;
  result.error = why;
  answer(id, result);
}

// Every waiter still there is called in the order it asked, each through guarded() so that one
// that throws costs only its own answer. The read leaves the tables first, so a callback that
// asks for the same key again starts a new read instead of joining this finished one.
void RedisBus::answer(uint64_t id, const HistoryReadResult &result) {
  auto it = reads_.find(id);
  if (it == reads_.end())
    return;
  std::vector<Waiter> waiters = std::move(it->second.waiters);
  auto k = keys_.find(it->second.key);
  if (k != keys_.end() && (k->second.collecting == id || k->second.sent == id)) {
    if (k->second.collecting == id)
      k->second.collecting = 0;
    if (k->second.sent == id)
      k->second.sent = 0;
    if (k->second.collecting != 0)
      wake_flush(); // the read waiting behind this one may go now
    else if (k->second.sent == 0)
      keys_.erase(k);
  }
  reads_.erase(it);
  answering_id_ = id;
  answering_ = &waiters;
  // By index: a callback that stops the bus empties `waiters` under this loop.
  for (size_t i = 0; i < waiters.size(); ++i) {
    Waiter &w = waiters[i];
    if (!w.cb)
      continue;
    HistoryReadCallback cb = std::move(w.cb);
    w.cb = nullptr;
    tokens_.erase(w.token);
    guarded("redis.history_read", 0, "this waiter's answer is lost", [&] { cb(result); });
  }
  answering_ = nullptr;
  answering_id_ = 0;
}

} // namespace sidecar
