// Paced publishing for the load generator; see publisher.h.
#include "publisher.h"

#include "client_pool.h" // monotonic_ns
#include "cluster_map.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

namespace sidecar::bench {

namespace {

constexpr uint32_t kMaxBatch = 2000;

std::string lower(std::string_view s) {
  std::string out(s);
  for (char &ch : out) {
    ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  }
  return out;
}

// The prefix format() writes is about this long ({"seq":N,"room":"rI","t":T with a 14-digit T);
// json tails are sized so that prefix + tail is close to payload_bytes.
constexpr size_t kTypicalPrefix = 44;
constexpr size_t kJsonTails = 512;

// A small deterministic generator, so every run publishes the same events.
struct Rng {
  uint32_t s;
  uint32_t next() {
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    return s;
  }
  uint32_t below(uint32_t n) { return next() % n; }
  template <size_t N> const char *pick(const char *const (&v)[N]) { return v[below(N)]; }
};

const char *const kStatuses[] = {"synced", "pending", "failed", "running", "queued", "skipped"};
const char *const kEventTypes[] = {"SYNC_SUCCESS",    "SYNC_STARTED",   "SYNC_FAILED",
                                   "workflow_update", "metrics_update", "presence_change"};
const char *const kMetricNames[] = {"queue_depth",    "jobs_completed", "error_rate",
                                    "latency_p95_ms", "active_users",   "cpu_percent"};
const char *const kHosts[] = {"worker-1", "worker-2", "worker-3", "api-eu-1", "api-us-2"};
const char *const kUnits[] = {"jobs", "ms", "percent", "count", "req/s"};

std::string hex_id(Rng &r, int digits) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < digits; ++i) {
    out.push_back(kHex[r.below(16)]);
  }
  return out;
}

std::string timestamp(Rng &r) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "2026-11-29T%02u:%02u:%02u.%03uZ", 8 + r.below(12), r.below(60),
                r.below(60), r.below(1000));
  return buf;
}

std::string item(Rng &r, bool metric) {
  char buf[320];
  if (metric) {
    std::snprintf(buf, sizeof buf,
                  "{\"name\":\"%s\",\"host\":\"%s\",\"value\":%u.%02u,\"unit\":\"%s\","
                  "\"window_s\":%u,\"samples\":%u,\"min\":%u,\"max\":%u}",
                  r.pick(kMetricNames), r.pick(kHosts), r.below(5000), r.below(100), r.pick(kUnits),
                  10 * (1 + r.below(6)), 50 + r.below(2000), r.below(100), 100 + r.below(9000));
  } else {
    std::snprintf(buf, sizeof buf,
                  "{\"id\":\"pfa-%u\",\"status\":\"%s\",\"version\":%u,\"updatedAt\":\"%s\","
                  "\"durationMs\":%u,\"owner\":\"user-%u\",\"records\":%u}",
                  1000 + r.below(9000), r.pick(kStatuses), 1 + r.below(40), timestamp(r).c_str(),
                  r.below(5000), r.below(500), r.below(10000));
  }
  return buf;
}

// One event's body after the prefix: type, organization, timestamp and request id, a details
// object, then (when there is room) a list of items until the tail reaches about `target` bytes.
std::string json_tail(Rng &r, size_t target) {
  const char *type = r.pick(kEventTypes);
  const bool metric = std::strcmp(type, "metrics_update") == 0;
  std::string t = ",\"type\":\"";
  t.append(type).append("\",\"organizationId\":\"org-").append(std::to_string(r.below(50)));
  t.append("\",\"timestamp\":\"").append(timestamp(r));
  t.append("\",\"requestId\":\"").append(hex_id(r, 16)).append("\"");
  char details[160];
  std::snprintf(details, sizeof details,
                ",\"details\":{\"pfaId\":\"pfa-%u\",\"newVersion\":%u,\"changed\":%u}",
                1000 + r.below(9000), 1 + r.below(40), r.below(300));
  t.append(details);
  if (t.size() + 40 < target) {
    t.append(metric ? ",\"metrics\":[" : ",\"items\":[");
    for (bool first = true; t.size() + 2 < target; first = false) {
      if (!first) {
        t.push_back(',');
      }
      t.append(item(r, metric));
    }
    t.push_back(']');
  }
  t.push_back('}');
  return t;
}

} // namespace

