// ClusterBus's commands: the XADDs of inbound messages and the history reads, each sent to the
// master of its slot and followed across redirects (see cluster_bus.h). Kept apart from
// cluster_bus.cpp, which holds the topology and the subscriptions.
#include <hiredis/hiredis.h>

#include "cluster_bus.h"
#include "guard.h"
#include "log.h"

namespace sidecar {
namespace {

// A command redirected this many times in a row fails instead of chasing a topology that keeps
// moving: a read resyncs its room (unavailable), an XADD's message is lost and logged.
constexpr uint32_t kMaxRedirects = 8;

// XADDs sent and not yet answered (or waiting for an owner); more are refused like a link that
// is down, so the client hears of it. Each holds one client message (limits.max_message_bytes).
constexpr size_t kMaxAppendsInFlight = 10'000;

bool redirect_error(std::string_view e) {
  return e.starts_with("MOVED ") || e.starts_with("ASK ") || e.starts_with("TRYAGAIN") ||
         e.starts_with("CLUSTERDOWN");
}

// "MOVED 3999 127.0.0.1:6381" / "ASK 3999 127.0.0.1:6381": the node named, when it has an address
// (Redis writes "?" or nothing for a node whose endpoint it does not know).
bool redirect_target(std::string_view e, HostPort &out) {
  size_t sp = e.rfind(' ');
  if (sp == std::string_view::npos)
    return false;
  std::string_view addr = e.substr(sp + 1);
  size_t colon = addr.rfind(':');
  if (colon == std::string_view::npos || colon == 0)
    return false;
  uint32_t port = 0;
  for (char c : addr.substr(colon + 1)) {
    if (c < '0' || c > '9' || (port = port * 10 + static_cast<uint32_t>(c - '0')) > 65535)
      return false;
  }
  if (port == 0 || addr.substr(0, colon) == "?")
    return false;
  out.host.assign(addr.substr(0, colon));
  out.port = static_cast<uint16_t>(port);
  return true;
}

// Logged at the 1st, 2nd, 4th, 8th, ... loss: a cluster that refuses every XADD costs a log line
// per doubling.
bool worth_logging(uint64_t count) { return (count & (count - 1)) == 0; }

} // namespace

// ----------------------------------------------------------------------------- XADD

bool ClusterBus::xadd(const std::string &stream, uint32_t maxlen,
                      const std::vector<std::pair<std::string, std::string>> &fields) {
  if (appends_.size() >= kMaxAppendsInFlight)
    return false;
  Node *n = master_of(stream);
  if (n == nullptr)
    return false;
  uint64_t tag = next_append_++;
  Append a;
  a.stream = stream;
  a.maxlen = maxlen;
  a.fields = fields;
  a.asked_ms = uv_now(loop_);
  auto [it, added] = appends_.emplace(tag, std::move(a));
  if (!send_append(tag, it->second, *n, false)) {
    appends_.erase(it);
    return false; // the client is told, as with a link that is down on one Redis
  }
  return true;
}

bool ClusterBus::send_append(uint64_t tag, Append &a, Node &n, bool asking) {
  if (!n.bus->send_xadd(a.stream, a.maxlen, a.fields, tag, asking))
    return false;
  a.node = n.addr;
  a.sent_ms = uv_now(loop_);
  return true;
}

void ClusterBus::node_xadd_answered(Node &n, uint64_t tag, const redisReply &reply) {
  auto it = appends_.find(tag);
  if (it == appends_.end() || it->second.node != n.addr)
    return;
  Append &a = it->second;
  if (reply.type != REDIS_REPLY_ERROR) {
    appends_.erase(it);
    return;
  }
  std::string_view e = reply_text(&reply);
  uint64_t now = uv_now(loop_);
  if (!redirect_error(e) || a.redirects >= kMaxRedirects ||
      now - a.asked_ms >= cfg_.reply_timeout_ms) {
    lose_append(it, std::string(e));
    return;
  }
  ++a.redirects;
  ++appends_redirected_;
  a.node.clear();
  bool ask = e.starts_with("ASK ");
  if (!ask)
    request_refresh(e.starts_with("MOVED ") ? "XADD moved" : "XADD refused for now");
  log_debug("cluster_command_redirected",
            {{"command", "XADD"}, {"key", a.stream}, {"from", n.addr}, {"reply", e}});
  // MOVED and ASK name the node: sent there at once (ASKING first for ASK), as cluster clients
  // do. TRYAGAIN, CLUSTERDOWN, or a node without an address wait a moment for the tick.
  HostPort to;
  if ((ask || e.starts_with("MOVED ")) && redirect_target(e, to)) {
    Node &target = node_for(ClusterNode{to.host, to.port, {}, true}.addr(), to.host, to.port);
    if (send_append(tag, a, target, ask))
      return;
  }
  a.retry_at_ms = now + 20 * a.redirects;
}

void ClusterBus::lose_append(std::map<uint64_t, Append>::iterator it, std::string why) {
  ++appends_lost_;
  if (worth_logging(appends_lost_)) {
    log_warn("inbound_append_failed",
             {{"stream", it->second.stream},
              {"reply", why},
              {"redirects", it->second.redirects},
              {"count", appends_lost_},
              {"action", "this client message is lost; check the cluster's state"}});
  }
  appends_.erase(it);
}

// From the tick: XADDs that wait for an owner are sent when it is known; any that waited, or
// went unanswered (its link dropped with it in flight), past redis.reply_timeout_ms is lost.
void ClusterBus::retry_appends(uint64_t now) {
  for (auto it = appends_.begin(); it != appends_.end();) {
    auto next = std::next(it);
    Append &a = it->second;
    if (!a.node.empty()) {
      if (now - a.sent_ms >= 2 * cfg_.reply_timeout_ms)
        lose_append(it, "no reply (the link to " + a.node + " dropped with it in flight)");
    } else if (now - a.asked_ms >= cfg_.reply_timeout_ms) {
      lose_append(it, "no master took it; waited " + std::to_string(cfg_.reply_timeout_ms) +
                          " ms (redis.reply_timeout_ms)");
    } else if (now >= a.retry_at_ms && have_topo_) {
      if (Node *n = master_of(a.stream))
        (void)send_append(it->first, a, *n, false);
    }
    it = next;
  }
}

// ----------------------------------------------------------------------------- history reads

HistoryReadToken ClusterBus::read_history(std::string channel, uint64_t from, uint32_t count,
                                          HistoryReadCallback cb) {
  Read r;
  r.channel = std::move(channel);
  r.from = from;
  r.count = count;
  r.cb = std::move(cb);
  return ask(std::move(r));
}

HistoryReadToken ClusterBus::read_history_shared(std::string channel, uint64_t from, uint32_t count,
                                                 HistoryReadCallback cb) {
  Read r;
  r.channel = std::move(channel);
  r.from = from;
  r.count = count;
  r.shared = true;
  r.cb = std::move(cb);
  return ask(std::move(r));
}

HistoryReadToken ClusterBus::ask(Read read) {
  HistoryReadToken token = next_token_++;
  read.asked_ms = uv_now(loop_);
  reads_.emplace(token, std::move(read));
  // The node bus never answers from inside its read_history, so neither do we; without an owner
  // yet the read waits for the tick.
  dispatch(token);
  return token;
}

void ClusterBus::dispatch(HistoryReadToken token) {
  auto it = reads_.find(token);
  if (it == reads_.end())
    return;
  Read &r = it->second;
  Node *n = master_of(r.channel);
  if (n == nullptr)
    return;
  r.node = n->addr;
  auto done = [this, token](const HistoryReadResult &result) { read_done(token, result); };
  r.inner = r.shared ? n->bus->read_history_shared(r.channel, r.from, r.count, done)
                     : n->bus->read_history(r.channel, r.from, r.count, done);
}

void ClusterBus::read_done(HistoryReadToken token, const HistoryReadResult &result) {
  auto it = reads_.find(token);
  if (it == reads_.end())
    return;
  Read &r = it->second;
  if (redirect_error(result.error) && r.redirects < kMaxRedirects &&
      uv_now(loop_) - r.asked_ms < cfg_.reply_timeout_ms) {
    ++r.redirects;
    r.node.clear();
    r.inner = 0;
    log_debug("cluster_command_redirected",
              {{"command", "FCALL sidecar_read"}, {"key", r.channel}, {"reply", result.error}});
    // ASK: the history has moved to the node named while its slot migrates; read it there,
    // after ASKING. MOVED: the slot is there now. Either is sent at once; the node bus answers
    // later, never from inside the call. TRYAGAIN, CLUSTERDOWN, or a node without an address
    // wait a moment for the tick and a fresh topology.
    std::string_view e = result.error;
    bool ask = e.starts_with("ASK ");
    if (!ask)
      request_refresh("history read redirected");
    HostPort to;
    if ((ask || e.starts_with("MOVED ")) && redirect_target(e, to)) {
      Node &target = node_for(ClusterNode{to.host, to.port, {}, true}.addr(), to.host, to.port);
      r.node = target.addr;
      auto done = [this, token](const HistoryReadResult &answer) { read_done(token, answer); };
      r.inner = ask ? target.bus->read_history_asking(r.channel, r.from, r.count, done)
                    : target.bus->read_history(r.channel, r.from, r.count, done);
      return;
    }
    r.retry_at_ms = uv_now(loop_) + 20 * r.redirects;
    return;
  }
  HistoryReadCallback cb = std::move(r.cb);
  reads_.erase(it);
  if (cb)
    cb(result);
}

void ClusterBus::cancel_history_read(HistoryReadToken token) {
  auto it = reads_.find(token);
  if (it == reads_.end())
    return;
  if (auto n = nodes_.find(it->second.node); n != nodes_.end() && it->second.inner != 0)
    n->second->bus->cancel_history_read(it->second.inner);
  reads_.erase(it);
}

void ClusterBus::fail_waiting_reads(uint64_t now) {
  std::vector<HistoryReadToken> expired;
  for (const auto &[token, read] : reads_) {
    if (read.node.empty() && now - read.asked_ms >= cfg_.reply_timeout_ms)
      expired.push_back(token);
  }
  for (HistoryReadToken token : expired) {
    auto it = reads_.find(token);
    if (it == reads_.end())
      continue;
    HistoryReadCallback cb = std::move(it->second.cb);
    reads_.erase(it);
    HistoryReadResult result;
    result.error = "no Redis Cluster master serves this channel's slot" +
                   (topo_error_.empty() ? std::string() : " (" + topo_error_ + ")") + "; waited " +
                   std::to_string(cfg_.reply_timeout_ms) + " ms (redis.reply_timeout_ms)";
    if (cb)
      guarded("cluster.history_read", 0, "this waiter's answer is lost", [&] { cb(result); });
  }
}

} // namespace sidecar
