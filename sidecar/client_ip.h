// Client addresses behind a reverse proxy. When the TCP peer is a proxy we trust
// (`trusted_proxies`), the client is the rightmost X-Forwarded-For entry that is not itself a
// trusted proxy; otherwise it is the peer. Per-IP limits and the status endpoint use the result.
// Pure string and address work, no I/O.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sidecar {

class TrustedProxies {
public:
  // An address ("10.0.0.1", "::1") or a network ("10.0.0.0/8", "fd00::/8"). False with a reason
  // otherwise.
  static bool valid_pattern(std::string_view pattern, std::string &reason);

  TrustedProxies() = default;
  // Patterns must have passed valid_pattern (config loading checks them); others are ignored.
  explicit TrustedProxies(const std::vector<std::string> &patterns);

  bool contains(std::string_view ip) const;
  // `forwarded_for` is the X-Forwarded-For header (all of its lines joined), or empty.
  std::string client_ip(const std::string &peer, std::string_view forwarded_for) const;
  bool empty() const { return nets_.empty(); }

private:
  struct Net {
    int family = 0;
    uint8_t addr[16] = {};
    int prefix = 0;
  };
  static bool parse(std::string_view pattern, Net &out);
  std::vector<Net> nets_;
};

} // namespace sidecar
