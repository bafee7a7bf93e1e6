// The resume storm (README "Performance", history rows): sidecar.v1 clients see one message per
// room, all disconnect, `behind` messages per room are published with FCALL while they are away,
// then all reconnect at once with `recover` positions; measured: time until every client is live
// again (a recovered welcome and every missed message, exactly once and in order), the Redis
// commands that cost, and the server's peak RSS.
#pragma once

#include <string>

namespace sidecar::bench {

class ClientPool;
class Publisher;

struct StormOptions {
  uint32_t behind = 100;         // messages published per room while the clients are away
  uint32_t max_in_flight = 4096; // handshakes in flight during the reconnect
  double timeout_s = 60;         // for each wait; the storm gives up and reports after it
  int server_pid = 0;            // for VmRSS/VmHWM; 0: not measured
  std::string metrics_host;      // GET /metrics here for the sidecar's history read counters
  uint16_t metrics_port = 0;     // 0: not asked
};

// Runs the storm on a pool whose clients are all open (sidecar.v1) and whose rooms are all
// subscribed. Prints a human summary and returns the storm's JSON object (no trailing newline).
// `ok` is true when every client came back recovered with exactly the missed messages in order.
std::string run_resume_storm(ClientPool &pool, Publisher &pub, const StormOptions &o, bool &ok);

} // namespace sidecar::bench
