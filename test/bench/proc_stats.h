// The server's memory and CPU as /proc tells them, read by the load generator between phases
// and polled during the resume storm. Linux only, like the rest of the bench.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sidecar::bench {

struct ServerStats {
  long rss_kb = -1; // VmRSS
  // RssAnon: the part of VmRSS that is the process's own memory (heap, anonymous mappings),
  // without the pages of its binary and libraries, which the first requests page in once.
  long anon_kb = -1;
  long hwm_kb = -1;  // VmHWM: the process's peak RSS since it started
  double cpu_s = -1; // utime + stime
};

// All fields stay -1 when pid <= 0 or the process is gone.
ServerStats read_server(int pid);
// The sum over several processes (two sidecars, three Redis masters); a field stays -1 when the
// list is empty or any of them cannot be read, so that a missing process never passes for an
// idle one. One pid gives exactly read_server(pid).
ServerStats read_servers(const std::vector<int> &pids);

// The body of GET /metrics from host:port (the sidecar serves it on its listener unless
// admin.listen moves it); "" when the server does not answer within 5 s.
std::string fetch_metrics_text(const std::string &host, uint16_t port);
// One sample of Prometheus text, by its full name (labels included); -1 when absent.
double metric_value(const std::string &text, const std::string &name);

} // namespace sidecar::bench
