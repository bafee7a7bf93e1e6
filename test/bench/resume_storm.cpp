// The resume storm; see resume_storm.h.
#include "resume_storm.h"

#include "client_pool.h"
#include "proc_stats.h"
#include "publisher.h"

#include <algorithm>
#include <arpa/inet.h>
#include <cstdio>
#include <cstdlib>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <vector>

namespace sidecar::bench {

namespace {

double since_s(uint64_t t0) { return static_cast<double>(monotonic_ns() - t0) / 1e9; }

void sleep_ms(long ms) {
  timespec ts{ms / 1000, (ms % 1000) * 1'000'000};
  nanosleep(&ts, nullptr);
}

std::string percent_encode(std::string_view s) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const char ch : s) {
    const auto u = static_cast<unsigned char>(ch);
    if ((u >= 'A' && u <= 'Z') || (u >= 'a' && u <= 'z') || (u >= '0' && u <= '9') || u == '-' ||
        u == '.' || u == '_' || u == '~') {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    }
  }
  return out;
}

// The sidecar's counters that show coalescing, read from GET /metrics; -1 when unavailable.
struct HistoryMetrics {
  double reads = -1;
  double coalesced = -1;
  double recovered = -1;
};

HistoryMetrics fetch_metrics(const StormOptions &o) {
  HistoryMetrics m;
  if (o.metrics_port == 0) {
    return m;
  }
  const std::string text = fetch_metrics_text(o.metrics_host, o.metrics_port);
  m.reads = metric_value(text, "sidecar_history_reads_total");
  m.coalesced = metric_value(text, "sidecar_history_reads_coalesced_total");
  m.recovered = metric_value(text, "sidecar_resumes_total{result=\"recovered\"}");
  return m;
}

double quantile(std::vector<double> v, double q) {
  if (v.empty()) {
    return -1;
  }
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

} // namespace

