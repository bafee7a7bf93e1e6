// Reads /proc/<pid>/status and /proc/<pid>/stat; see proc_stats.h.
#include "proc_stats.h"

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <unistd.h>

namespace sidecar::bench {

ServerStats read_server(int pid) {
  ServerStats s;
  if (pid <= 0) {
    return s;
  }
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.starts_with("VmRSS:")) {
      s.rss_kb = std::strtol(line.c_str() + 6, nullptr, 10);
    } else if (line.starts_with("RssAnon:")) {
      s.anon_kb = std::strtol(line.c_str() + 8, nullptr, 10);
    } else if (line.starts_with("VmHWM:")) {
      s.hwm_kb = std::strtol(line.c_str() + 6, nullptr, 10);
    }
  }
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
  if (auto p = all.rfind(')'); p != std::string::npos) {
    std::istringstream rest(all.substr(p + 2));
    std::string field;
    unsigned long long utime = 0;
    unsigned long long stime = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i) {
      if (i == 14) {
        utime = std::strtoull(field.c_str(), nullptr, 10);
      } else if (i == 15) {
        stime = std::strtoull(field.c_str(), nullptr, 10);
      }
    }
    s.cpu_s = static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
  }
  return s;
}

} // namespace sidecar::bench
