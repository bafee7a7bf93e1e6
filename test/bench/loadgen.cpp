// bench_loadgen: opens N WebSocket clients over R rooms, waits until every room is subscribed,
// then drives a paced publisher through a list of phases (a fixed rate, an optional churn phase,
// then a rising search) and reports delivery rate, loss, order, latency and the server's RSS and
// CPU. Prints a human table and, last, one JSON line.
#include "client_pool.h"
#include "proc_stats.h"
#include "publisher.h"
#include "resume_storm.h"

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace sidecar::bench;

namespace {

struct Args {
  // One URL, or several separated by commas: the clients are dealt over them (ClientPoolOptions).
  std::string url = "ws://127.0.0.1:8080/ws/{room}";
  std::string publish = "redis://127.0.0.1:6379";
  std::string label = "server";
  uint32_t connections = 1000;
  uint32_t rooms = 10;
  size_t payload_bytes = 200;
  double fixed_rate = 0; // deliveries/s for the "fixed" phase; 0 skips it
  double fixed_seconds = 5;
  double churn = 0;          // connects+disconnects/s during the "churn" phase; 0 skips it
  std::vector<double> rates; // search steps, deliveries/s
  double step_seconds = 3;
  double connect_timeout = 60;
  double loss_limit = 0.001;
  double p99_limit_ms = 50;
  std::vector<int> server_pids; // CPU and RSS are summed over them
  std::vector<int> redis_pids;  // Redis CPU per phase, summed; reported only when given
  uint32_t max_in_flight = 512;
  bool bind_sources = true;
  bool spin = false;
  bool fcall = false;        // publish with FCALL sidecar_publish (history on)
  bool sharded = false;      // SPUBLISH and SHARDNUMSUB (redis.pubsub: sharded)
  std::string subprotocol;   // e.g. sidecar.v1
  uint32_t resume_storm = 0; // messages behind; 0: the usual phases instead of the storm
  uint32_t storm_in_flight = 4096;
  // After connecting: hold every connection open and silent this long (answering pings) and
  // report the server's CPU meanwhile; 0 skips it.
  double idle_seconds = 0;
  bool deflate = false; // offer permessage-deflate and inflate what arrives compressed
  PayloadKind payload = PayloadKind::pad;
  bool server_metrics = false; // read the sidecar's /metrics around each phase
};

// The sidecar's counters around a phase, from GET /metrics on its listener; -1 when absent.
struct ServerMetrics {
  double publications = -1; // sidecar_redis_messages_total
  double bytes_out = -1;    // sidecar_bytes_out_total
  double frames_built = -1, bytes_before = -1, bytes_after = -1, frames_queued = -1;
  double deflate_s = -1;
};

ServerMetrics read_metrics(const std::string &host, uint16_t port) {
  ServerMetrics m;
  const std::string t = fetch_metrics_text(host, port);
  m.publications = metric_value(t, "sidecar_redis_messages_total");
  m.bytes_out = metric_value(t, "sidecar_bytes_out_total");
  m.frames_built = metric_value(t, "sidecar_deflate_frames_built_total");
  m.bytes_before = metric_value(t, "sidecar_deflate_bytes_before_total");
  m.bytes_after = metric_value(t, "sidecar_deflate_bytes_after_total");
  m.frames_queued = metric_value(t, "sidecar_deflate_frames_queued_total");
  m.deflate_s = metric_value(t, "sidecar_deflate_seconds_total");
  return m;
}

double delta(double a, double b) { return a >= 0 && b >= 0 ? b - a : -1; }

bool parse_hostport(std::string_view rest, std::string &host, uint16_t &port, std::string &path) {
  const size_t slash = rest.find('/');
  const std::string_view hp = rest.substr(0, slash);
  path = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  const size_t colon = hp.rfind(':');
  if (colon == std::string_view::npos) {
    return false;
  }
  host = std::string(hp.substr(0, colon));
  port = static_cast<uint16_t>(std::atoi(std::string(hp.substr(colon + 1)).c_str()));
  if (host == "localhost") {
    host = "127.0.0.1";
  }
  // The bench only ever targets loopback.
  return port != 0 && host.starts_with("127.");
}

std::vector<std::string> split_commas(const std::string &s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) {
    if (!item.empty()) {
      out.push_back(item);
    }
  }
  return out;
}

