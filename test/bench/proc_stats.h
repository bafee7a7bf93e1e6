// The server's memory and CPU as /proc tells them, read by the load generator between phases
// and polled during the resume storm. Linux only, like the rest of the bench.
#pragma once

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

} // namespace sidecar::bench
