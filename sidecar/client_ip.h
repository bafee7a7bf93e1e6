// Client addresses behind a reverse proxy. When the TCP peer is a proxy we trust
// (`trusted_proxies`), the client is the rightmost X-Forwarded-For entry that is not itself a
// trusted proxy; otherwise it is the peer. Per-IP limits and the status endpoint use the result.
// Pure string and address work, no I/O.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sidecar {

// A numeric address in network byte order; an IPv4 address fills the first 4 of the 16 bytes.
struct IpAddress {
  enum class Family : uint8_t { v4, v6 };
  Family family = Family::v4;
  uint8_t bytes[16] = {};
};

// The one parser for numeric addresses ("10.0.0.1", "::1", "::ffff:1.2.3.4"), for client
// addresses, proxy patterns, listen addresses and Origin hosts alike. No names, brackets, ports,
// zone ids or surrounding spaces; a NUL anywhere is refused (inet_pton would stop at it and
// accept "1.2.3.4\0junk").
std::optional<IpAddress> parse_ip(std::string_view text);

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
    IpAddress addr;
    int prefix = 0;
  };
  static bool parse(std::string_view pattern, Net &out);
  std::vector<Net> nets_;
};

} // namespace sidecar