std::vector<double> parse_list(const char *s) {
  std::vector<double> out;
  for (const std::string &item : split_commas(s)) {
    out.push_back(std::atof(item.c_str()));
  }
  return out;
}

std::vector<int> parse_pids(const char *s) {
  std::vector<int> out;
  for (const std::string &item : split_commas(s)) {
    out.push_back(std::atoi(item.c_str()));
  }
  return out;
}

void usage() {
  std::fprintf(stderr, "usage: bench_loadgen --url ws://127.0.0.1:PORT/ws/{room}[,ws://...] "
                       "[--publish redis://127.0.0.1:PORT | redis-cluster://127.0.0.1:PORT "
                       "| http://127.0.0.1:PORT/pub/{room}]\n"
                       "  [--connections N] [--rooms R] [--payload-bytes B] [--label NAME]\n"
                       "  [--fixed-rate DELIVERIES_PER_S] [--fixed-seconds S] [--churn PER_S]\n"
                       "  [--rates D1,D2,...] [--step-seconds S] [--server-pid PID[,PID...]]\n"
                       "  [--redis-pid PID[,PID...]] [--publish-sharded]\n"
                       "  [--loss-limit FRACTION] [--p99-limit-ms MS] [--connect-timeout S]\n"
                       "  [--max-in-flight N] [--no-bind-sources] [--spin]\n"
                       "  [--publish-fcall] [--subprotocol sidecar.v1]\n"
                       "  [--resume-storm MESSAGES_BEHIND [--storm-in-flight N]]\n"
                       "  [--idle-seconds S]\n"
                       "  [--deflate] [--payload pad|json] [--server-metrics]\n");
}

bool parse_args(int argc, char **argv, Args &a) {
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--no-bind-sources") {
      a.bind_sources = false;
      continue;
    }
    if (k == "--spin") {
      a.spin = true;
      continue;
    }
    if (k == "--publish-fcall") {
      a.fcall = true;
      continue;
    }
    if (k == "--publish-sharded") {
      a.sharded = true;
      continue;
    }
    if (k == "--deflate") {
      a.deflate = true;
      continue;
    }
    if (k == "--server-metrics") {
      a.server_metrics = true;
      continue;
    }
    if (i + 1 >= argc) {
      return false;
    }
    const char *v = argv[++i];
    if (k == "--url")
      a.url = v;
    else if (k == "--publish")
      a.publish = v;
    else if (k == "--label")
      a.label = v;
    else if (k == "--connections")
      a.connections = static_cast<uint32_t>(std::atol(v));
    else if (k == "--rooms")
      a.rooms = static_cast<uint32_t>(std::atol(v));
    else if (k == "--payload-bytes")
      a.payload_bytes = static_cast<size_t>(std::atol(v));
    else if (k == "--fixed-rate")
      a.fixed_rate = std::atof(v);
    else if (k == "--fixed-seconds")
      a.fixed_seconds = std::atof(v);
    else if (k == "--churn")
      a.churn = std::atof(v);
    else if (k == "--rates")
      a.rates = parse_list(v);
    else if (k == "--step-seconds")
      a.step_seconds = std::atof(v);
    else if (k == "--server-pid")
      a.server_pids = parse_pids(v);
    else if (k == "--redis-pid")
      a.redis_pids = parse_pids(v);
    else if (k == "--loss-limit")
      a.loss_limit = std::atof(v);
    else if (k == "--p99-limit-ms")
      a.p99_limit_ms = std::atof(v);
    else if (k == "--connect-timeout")
      a.connect_timeout = std::atof(v);
    else if (k == "--subprotocol")
      a.subprotocol = v;
    else if (k == "--resume-storm")
      a.resume_storm = static_cast<uint32_t>(std::atol(v));
    else if (k == "--storm-in-flight")
      a.storm_in_flight = static_cast<uint32_t>(std::atol(v));
    else if (k == "--idle-seconds")
      a.idle_seconds = std::atof(v);
    else if (k == "--payload" && std::strcmp(v, "json") == 0)
      a.payload = PayloadKind::json;
    else if (k == "--payload" && std::strcmp(v, "pad") == 0)
      a.payload = PayloadKind::pad;
    else if (k == "--max-in-flight")
      a.max_in_flight = static_cast<uint32_t>(std::atol(v));
    else
      return false;
  }
  // The storm reads positions from envelopes and republishes with FCALL.
  if (a.resume_storm > 0 && (a.subprotocol != "sidecar.v1" || !a.fcall)) {
    return false;
  }
  return a.connections > 0 && a.rooms > 0 && a.rooms <= a.connections;
}

