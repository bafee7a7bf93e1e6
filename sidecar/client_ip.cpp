// TrustedProxies; see client_ip.h.
#include "client_ip.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

#include "text.h"

namespace sidecar {

std::optional<IpAddress> parse_ip(std::string_view text) {
  // inet_pton needs a terminated string, and one with no NUL inside it.
  if (text.find('\0') != std::string_view::npos || text.size() > INET6_ADDRSTRLEN)
    return std::nullopt;
  std::string z(text);
  IpAddress ip;
  if (inet_pton(AF_INET, z.c_str(), ip.bytes) == 1)
    return ip;
  ip.family = IpAddress::Family::v6;
  if (inet_pton(AF_INET6, z.c_str(), ip.bytes) == 1)
    return ip;
  return std::nullopt;
}

bool TrustedProxies::parse(std::string_view pattern, Net &out) {
  size_t slash = pattern.find('/');
  std::optional<IpAddress> addr = parse_ip(pattern.substr(0, slash));
  if (!addr)
    return false;
  out.addr = *addr;
  int max = addr->family == IpAddress::Family::v4 ? 32 : 128;
  out.prefix = max;
  if (slash != std::string_view::npos) {
    std::string_view bits = pattern.substr(slash + 1);
    auto [end, ec] = std::from_chars(bits.data(), bits.data() + bits.size(), out.prefix);
    if (bits.empty() || ec != std::errc() || end != bits.data() + bits.size() || out.prefix < 0 ||
        out.prefix > max)
      return false;
  }
  return true;
}

bool TrustedProxies::valid_pattern(std::string_view pattern, std::string &reason) {
  Net n;
  if (parse(pattern, n))
    return true;
  reason = "must be an IP address or network like \"10.0.0.0/8\" or \"::1\", got " + quote(pattern);
  return false;
}

TrustedProxies::TrustedProxies(const std::vector<std::string> &patterns) {
  for (const std::string &p : patterns) {
    Net n;
    if (parse(p, n))
      nets_.push_back(n);
  }
}

bool TrustedProxies::contains(std::string_view ip) const {
  std::optional<IpAddress> parsed = parse_ip(trim(ip));
  if (!parsed)
    return false;
  const uint8_t *a = parsed->bytes;
  for (const Net &n : nets_) {
    if (n.addr.family != parsed->family)
      continue;
    int full = n.prefix / 8, rest = n.prefix % 8;
    if (std::memcmp(a, n.addr.bytes, static_cast<size_t>(full)) != 0)
      continue;
    if (rest != 0) {
      auto mask = static_cast<uint8_t>(0xff << (8 - rest));
      if ((a[full] & mask) != (n.addr.bytes[full] & mask))
        continue;
    }
    return true;
  }
  return false;
}

std::string TrustedProxies::client_ip(const std::string &peer,
                                      std::string_view forwarded_for) const {
  if (nets_.empty() || !contains(peer))
    return peer;
  // Walk right to left: each hop appended the address it saw; the first one that is not ours is
  // the client. Anything to its left was written by the client and cannot be believed.
  std::string_view rest = forwarded_for;
  std::string last = peer;
  while (!rest.empty()) {
    size_t comma = rest.rfind(',');
    std::string_view item = trim(comma == std::string_view::npos ? rest : rest.substr(comma + 1));
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(0, comma);
    std::string ip(item);
    if (!parse_ip(ip))
      return peer; // a malformed entry: trust nothing beyond the proxy itself
    if (!contains(ip))
      return ip;
    last = std::move(ip);
  }
  return last; // every hop is ours: the leftmost one is the closest we know to the client
}

} // namespace sidecar