Publisher::Publisher(PublishTarget target, uint32_t rooms, size_t payload_bytes, PayloadKind kind)
    : target_(std::move(target)), rooms_(rooms),
      payload_bytes_(std::max<size_t>(payload_bytes, 96)), kind_(kind), published_(rooms, 0) {
  max_payload_ = payload_bytes_;
  if (kind_ == PayloadKind::json) {
    Rng r{0x2545f491u};
    const size_t tail = payload_bytes_ > kTypicalPrefix ? payload_bytes_ - kTypicalPrefix : 0;
    for (size_t i = 0; i < kJsonTails; ++i) {
      tails_.push_back(json_tail(r, tail));
      max_payload_ = std::max(max_payload_, 96 + tails_.back().size());
    }
  }
  for (uint32_t r = 0; r < rooms_; ++r) {
    const std::string room = std::string(1, 'r').append(std::to_string(r));
    if (!target_.http) {
      names_.push_back(std::string(target_.channel_prefix).append(room));
      continue;
    }
    std::string path = target_.path_template;
    if (auto at = path.find("{room}"); at != std::string::npos) {
      path.replace(at, 6, room);
    }
    std::string head = "POST ";
    head.append(path).append(" HTTP/1.1\r\nHost: ").append(target_.host);
    head.append("\r\nContent-Type: text/plain\r\nContent-Length: ");
    names_.push_back(std::move(head));
  }
}

Publisher::~Publisher() {
  for (redisContext *c : nodes_) {
    redisFree(c);
  }
  if (http_fd_ >= 0) {
    ::close(http_fd_);
  }
}