struct Phase {
  std::string name;
  double target = 0; // deliveries/s
  double churn_target = 0;
  PublishResult pub;
  DeliveryTotals d;
  double achieved = 0; // unique deliveries/s over the publishing time
  double p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0; // ms
  double cpu_s = -1;
  double redis_cpu_s = -1; // summed over --redis-pid
  double loadgen_cpu_s = 0;
  double loadgen_busy_s = 0; // near the phase's length means the generator was saturated
  long rss_kb = -1;
  double churn_per_s = 0;
  uint64_t churn_failed = 0;
  uint64_t server_closed = 0;
  uint64_t wire_bytes = 0;    // read by the clients
  uint64_t payload_bytes = 0; // bench payloads delivered, inflated
  uint64_t compressed_frames = 0;
  uint64_t inflate_errors = 0;
  ServerMetrics m; // the sidecar's counters over the phase (--server-metrics)
  bool pass = false;
};

double own_cpu_s() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  const auto sec = [](const timeval &tv) {
    return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
  };
  return sec(ru.ru_utime) + sec(ru.ru_stime);
}

double seconds_since(uint64_t t0) { return static_cast<double>(monotonic_ns() - t0) / 1e9; }

Phase run_phase(ClientPool &pool, Publisher &pub, const Args &a, const ClientPoolOptions &po,
                std::string name, double rate, double seconds, double churn) {
  Phase ph;
  ph.name = std::move(name);
  ph.target = rate;
  ph.churn_target = churn;
  const DeliveryTotals before = pool.totals(pub.published());
  const ServerStats s0 = read_servers(a.server_pids);
  const ServerStats r0 = read_servers(a.redis_pids);
  const ClientCounters c0 = pool.counters();
  const WsServer &first = po.servers.front(); // --server-metrics asks the first URL's server
  const ServerMetrics m0 =
      a.server_metrics ? read_metrics(first.host, first.port) : ServerMetrics{};
  const double own0 = own_cpu_s();
  const double busy0 = pool.busy_seconds();
  pool.latency().reset();
  pool.set_churn(churn);
  // Deliveries per publish is the room size, so the publish rate follows from the target.
  const double per_publish = static_cast<double>(a.connections) / a.rooms;
  std::atomic<bool> stop{false};
  std::atomic<bool> done{false};
  PublishResult result;
  std::thread publisher([&] {
    result = pub.run(rate / per_publish, seconds, stop);
    done.store(true);
  });
  const uint64_t t0 = monotonic_ns();
  while (!done.load()) {
    pool.poll(1);
    if (seconds_since(t0) > seconds * 3 + 10) {
      stop.store(true); // a stuck publisher must not hang the bench
    }
  }
  publisher.join();
  pool.set_churn(0);
  // Drain: wait for the tail until nothing is missing, or nothing new arrives for a second.
  const uint64_t d0 = monotonic_ns();
  uint64_t last_unique = 0;
  uint64_t last_progress = d0;
  while (seconds_since(d0) < 10) {
    pool.poll(5);
    const DeliveryTotals now = pool.totals(pub.published()).minus(before);
    if (now.lost == 0) {
      break;
    }
    if (now.unique != last_unique) {
      last_unique = now.unique;
      last_progress = monotonic_ns();
    } else if (seconds_since(last_progress) > 1.0) {
      break;
    }
  }
  ph.pub = result;
  ph.d = pool.totals(pub.published()).minus(before);
  ph.achieved = result.seconds > 0 ? static_cast<double>(ph.d.unique) / result.seconds : 0;
  auto &h = pool.latency();
  ph.p50 = static_cast<double>(h.quantile(0.5)) / 1e6;
  ph.p90 = static_cast<double>(h.quantile(0.9)) / 1e6;
  ph.p99 = static_cast<double>(h.quantile(0.99)) / 1e6;
  ph.p999 = static_cast<double>(h.quantile(0.999)) / 1e6;
  ph.max = static_cast<double>(h.max()) / 1e6;
  const ServerStats s1 = read_servers(a.server_pids);
  ph.cpu_s = s0.cpu_s >= 0 && s1.cpu_s >= 0 ? s1.cpu_s - s0.cpu_s : -1;
  const ServerStats r1 = read_servers(a.redis_pids);
  ph.redis_cpu_s = r0.cpu_s >= 0 && r1.cpu_s >= 0 ? r1.cpu_s - r0.cpu_s : -1;
  ph.rss_kb = s1.rss_kb;
  ph.loadgen_cpu_s = own_cpu_s() - own0;
  ph.loadgen_busy_s = pool.busy_seconds() - busy0;
  const ClientCounters &c1 = pool.counters();
  ph.churn_per_s = static_cast<double>(c1.churn_done - c0.churn_done) / result.seconds;
  ph.churn_failed = c1.churn_failed - c0.churn_failed;
  ph.server_closed = c1.server_closed - c0.server_closed;
  ph.wire_bytes = c1.wire_bytes - c0.wire_bytes;
  ph.payload_bytes = c1.payload_bytes - c0.payload_bytes;
  ph.compressed_frames = c1.compressed_frames - c0.compressed_frames;
  ph.inflate_errors = c1.inflate_errors - c0.inflate_errors;
  if (a.server_metrics) {
    const ServerMetrics m1 = read_metrics(first.host, first.port);
    ph.m.publications = delta(m0.publications, m1.publications);
    ph.m.bytes_out = delta(m0.bytes_out, m1.bytes_out);
    ph.m.frames_built = delta(m0.frames_built, m1.frames_built);
    ph.m.bytes_before = delta(m0.bytes_before, m1.bytes_before);
    ph.m.bytes_after = delta(m0.bytes_after, m1.bytes_after);
    ph.m.frames_queued = delta(m0.frames_queued, m1.frames_queued);
    ph.m.deflate_s = delta(m0.deflate_s, m1.deflate_s);
  }
  const double loss =
      ph.d.expected > 0 ? static_cast<double>(ph.d.lost) / static_cast<double>(ph.d.expected) : 1;
  ph.pass = !result.behind && !result.broken && result.errors == 0 && ph.d.expected > 0 &&
            loss < a.loss_limit && ph.p99 < a.p99_limit_ms && ph.inflate_errors == 0;
  return ph;
}

