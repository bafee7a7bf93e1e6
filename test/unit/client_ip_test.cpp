#include "client_ip.h"

#include <doctest/doctest.h>

using namespace sidecar;

TEST_CASE("proxy patterns are addresses or networks, v4 or v6") {
  std::string reason;
  for (const char *ok : {"127.0.0.1", "10.0.0.0/8", "0.0.0.0/0", "::1", "fd00::/8", "::/0"})
    CHECK(TrustedProxies::valid_pattern(ok, reason));
  for (const char *bad :
       {"", "10.0.0.0/33", "10.0.0.0/", "::1/129", "localhost", "10.0.0.0/8x", "10.0.0.256", "*"}) {
    CAPTURE(bad);
    CHECK_FALSE(TrustedProxies::valid_pattern(bad, reason));
  }
  CHECK(reason.find("must be an IP address or network") == 0);
}

TEST_CASE("networks match on their prefix only") {
  TrustedProxies p({"10.0.0.0/8", "192.168.1.128/25", "fd00::/8", "127.0.0.1"});
  CHECK(p.contains("10.255.1.2"));
  CHECK_FALSE(p.contains("11.0.0.1"));
  CHECK(p.contains("192.168.1.200"));
  CHECK_FALSE(p.contains("192.168.1.127"));
  CHECK(p.contains("fd12::1"));
  CHECK_FALSE(p.contains("fe80::1"));
  CHECK(p.contains("127.0.0.1"));
  CHECK_FALSE(p.contains("127.0.0.2"));
  CHECK_FALSE(p.contains("not an ip"));
}

TEST_CASE("the client is the rightmost forwarded address that is not a trusted proxy") {
  TrustedProxies p({"127.0.0.1", "10.0.0.0/8"});
  CHECK(p.client_ip("127.0.0.1", "203.0.113.7") == "203.0.113.7");
  // A client may write anything on the left; only what our proxies appended counts.
  CHECK(p.client_ip("127.0.0.1", "6.6.6.6, 198.51.100.1, 10.1.2.3") == "198.51.100.1");
  CHECK(p.client_ip("127.0.0.1", "") == "127.0.0.1");
  CHECK(p.client_ip("127.0.0.1", "10.0.0.1, 10.0.0.2") == "10.0.0.1");
  CHECK(p.client_ip("127.0.0.1", "garbage, 1.2.3.4") == "1.2.3.4");
  CHECK(p.client_ip("127.0.0.1", "1.2.3.4, garbage") == "127.0.0.1");
  // A peer that is not trusted cannot name anyone else.
  CHECK(p.client_ip("192.0.2.9", "203.0.113.7") == "192.0.2.9");
  CHECK(TrustedProxies().client_ip("127.0.0.1", "203.0.113.7") == "127.0.0.1");
}

TEST_CASE("a forwarded entry with a NUL is malformed, not the address before the NUL") {
  // inet_pton stops at a NUL: without the check, "1.2.3.4\0junk" would be stored whole, a new
  // per-IP identity for every suffix.
  TrustedProxies p({"127.0.0.1"});
  CHECK(p.client_ip("127.0.0.1", std::string_view("1.2.3.4\0junk", 12)) == "127.0.0.1");
  CHECK(p.client_ip("127.0.0.1", std::string_view("::1\0", 4)) == "127.0.0.1");
}

TEST_CASE("parse_ip reads numeric IPv4 and IPv6 addresses and nothing else") {
  auto v4 = parse_ip("10.1.2.3");
  REQUIRE(v4.has_value());
  CHECK(v4->family == IpAddress::Family::v4);
  CHECK((v4->bytes[0] == 10 && v4->bytes[3] == 3 && v4->bytes[4] == 0));
  auto v6 = parse_ip("::1");
  REQUIRE(v6.has_value());
  CHECK(v6->family == IpAddress::Family::v6);
  CHECK(v6->bytes[15] == 1);
  CHECK(parse_ip("::ffff:1.2.3.4").has_value());
  for (std::string_view bad :
       {std::string_view(""), std::string_view("localhost"), std::string_view("[::1]"),
        std::string_view("1.2.3.4:80"), std::string_view(" 1.2.3.4"), std::string_view("1.2.3"),
        std::string_view("999.1.1.1"), std::string_view("1:2"), std::string_view("fe80::1%eth0"),
        std::string_view("1.2.3.4\0", 8), std::string_view("::1\0junk", 8)}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_ip(bad).has_value());
  }
}