bool Publisher::connect(std::string &error) {
  if (!target_.http) {
    std::vector<RedisAddress> nodes{{target_.host, target_.port}};
    node_of_.assign(rooms_, 0);
    if (target_.cluster) {
      ClusterMap map;
      if (!read_cluster_map(nodes.front(), map, error)) {
        return false;
      }
      nodes = map.masters;
      for (uint32_t r = 0; r < rooms_; ++r) {
        node_of_[r] = map.master_of(names_[r]);
      }
    }
    for (const RedisAddress &a : nodes) {
      timeval tv{2, 0};
      redisContext *c = redisConnectWithTimeout(a.host.c_str(), a.port, tv);
      if (c == nullptr || c->err != 0) {
        error = "redis connect: " + std::string(c != nullptr ? c->errstr : "no memory");
        if (c != nullptr) {
          redisFree(c);
        }
        return false;
      }
      nodes_.push_back(c);
    }
    return true;
  }
  http_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(target_.port);
  inet_pton(AF_INET, target_.host.c_str(), &dst.sin_addr);
  if (http_fd_ < 0 || ::connect(http_fd_, reinterpret_cast<sockaddr *>(&dst), sizeof dst) != 0) {
    error = std::string("http publisher connect: ") + std::strerror(errno);
    return false;
  }
  int one = 1;
  setsockopt(http_fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return true;
}

size_t Publisher::format(uint32_t room, uint64_t seq, char *out) {
  // The receive side parses exactly this prefix; the padding brings it to payload_bytes_.
  const int head = std::snprintf(out, 96, "{\"seq\":%llu,\"room\":\"r%u\",\"t\":%llu,\"pad\":\"",
                                 static_cast<unsigned long long>(seq), room,
                                 static_cast<unsigned long long>(monotonic_ns()));
  const auto h = static_cast<size_t>(head);
  if (kind_ == PayloadKind::json) {
    // The same event bodies come round every kJsonTails messages, never twice in a row to one
    // room (rooms and tails are taken round-robin with different periods).
    const std::string &tail = tails_[next_message_ % tails_.size()];
    const size_t at = h - std::strlen(",\"pad\":\"");
    std::memcpy(out + at, tail.data(), tail.size());
    return at + tail.size();
  }
  const size_t total = std::max(payload_bytes_, h + 2);
  std::memset(out + h, 'x', total - h - 2);
  out[total - 2] = '"';
  out[total - 1] = '}';
  return total;
}

bool Publisher::send_redis(uint32_t count, PublishResult &result) {
  std::vector<char> payload(max_payload_ + 128);
  std::vector<uint32_t> queued(nodes_.size(), 0);
  const char *publish = target_.sharded ? "SPUBLISH" : "PUBLISH";
  for (uint32_t i = 0; i < count; ++i) {
    const auto room = static_cast<uint32_t>(next_message_++ % rooms_);
    const std::string &channel = names_[room];
    const size_t n = format(room, published_[room]++, payload.data());
    redisContext *node = nodes_[node_of_[room]];
    ++queued[node_of_[room]];
    if (target_.fcall) {
      const char *argv[5] = {"FCALL", "sidecar_publish", "1", channel.c_str(), payload.data()};
      const size_t lens[5] = {5, 15, 1, channel.size(), n};
      redisAppendCommandArgv(node, 5, argv, lens);
    } else {
      const char *argv[3] = {publish, channel.c_str(), payload.data()};
      const size_t lens[3] = {std::strlen(publish), channel.size(), n};
      redisAppendCommandArgv(node, 3, argv, lens);
    }
  }
  // Every node gets its whole batch before any reply is read, so the masters of a cluster work
  // on their batches at the same time. (redisGetReply would write the same bytes, one node at a
  // time.)
  for (redisContext *node : nodes_) {
    for (int done = 0; done == 0;) {
      if (redisBufferWrite(node, &done) != REDIS_OK) {
        result.broken = true;
        return false;
      }
    }
  }
  for (size_t k = 0; k < nodes_.size(); ++k) {
    for (uint32_t i = 0; i < queued[k]; ++i) {
      void *reply = nullptr;
      if (redisGetReply(nodes_[k], &reply) != REDIS_OK) {
        result.broken = true;
        return false;
      }
      if (static_cast<redisReply *>(reply)->type == REDIS_REPLY_ERROR) {
        ++result.errors;
      }
      freeReplyObject(reply);
    }
  }
  return true;
}

bool Publisher::send_http(uint32_t count, PublishResult &result) {
  std::vector<char> payload(max_payload_ + 128);
  out_.clear();
  for (uint32_t i = 0; i < count; ++i) {
    const auto room = static_cast<uint32_t>(next_message_++ % rooms_);
    const size_t n = format(room, published_[room]++, payload.data());
    out_.append(names_[room]).append(std::to_string(n)).append("\r\n\r\n");
    out_.append(payload.data(), n);
  }
  size_t off = 0;
  while (off < out_.size()) {
    const ssize_t w = ::write(http_fd_, out_.data() + off, out_.size() - off);
    if (w <= 0) {
      result.broken = true;
      return false;
    }
    off += static_cast<size_t>(w);
  }
  return read_http_answers(count, result);
}

bool Publisher::read_http_answers(uint32_t count, PublishResult &result) {
  uint32_t answered = 0;
  while (answered < count) {
    const size_t head_end = http_in_.find("\r\n\r\n");
    if (head_end != std::string::npos) {
      const std::string head = lower(std::string_view(http_in_).substr(0, head_end));
      size_t body_end = std::string::npos;
      if (auto cl = head.find("content-length:"); cl != std::string::npos) {
        const size_t len = std::strtoull(head.c_str() + cl + 15, nullptr, 10);
        if (http_in_.size() >= head_end + 4 + len) {
          body_end = head_end + 4 + len;
        }
      } else if (head.find("transfer-encoding: chunked") != std::string::npos) {
        if (auto z = http_in_.find("\r\n0\r\n\r\n", head_end); z != std::string::npos) {
          body_end = z + 7;
        } else if (http_in_.compare(head_end + 4, 5, "0\r\n\r\n") == 0) {
          body_end = head_end + 9;
        }
      } else {
        body_end = head_end + 4;
      }
      if (body_end != std::string::npos) {
        const int status = head.size() > 12 ? std::atoi(head.c_str() + 9) : 0;
        if (status < 200 || status > 299) {
          ++result.errors;
        }
        http_in_.erase(0, body_end);
        ++answered;
        continue;
      }
    }
    char buf[65536];
    const ssize_t n = ::read(http_fd_, buf, sizeof buf);
    if (n <= 0) {
      result.broken = true;
      return false;
    }
    http_in_.append(buf, static_cast<size_t>(n));
  }
  return true;
}

PublishResult Publisher::run(double per_second, double seconds, const std::atomic<bool> &stop) {
  PublishResult result;
  const auto target = static_cast<uint64_t>(per_second * seconds);
  const uint64_t start = monotonic_ns();
  const double ns_per_message = 1e9 / per_second;
  while (result.sent < target && !stop.load(std::memory_order_relaxed)) {
    const uint64_t now = monotonic_ns();
    const double elapsed = static_cast<double>(now - start);
    const uint64_t due = std::min(target, static_cast<uint64_t>(elapsed / ns_per_message) + 1);
    if (due <= result.sent) {
      // Sleep until the next message is due, at most a millisecond, so ticks stay fine.
      const double next_at = static_cast<double>(result.sent) * ns_per_message;
      const double wait = std::min(next_at - elapsed, 1e6);
      if (wait > 20000) {
        timespec ts{0, static_cast<long>(wait)};
        nanosleep(&ts, nullptr);
      }
      continue;
    }
    const double lag_ms = (elapsed - static_cast<double>(result.sent) * ns_per_message) / 1e6;
    result.max_lag_ms = std::max(result.max_lag_ms, lag_ms);
    const auto batch = static_cast<uint32_t>(std::min<uint64_t>(due - result.sent, kMaxBatch));
    const bool ok = target_.http ? send_http(batch, result) : send_redis(batch, result);
    if (!ok) {
      break;
    }
    result.sent += batch;
  }
  result.seconds = static_cast<double>(monotonic_ns() - start) / 1e9;
  // Pacing only falls short of the schedule if the publisher (or Redis on its core) is the
  // bottleneck; such a step measures the generator, not the server.
  result.behind = result.sent < target || result.seconds > seconds * 1.02 + 0.02;
  return result;
}

bool Publisher::burst(uint64_t messages, PublishResult &result) {
  for (uint64_t left = messages; left > 0;) {
    const auto batch = static_cast<uint32_t>(std::min<uint64_t>(left, kMaxBatch));
    if (!(target_.http ? send_http(batch, result) : send_redis(batch, result))) {
      return false;
    }
    result.sent += batch;
    left -= batch;
  }
  return true;
}

bool Publisher::all_subscribed(uint32_t &subscribed, std::string &error) {
  subscribed = 0;
  if (nodes_.empty()) {
    error = "not a redis publisher";
    return false;
  }
  // Sharded subscriptions live on the channel's master; global ones on whichever node the
  // subscriber chose, so each node is asked for every room and any one's count will do.
  const char *numsub = target_.sharded ? "SHARDNUMSUB" : "NUMSUB";
  std::vector<bool> seen(rooms_, false);
  for (size_t k = 0; k < nodes_.size(); ++k) {
    std::vector<uint32_t> asked;
    for (uint32_t r = 0; r < rooms_; ++r) {
      if (!target_.sharded || node_of_[r] == k) {
        asked.push_back(r);
      }
    }
    for (size_t first = 0; first < asked.size(); first += 200) {
      const size_t last = std::min(asked.size(), first + 200);
      std::vector<const char *> argv{"PUBSUB", numsub};
      std::vector<size_t> lens{6, std::strlen(numsub)};
      for (size_t i = first; i < last; ++i) {
        argv.push_back(names_[asked[i]].c_str());
        lens.push_back(names_[asked[i]].size());
      }
      auto *reply = static_cast<redisReply *>(
          redisCommandArgv(nodes_[k], static_cast<int>(argv.size()), argv.data(), lens.data()));
      if (reply == nullptr) {
        error = std::string("PUBSUB ") + numsub + ": " + nodes_[k]->errstr;
        return false;
      }
      if (reply->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 1; i < reply->elements && first + i / 2 < last; i += 2) {
          if (reply->element[i]->type == REDIS_REPLY_INTEGER && reply->element[i]->integer >= 1) {
            seen[asked[first + i / 2]] = true;
          }
        }
      }
      freeReplyObject(reply);
    }
  }
  subscribed = static_cast<uint32_t>(std::count(seen.begin(), seen.end(), true));
  return subscribed == rooms_;
}

long long Publisher::command_stat(const char *command, const char *field) {
  if (nodes_.empty()) {
    return -1;
  }
  auto *reply = static_cast<redisReply *>(redisCommand(nodes_.front(), "INFO commandstats"));
  if (reply == nullptr) {
    return -1;
  }
  long long value = -1;
  if (reply->type == REDIS_REPLY_STRING) {
    // Lines look like "cmdstat_fcall:calls=12,usec=340,usec_per_call=28.33,...".
    const std::string text(reply->str, reply->len);
    const std::string line = std::string("cmdstat_") + command + ":";
    if (auto at = text.find(line); at != std::string::npos) {
      const std::string key = std::string(field) + "=";
      const size_t eol = text.find('\n', at);
      if (auto k = text.find(key, at); k != std::string::npos && k < eol) {
        value = std::strtoll(text.c_str() + k + key.size(), nullptr, 10);
      }
    } else {
      value = 0; // never called yet
    }
  }
  freeReplyObject(reply);
  return value;
}

} // namespace sidecar::bench