std::string phase_json(const Phase &p) {
  char buf[1600];
  std::snprintf(
      buf, sizeof buf,
      "{\"name\":\"%s\",\"target_per_s\":%.0f,\"achieved_per_s\":%.0f,\"expected\":%llu,"
      "\"received\":%llu,\"unique\":%llu,\"lost\":%llu,\"out_of_order\":%llu,"
      "\"duplicates\":%llu,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,"
      "\"max_ms\":%.3f,\"published\":%llu,\"publish_seconds\":%.3f,\"publisher_behind\":%s,"
      "\"publisher_max_lag_ms\":%.2f,\"publish_errors\":%llu,\"server_cpu_s\":%.2f,"
      "\"server_rss_kb\":%ld,\"loadgen_cpu_s\":%.2f,\"loadgen_busy_s\":%.2f,"
      "\"churn_target_per_s\":%.0f,\"churn_per_s\":%.0f,\"churn_failed\":%llu,\"server_closed\":%"
      "llu,\"wire_bytes\":%llu,\"payload_bytes\":%llu,\"compressed_frames\":%llu,"
      "\"inflate_errors\":%llu,\"srv_publications\":%.0f,\"srv_bytes_out\":%.0f,"
      "\"deflate_frames_built\":%.0f,\"deflate_bytes_before\":%.0f,\"deflate_bytes_after\":%.0f,"
      "\"deflate_frames_queued\":%.0f,\"deflate_seconds\":%.6f,\"pass\":%s}",
      p.name.c_str(), p.target, p.achieved, static_cast<unsigned long long>(p.d.expected),
      static_cast<unsigned long long>(p.d.received), static_cast<unsigned long long>(p.d.unique),
      static_cast<unsigned long long>(p.d.lost), static_cast<unsigned long long>(p.d.out_of_order),
      static_cast<unsigned long long>(p.d.duplicates), p.p50, p.p90, p.p99, p.p999, p.max,
      static_cast<unsigned long long>(p.pub.sent), p.pub.seconds, p.pub.behind ? "true" : "false",
      p.pub.max_lag_ms, static_cast<unsigned long long>(p.pub.errors), p.cpu_s, p.rss_kb,
      p.loadgen_cpu_s, p.loadgen_busy_s, p.churn_target, p.churn_per_s,
      static_cast<unsigned long long>(p.churn_failed),
      static_cast<unsigned long long>(p.server_closed),
      static_cast<unsigned long long>(p.wire_bytes),
      static_cast<unsigned long long>(p.payload_bytes),
      static_cast<unsigned long long>(p.compressed_frames),
      static_cast<unsigned long long>(p.inflate_errors), p.m.publications, p.m.bytes_out,
      p.m.frames_built, p.m.bytes_before, p.m.bytes_after, p.m.frames_queued, p.m.deflate_s,
      p.pass ? "true" : "false");
  std::string json = buf;
  if (p.redis_cpu_s >= 0) {
    // Only with --redis-pid, so that runs without it print the same line as before.
    char redis[48];
    std::snprintf(redis, sizeof redis, ",\"redis_cpu_s\":%.2f}", p.redis_cpu_s);
    json.pop_back();
    json += redis;
  }
  return json;
}