std::string run_resume_storm(ClientPool &pool, Publisher &pub, const StormOptions &o, bool &ok) {
  const uint32_t n = pool.connections();
  const uint32_t rooms = pool.rooms();
  const auto all = [&](auto pred) {
    for (uint32_t i = 0; i < n; ++i) {
      if (!pred(i)) {
        return false;
      }
    }
    return true;
  };
  const auto wait_polling = [&](auto done) {
    for (const uint64_t t = monotonic_ns(); since_s(t) < o.timeout_s;) {
      pool.poll(5);
      if (done()) {
        return true;
      }
    }
    return false;
  };
  std::string error;
  ok = false;

  // 1. Every client has its welcome, then one message per room, so that each client's position
  // is one it saw in an envelope.
  bool ready =
      wait_polling([&] { return all([&](uint32_t i) { return pool.position(i).welcomed; }); });
  PublishResult warm;
  ready = ready && pub.burst(rooms, warm) && warm.errors == 0;
  ready = ready && wait_polling([&] {
            return all([&](uint32_t i) {
              return pool.tracker(i).next() == pub.published()[pool.room_of(i)];
            });
          });
  uint32_t disagree = 0;
  for (uint32_t i = 0; i < n; ++i) {
    const ClientPosition &p = pool.position(i);
    const ClientPosition &first = pool.position(pool.room_of(i)); // client r is in room r
    disagree += !p.has_offset || p.offset != first.offset;
  }

  // 2. All leave; once the sidecar has unsubscribed every room, `behind` messages per room are
  // published while nobody listens.
  pool.reconnect_all(o.max_in_flight); // closes now; connects start at the next poll()
  uint32_t subscribed = rooms;
  for (const uint64_t t = monotonic_ns(); since_s(t) < o.timeout_s && subscribed > 0;) {
    pub.all_subscribed(subscribed, error);
    sleep_ms(20);
  }
  PublishResult missed;
  ready = ready && pub.burst(static_cast<uint64_t>(rooms) * o.behind, missed) && missed.errors == 0;
  for (uint32_t r = 0; r < rooms; ++r) {
    const std::string pos = "org:r" + std::to_string(r) + "@" + pool.room_epoch(r) + ":" +
                            std::to_string(pool.position(r).offset);
    pool.set_room_query(r, "?recover=" + percent_encode(pos));
  }

  // 3. All come back at once. RSS is polled every few milliseconds for its peak.
  const long long fcall0 = pub.command_stat("fcall", "calls");
  const HistoryMetrics m0 = fetch_metrics(o);
  const ClientCounters c0 = pool.counters();
  const ServerStats s0 = read_server(o.server_pid);
  long peak_rss = s0.rss_kb;
  pool.set_live_target(o.behind);
  const uint64_t t0 = monotonic_ns();
  uint64_t next_check = t0;
  uint32_t live = 0;
  while (ready && since_s(t0) < o.timeout_s) {
    pool.poll(1);
    const uint64_t now = monotonic_ns();
    if (now < next_check) {
      continue;
    }
    next_check = now + 5'000'000;
    peak_rss = std::max(peak_rss, read_server(o.server_pid).rss_kb);
    live = 0;
    for (uint32_t i = 0; i < n; ++i) {
      live += pool.position(i).live_ns != 0;
    }
    if (live == n || pool.connect_failed()) {
      break;
    }
  }
  const double all_live_s = since_s(t0);
  // A little longer, so that a duplicate or an extra message would be seen.
  for (const uint64_t t = monotonic_ns(); since_s(t) < 0.3;) {
    pool.poll(5);
  }
  const long long fcall1 = pub.command_stat("fcall", "calls");
  const HistoryMetrics m1 = fetch_metrics(o);
  const ServerStats s1 = read_server(o.server_pid);
  peak_rss = std::max(peak_rss, s1.rss_kb);
  const ClientCounters &c1 = pool.counters();

  // 4. Verify per client: recovered, exactly the missed messages, once each, in order.
  uint32_t recovered = 0;
  uint32_t exact = 0;
  std::vector<double> live_ms;
  for (uint32_t i = 0; i < n; ++i) {
    const ClientPosition &p = pool.position(i);
    const SeqTracker &t = pool.tracker(i);
    const uint64_t published = pub.published()[pool.room_of(i)];
    recovered += p.recovered;
    exact += p.recovered && p.since_welcome == o.behind && t.lost(published) == 0 &&
             t.duplicates() == 0 && t.out_of_order() == 0 && t.received() == published;
    if (p.live_ns != 0) {
      live_ms.push_back(static_cast<double>(p.live_ns - t0) / 1e6);
    }
  }
  const uint64_t resyncs = c1.resyncs - c0.resyncs;
  const uint64_t skips = c1.offset_skips - c0.offset_skips;
  const uint64_t epochs = c1.epoch_changes - c0.epoch_changes;
  ok = ready && live == n && exact == n && resyncs == 0 && skips == 0 && epochs == 0 &&
       disagree == 0;
  const long long fcalls = fcall0 >= 0 && fcall1 >= 0 ? fcall1 - fcall0 : -1;
  const double reads = m0.reads >= 0 && m1.reads >= 0 ? m1.reads - m0.reads : -1;
  const double coalesced =
      m0.coalesced >= 0 && m1.coalesced >= 0 ? m1.coalesced - m0.coalesced : -1;

  std::printf("resume storm: %u clients in %u rooms, %u messages behind, %u handshakes in flight\n"
              "  all live in %.3f s (p50 %.1f ms, p99 %.1f ms): %u/%u live, %u recovered, %u exact "
              "(once, in order); %llu resyncs, %llu offset skips, %llu epoch changes, %u "
              "positions disagreeing\n"
              "  Redis FCALLs during the storm %lld (rooms %u); sidecar history reads %.0f, "
              "coalesced %.0f\n"
              "  server RSS %ld KiB before, peak %ld KiB during, %ld KiB after; VmHWM %ld KiB\n",
              n, rooms, o.behind, o.max_in_flight, all_live_s, quantile(live_ms, 0.5),
              quantile(live_ms, 0.99), live, n, recovered, exact,
              static_cast<unsigned long long>(resyncs), static_cast<unsigned long long>(skips),
              static_cast<unsigned long long>(epochs), disagree, fcalls, rooms, reads, coalesced,
              s0.rss_kb, peak_rss, s1.rss_kb, s1.hwm_kb);
  char buf[1024];
  std::snprintf(buf, sizeof buf,
                "{\"clients\":%u,\"rooms\":%u,\"behind\":%u,\"max_in_flight\":%u,"
                "\"all_live_s\":%.3f,\"live_p50_ms\":%.1f,\"live_p99_ms\":%.1f,\"live\":%u,"
                "\"recovered\":%u,\"exact\":%u,\"resyncs\":%llu,\"offset_skips\":%llu,"
                "\"epoch_changes\":%llu,\"positions_disagreeing\":%u,\"fcalls\":%lld,"
                "\"history_reads\":%.0f,\"history_reads_coalesced\":%.0f,\"rss_before_kb\":%ld,"
                "\"rss_peak_kb\":%ld,\"rss_after_kb\":%ld,\"hwm_kb\":%ld,\"ok\":%s}",
                n, rooms, o.behind, o.max_in_flight, all_live_s, quantile(live_ms, 0.5),
                quantile(live_ms, 0.99), live, recovered, exact,
                static_cast<unsigned long long>(resyncs), static_cast<unsigned long long>(skips),
                static_cast<unsigned long long>(epochs), disagree, fcalls, reads, coalesced,
                s0.rss_kb, peak_rss, s1.rss_kb, s1.hwm_kb, ok ? "true" : "false");
  std::fflush(stdout);
  return buf;
}

} // namespace sidecar::bench
