// The shared text helpers: trim, quote, decimal numbers, both percent-decoding rules and the
// ISO-8601 clock format.
#include "text.h"

#include <doctest/doctest.h>

using namespace sidecar;
using namespace std::string_view_literals;

TEST_CASE("trim drops spaces and tabs at both ends and nothing else") {
  CHECK(trim("  a b\t ") == "a b");
  CHECK(trim("\t\t") == "");
  CHECK(trim("") == "");
  CHECK(trim("x") == "x");
  // Other whitespace is not HTTP's optional whitespace and stays, so that it can be refused.
  CHECK(trim("\r\na\n") == "\r\na\n");
  CHECK(trim(" \0 "sv) == "\0"sv);
}

TEST_CASE("quote wraps text in double quotes without escaping it") {
  CHECK(quote("2x") == "\"2x\"");
  CHECK(quote("") == "\"\"");
  CHECK(quote("a\"b") == "\"a\"b\"");
}

TEST_CASE("parse_u64 takes plain decimal digits only") {
  uint64_t v = 7;
  CHECK((parse_u64("0", v) && v == 0));
  CHECK((parse_u64("18446744073709551615", v) && v == UINT64_MAX));
  for (std::string_view bad : {""sv, "-1"sv, "+5"sv, "0x10"sv, "1e3"sv, "1_000"sv, " 1"sv, "1 "sv,
                               "18446744073709551616"sv, "1\0"sv}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_u64(bad, v));
  }
}

TEST_CASE("strict percent-decoding keeps a plus and refuses a malformed escape") {
  CHECK(percent_decode("p%40ss", PercentRule::strict) == "p@ss");
  CHECK(percent_decode("a+b", PercentRule::strict) == "a+b");
  CHECK(percent_decode("%2f%2F", PercentRule::strict) == "//");
  CHECK(percent_decode("%00", PercentRule::strict) == std::string("\0", 1));
  CHECK(percent_decode("", PercentRule::strict) == "");
  for (std::string_view bad : {"%"sv, "%4"sv, "a%zz"sv, "%g0"sv, "%+1"sv, "%-1"sv, "100%"sv}) {
    CAPTURE(bad);
    CHECK_FALSE(percent_decode(bad, PercentRule::strict).has_value());
  }
}

TEST_CASE("form percent-decoding makes a plus a space and keeps a malformed escape as sent") {
  CHECK(percent_decode("a+b%20c", PercentRule::form) == "a b c");
  CHECK(percent_decode("%2B", PercentRule::form) == "+");
  CHECK(percent_decode("%", PercentRule::form) == "%");
  CHECK(percent_decode("%4", PercentRule::form) == "%4");
  CHECK(percent_decode("a%zz", PercentRule::form) == "a%zz");
  CHECK(percent_decode("100%", PercentRule::form) == "100%");
  CHECK(percent_decode("%%41", PercentRule::form) == "%A");
  CHECK(percent_decode("%ff", PercentRule::form) == "\xff");
}

TEST_CASE("iso8601_ms prints UTC with milliseconds") {
  CHECK(iso8601_ms(0) == "1970-01-01T00:00:00.000Z");
  CHECK(iso8601_ms(1714564800250) == "2024-05-01T12:00:00.250Z");
  CHECK(iso8601_ms(951782400999) == "2000-02-29T00:00:00.999Z");
  // Before the epoch the milliseconds still count forward from the second before.
  CHECK(iso8601_ms(-1) == "1969-12-31T23:59:59.999Z");
}