void print_phase(const Phase &p) {
  std::printf(
      "%-8s %10.0f %10.0f %10llu %10llu %7llu %5llu %5llu %7.2f %7.2f %7.2f %7.2f %8.2f "
      "%6.2f %6.2f %s%s\n",
      p.name.c_str(), p.target, p.achieved, static_cast<unsigned long long>(p.d.expected),
      static_cast<unsigned long long>(p.d.unique), static_cast<unsigned long long>(p.d.lost),
      static_cast<unsigned long long>(p.d.out_of_order),
      static_cast<unsigned long long>(p.d.duplicates), p.p50, p.p90, p.p99, p.p999, p.max, p.cpu_s,
      p.loadgen_cpu_s, p.pass ? "pass" : "FAIL", p.pub.behind ? " (publisher behind)" : "");
  if (p.d.unique > 0) {
    const double per = static_cast<double>(p.d.unique);
    std::printf("         wire %.1f B per delivery (payload %.1f B, %llu compressed frames, "
                "%llu inflate errors)",
                static_cast<double>(p.wire_bytes) / per, static_cast<double>(p.payload_bytes) / per,
                static_cast<unsigned long long>(p.compressed_frames),
                static_cast<unsigned long long>(p.inflate_errors));
    if (p.m.frames_built >= 0 && p.m.publications > 0) {
      std::printf("; server: %.0f publications, %.3f deflates and %.2f us deflating per "
                  "publication",
                  p.m.publications, p.m.frames_built / p.m.publications,
                  p.m.deflate_s * 1e6 / p.m.publications);
    }
    std::printf("\n");
  }
  if (p.churn_target > 0) {
    std::printf("         churn %.0f/s achieved %.0f/s, %llu failed\n", p.churn_target,
                p.churn_per_s, static_cast<unsigned long long>(p.churn_failed));
  }
  std::fflush(stdout);
}

} // namespace

