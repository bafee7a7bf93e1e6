// Reads /proc/<pid>/status and /proc/<pid>/stat; see proc_stats.h.
#include "proc_stats.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

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

ServerStats read_servers(const std::vector<int> &pids) {
  if (pids.empty()) {
    return ServerStats{};
  }
  ServerStats sum = read_server(pids.front());
  for (size_t i = 1; i < pids.size(); ++i) {
    const ServerStats s = read_server(pids[i]);
    const auto add = [](auto &total, auto v) { total = total >= 0 && v >= 0 ? total + v : -1; };
    add(sum.rss_kb, s.rss_kb);
    add(sum.anon_kb, s.anon_kb);
    add(sum.hwm_kb, s.hwm_kb);
    add(sum.cpu_s, s.cpu_s);
  }
  return sum;
}

std::string fetch_metrics_text(const std::string &host, uint16_t port) {
  std::string text;
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return text;
  }
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(port);
  inet_pton(AF_INET, host.c_str(), &dst.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr *>(&dst), sizeof dst) == 0) {
    const std::string req =
        "GET /metrics HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n";
    if (::write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
      char buf[65536];
      for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0 && text.size() < (8u << 20);) {
        text.append(buf, static_cast<size_t>(n));
      }
    }
  }
  ::close(fd);
  return text;
}

double metric_value(const std::string &text, const std::string &name) {
  const std::string line = "\n" + name + " ";
  const size_t at = text.find(line);
  return at == std::string::npos ? -1 : std::strtod(text.c_str() + at + line.size(), nullptr);
}

} // namespace sidecar::bench
