// TrustedProxies; see client_ip.h.
#include "client_ip.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace sidecar {
namespace {

// Parses an IPv4 or IPv6 address into 16 bytes (IPv4 in the first 4); returns the family or 0.
// inet_pton stops at a NUL, so "1.2.3.4\0junk" would pass and the junk would be stored with it.
int parse_address(const std::string &text, uint8_t out[16]) {
  std::memset(out, 0, 16);
  if (text.find('\0') != std::string::npos)
    return 0;
  if (inet_pton(AF_INET, text.c_str(), out) == 1)
    return AF_INET;
  if (inet_pton(AF_INET6, text.c_str(), out) == 1)
    return AF_INET6;
  return 0;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

} // namespace

bool TrustedProxies::parse(std::string_view pattern, Net &out) {
  size_t slash = pattern.find('/');
  std::string addr(pattern.substr(0, slash));
  out.family = parse_address(addr, out.addr);
  if (out.family == 0)
    return false;
  int max = out.family == AF_INET ? 32 : 128;
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
  reason = "must be an IP address or network like \"10.0.0.0/8\" or \"::1\", got \"" +
           std::string(pattern) + "\"";
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
  uint8_t a[16];
  int family = parse_address(std::string(trim(ip)), a);
  if (family == 0)
    return false;
  for (const Net &n : nets_) {
    if (n.family != family)
      continue;
    int full = n.prefix / 8, rest = n.prefix % 8;
    if (std::memcmp(a, n.addr, static_cast<size_t>(full)) != 0)
      continue;
    if (rest != 0) {
      auto mask = static_cast<uint8_t>(0xff << (8 - rest));
      if ((a[full] & mask) != (n.addr[full] & mask))
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
    uint8_t scratch[16];
    std::string ip(item);
    if (parse_address(ip, scratch) == 0)
      return peer; // a malformed entry: trust nothing beyond the proxy itself
    if (!contains(ip))
      return ip;
    last = std::move(ip);
  }
  return last; // every hop is ours: the leftmost one is the closest we know to the client
}

} // namespace sidecar