int main(int argc, char **argv) {
  Args a;
  if (!parse_args(argc, argv, a)) {
    usage();
    return 2;
  }
  // Every client is one fd; take the hard limit.
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);

  ClientPoolOptions po;
  po.servers.clear();
  for (const std::string &url : split_commas(a.url)) {
    WsServer s;
    if (!url.starts_with("ws://") ||
        !parse_hostport(url.substr(5), s.host, s.port, s.path_template)) {
      std::fprintf(stderr, "bad --url %s (want ws://127.x.x.x:PORT/path/{room})\n", url.c_str());
      return 2;
    }
    po.servers.push_back(std::move(s));
  }
  if (po.servers.empty()) {
    std::fprintf(stderr, "bad --url %s\n", a.url.c_str());
    return 2;
  }
  po.connections = a.connections;
  po.rooms = a.rooms;
  po.max_in_flight = a.max_in_flight;
  po.bind_sources = a.bind_sources;
  po.spin = a.spin;
  po.subprotocol = a.subprotocol;
  po.deflate = a.deflate;

  PublishTarget pt;
  pt.fcall = a.fcall;
  pt.sharded = a.sharded;
  std::string pub_path;
  pt.cluster = a.publish.starts_with("redis-cluster://");
  if (a.publish.starts_with("redis://") || pt.cluster) {
    const size_t scheme = a.publish.find("://") + 3;
    const bool ok = parse_hostport(a.publish.substr(scheme), pt.host, pt.port, pub_path);
    if (!ok) {
      std::fprintf(stderr, "bad --publish %s\n", a.publish.c_str());
      return 2;
    }
  } else if (a.publish.starts_with("http://") &&
             parse_hostport(a.publish.substr(7), pt.host, pt.port, pt.path_template)) {
    pt.http = true;
  } else {
    std::fprintf(stderr, "bad --publish %s\n", a.publish.c_str());
    return 2;
  }

  ClientPool pool(po);
  Publisher pub(pt, a.rooms, a.payload_bytes, a.payload);
  std::string error;
  if (!pool.init(error) || !pub.connect(error)) {
    std::fprintf(stderr, "bench_loadgen: %s\n", error.c_str());
    return 1;
  }

  const ServerStats before = read_servers(a.server_pids);
  const uint64_t t0 = monotonic_ns();
  while (!pool.all_open() && pool.open_count() + pool.counters().server_closed < a.connections &&
         seconds_since(t0) < a.connect_timeout) {
    pool.poll(5);
    if (pool.connect_failed()) {
      break;
    }
  }
  const double connect_s = seconds_since(t0);
  const uint32_t opened = pool.open_count();
  bool subscribed = pt.http; // nchan has no Redis to ask: the handshakes are the subscriptions
  uint32_t rooms_ok = pt.http ? a.rooms : 0;
  const uint64_t s0 = monotonic_ns();
  while (!subscribed && opened == a.connections && seconds_since(s0) < 30) {
    pool.poll(20);
    subscribed = pub.all_subscribed(rooms_ok, error);
    if (!error.empty()) {
      break;
    }
  }
  // Let welcome frames and other start-up traffic settle before measuring idle memory.
  for (uint64_t w = monotonic_ns(); seconds_since(w) < 0.2;) {
    pool.poll(10);
  }
  const ServerStats after = read_servers(a.server_pids);
  const double per_conn_kb = before.rss_kb >= 0 && after.rss_kb >= 0 && opened > 0
                                 ? static_cast<double>(after.rss_kb - before.rss_kb) / opened
                                 : -1;
  std::printf("%s: %u/%u connections in %.2f s = %.0f handshakes/s (%llu connect errors), "
              "%u/%u rooms subscribed, %llu agreed permessage-deflate\n",
              a.label.c_str(), opened, a.connections, connect_s, opened / connect_s,
              static_cast<unsigned long long>(pool.counters().connect_errors), rooms_ok, a.rooms,
              static_cast<unsigned long long>(pool.counters().deflate_agreed));
  // VmRSS also grows by the code pages the first handshakes touch (about 2 MiB for the sidecar,
  // whatever the number of clients), so the anonymous part is what grows per connection.
  const double anon_per_conn_kb = before.anon_kb >= 0 && after.anon_kb >= 0 && opened > 0
                                      ? static_cast<double>(after.anon_kb - before.anon_kb) / opened
                                      : -1;
  std::printf("server RSS %ld KiB before, %ld KiB after = %.2f KiB per connection; anonymous "
              "%ld KiB before, %ld KiB after = %.2f KiB per connection\n",
              before.rss_kb, after.rss_kb, per_conn_kb, before.anon_kb, after.anon_kb,
              anon_per_conn_kb);

  // What connections that do nothing cost the server per second: its timers, pings and
  // whatever else it does for each of them. The clients only answer pings meanwhile.
  double idle_cpu_s = -1;
  uint64_t idle_pings = 0, idle_closed = 0;
  if (a.idle_seconds > 0 && opened == a.connections) {
    const ServerStats i0 = read_servers(a.server_pids);
    const ClientCounters c0 = pool.counters();
    for (uint64_t w = monotonic_ns(); seconds_since(w) < a.idle_seconds;) {
      pool.poll(50);
    }
    const ServerStats i1 = read_servers(a.server_pids);
    idle_cpu_s = i0.cpu_s >= 0 && i1.cpu_s >= 0 ? i1.cpu_s - i0.cpu_s : -1;
    idle_pings = pool.counters().pings - c0.pings;
    idle_closed = pool.counters().server_closed - c0.server_closed;
    std::printf("server CPU %.2f s over %.0f s with %u idle connections (%llu pings answered, "
                "%llu closed by the server)\n",
                idle_cpu_s, a.idle_seconds, opened, static_cast<unsigned long long>(idle_pings),
                static_cast<unsigned long long>(idle_closed));
  }

  std::vector<Phase> phases;
  double best = 0;
  std::string storm_json;
  bool storm_ok = true;
  if (opened == a.connections && subscribed && a.resume_storm > 0) {
    StormOptions so;
    so.behind = a.resume_storm;
    so.max_in_flight = a.storm_in_flight;
    // The storm watches one server: the first URL's, and the first pid's memory.
    so.server_pid = a.server_pids.empty() ? 0 : a.server_pids.front();
    so.metrics_host = po.servers.front().host; // /metrics is on the listener unless admin.listen
    so.metrics_port = po.servers.front().port;
    storm_json = run_resume_storm(pool, pub, so, storm_ok);
  } else if (opened == a.connections && subscribed) {
    std::printf("%-8s %10s %10s %10s %10s %7s %5s %5s %7s %7s %7s %7s %8s %6s %6s %s\n", "phase",
                "target/s", "achieved/s", "expected", "received", "lost", "ooo", "dup", "p50ms",
                "p90ms", "p99ms", "p99.9ms", "max_ms", "srv_s", "gen_busy", "result");
    if (a.fixed_rate > 0) {
      phases.push_back(run_phase(pool, pub, a, po, "fixed", a.fixed_rate, a.fixed_seconds, 0));
      print_phase(phases.back());
      if (a.churn > 0) {
        phases.push_back(
            run_phase(pool, pub, a, po, "churn", a.fixed_rate, a.fixed_seconds, a.churn));
        print_phase(phases.back());
      }
    }
    for (size_t i = 0; i < a.rates.size(); ++i) {
      phases.push_back(run_phase(pool, pub, a, po, "step" + std::to_string(i + 1), a.rates[i],
                                 a.step_seconds, 0));
      print_phase(phases.back());
      if (!phases.back().pass) {
        break;
      }
      best = a.rates[i];
    }
  }
  const ServerStats end = read_servers(a.server_pids);
  const ClientCounters &c = pool.counters();
  std::string json;
  json += "{\"label\":\"" + a.label + "\"";
  char buf[1400];
  std::snprintf(
      buf, sizeof buf,
      ",\"connections\":%u,\"opened\":%u,\"rooms\":%u,\"rooms_subscribed\":%u,"
      "\"connect_seconds\":%.3f,\"handshakes_per_s\":%.0f,\"connect_errors\":%llu,"
      "\"rss_before_kb\":%ld,\"rss_after_kb\":%ld,\"rss_per_conn_kb\":%.3f,"
      "\"anon_per_conn_kb\":%.3f,"
      "\"rss_end_kb\":%ld,\"server_cpu_total_s\":%.2f,\"server_closed\":%llu,"
      "\"foreign_frames\":%llu,\"misrouted\":%llu,\"max_passing_rate\":%.0f,"
      "\"idle_seconds\":%.1f,\"idle_server_cpu_s\":%.2f,\"idle_pings\":%llu,"
      "\"idle_server_closed\":%llu,\"deflate_offered\":%s,\"deflate_agreed\":%llu,"
      "\"payload\":\"%s\",\"phases\":[",
      a.connections, opened, a.rooms, rooms_ok, connect_s, opened / connect_s,
      static_cast<unsigned long long>(c.connect_errors), before.rss_kb, after.rss_kb, per_conn_kb,
      anon_per_conn_kb, end.rss_kb, end.cpu_s, static_cast<unsigned long long>(c.server_closed),
      static_cast<unsigned long long>(c.foreign), static_cast<unsigned long long>(c.misrouted),
      best, a.idle_seconds, idle_cpu_s, static_cast<unsigned long long>(idle_pings),
      static_cast<unsigned long long>(idle_closed), a.deflate ? "true" : "false",
      static_cast<unsigned long long>(c.deflate_agreed),
      a.payload == PayloadKind::json ? "json" : "pad");
  json += buf;
  for (size_t i = 0; i < phases.size(); ++i) {
    json += (i ? "," : "") + phase_json(phases[i]);
  }
  json += "]";
  if (!storm_json.empty()) {
    json += ",\"storm\":" + storm_json;
  }
  json += "}";
  std::printf("%s\n", json.c_str());
  pool.close_all();
  const bool ok = opened == a.connections && subscribed && storm_ok;
  return ok ? 0 : 1;
}
