// Fuzzes the client address behind a reverse proxy: X-Forwarded-For as any stranger may send it
// (a proxy appends to whatever the client wrote), and the trusted_proxies patterns of a config.
//
// Input layout: byte 0 picks the TCP peer from a fixed list (trusted and untrusted, IPv4 and
// IPv6); the rest up to the first '\n' is one extra trusted_proxies pattern, and what follows it
// is the X-Forwarded-For header. Without a '\n' the whole rest is the header.
//
// Invariants, each an abort when broken, checked against a reference walk written here:
// - the answer is the peer, or one whole comma-separated entry of the header; it is a complete
//   address (inet_pton accepts all of it: no NUL, nothing after the address) with no spaces
//   around it, and it is only believed from a trusted peer;
// - the answer equals the reference: from the right, skip trusted entries; the first untrusted
//   one is the client; a malformed entry means the peer; all trusted means the leftmost entry
//   (an empty first entry, when the header starts with a comma, is skipped);
// - valid_pattern agrees with the constructor: an accepted pattern makes its own address trusted.
#include <arpa/inet.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "client_ip.h"
#include "fuzz_stats.h"

namespace {

enum : size_t { kPeer, kForwarded, kMalformed, kAllTrusted, kPatternAccepted };
fuzz::Stats stats("fuzz_xff", {{"answer_peer", true},
                               {"answer_forwarded", true},
                               {"malformed_entry", true},
                               {"all_hops_trusted", true},
                               {"extra_pattern_accepted", true}});

[[noreturn]] void broken(const char *what, std::string_view a, std::string_view b) {
  std::fprintf(stderr, "fuzz_xff: %s (\"%.*s\", \"%.*s\")\n", what, static_cast<int>(a.size()),
               a.data(), static_cast<int>(b.size()), b.data());
  std::abort();
}

const char *const kPeers[] = {"10.0.0.7",    "192.168.1.1",    "::1",   "fd00::1", "203.0.113.9",
                              "2001:db8::5", "10.255.255.255", "fd00::"};

// A complete address: all of the text parses, so it holds no NUL and nothing after the address.
bool full_address(std::string_view s) {
  if (s.find('\0') != std::string_view::npos)
    return false;
  std::string z(s);
  unsigned char buf[16];
  return inet_pton(AF_INET, z.c_str(), buf) == 1 || inet_pton(AF_INET6, z.c_str(), buf) == 1;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

// Splits left to right, then walks the list from the right: written apart from client_ip.cpp so
// that both have to agree.
std::string reference(const sidecar::TrustedProxies &t, const std::string &peer,
                      std::string_view xff, size_t &which) {
  if (t.empty() || !t.contains(peer)) {
    which = kPeer;
    return peer;
  }
  std::vector<std::string_view> items;
  if (!xff.empty()) {
    size_t start = 0;
    for (;;) {
      size_t comma = xff.find(',', start);
      items.push_back(trim(xff.substr(start, comma - start)));
      if (comma == std::string_view::npos)
        break;
      start = comma + 1;
    }
  }
  // client_ip.cpp walks with rfind and stops when nothing is left of the first comma, so a
  // header that starts with a comma has its empty first entry skipped rather than treated as
  // malformed. Either way the answer is a trusted hop, never a client-written address; the
  // reference follows it so that a real disagreement stands out.
  if (!items.empty() && xff.front() == ',')
    items.erase(items.begin());
  std::string last = peer;
  for (size_t i = items.size(); i-- > 0;) {
    if (!full_address(items[i])) {
      which = kMalformed;
      return peer;
    }
    if (!t.contains(items[i])) {
      which = kForwarded;
      return std::string(items[i]);
    }
    last = std::string(items[i]);
  }
  which = items.empty() ? kPeer : kAllTrusted;
  return last;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > 4096)
    return 0;
  const std::string peer = kPeers[data[0] % (sizeof kPeers / sizeof kPeers[0])];
  std::string_view rest(reinterpret_cast<const char *>(data + 1), size - 1);
  std::string_view extra;
  std::string_view xff = rest;
  if (size_t nl = rest.find('\n'); nl != std::string_view::npos) {
    extra = rest.substr(0, nl);
    xff = rest.substr(nl + 1);
  }

  std::vector<std::string> patterns = {"10.0.0.0/8", "192.168.1.1", "::1", "fd00::/8"};
  std::string reason;
  if (!extra.empty()) {
    if (sidecar::TrustedProxies::valid_pattern(extra, reason)) {
      patterns.emplace_back(extra);
      stats.hit(kPatternAccepted);
      // The address part of an accepted pattern is inside its own network.
      sidecar::TrustedProxies only({std::string(extra)});
      std::string_view addr = extra.substr(0, extra.find('/'));
      if (only.empty() || !only.contains(addr))
        broken("an accepted pattern does not contain its own address", extra, addr);
    } else if (reason.empty()) {
      broken("a refused pattern has no reason", extra, "");
    }
  }
  sidecar::TrustedProxies trusted(patterns);

  std::string got = trusted.client_ip(peer, xff);
  size_t which = kPeer;
  std::string want = reference(trusted, peer, xff, which);
  if (got != want)
    broken("client_ip disagrees with the reference walk", got, want);
  if (got != peer) {
    if (!full_address(got))
      broken("the answer is not a complete address", got, xff);
    if (!trusted.contains(peer))
      broken("an entry was believed from an untrusted peer", got, peer);
  }
  stats.hit(which);
  return 0;
}
