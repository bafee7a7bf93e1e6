// Text helpers shared by the parsers: one trim, one quote, one percent-decode, one decimal
// parser and one ISO-8601 clock format. Pure functions; nothing here allocates more than its
// result or knows where the text came from.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sidecar {

// Drops spaces and tabs at both ends: HTTP's optional whitespace around list items, cookie pairs
// and X-Forwarded-For entries.
std::string_view trim(std::string_view s);

// Wraps text in double quotes for messages ("got \"2x\""). Nothing inside is escaped: the text
// comes from the operator's config file, and log lines escape on their own.
std::string quote(std::string_view text);

// Only plain decimal digits: "0x10", "1e3", "+5", "1_000" and "" are refused rather than guessed.
bool parse_u64(std::string_view text, uint64_t &out);
// The value of one hex digit (either case), or -1.
int hex_value(char c);

// Percent-decoding follows one of two rules, named by the caller, because the places differ:
// - strict (RFC 3986, the user and password of a redis:// URL): "+" is a plus, and a "%" that is
//   not followed by two hex digits makes the whole text invalid (std::nullopt), so that a typo in a
//   password is reported at load time rather than sent to Redis.
// - form (a query string, as browsers' URLSearchParams write it): "+" is a space, and a malformed
//   escape stays as written; it never fails.
enum class PercentRule { strict, form };
std::optional<std::string> percent_decode(std::string_view text, PercentRule rule);

// Milliseconds since the Unix epoch as UTC with milliseconds: "2024-05-01T12:00:00.250Z".
std::string iso8601_ms(int64_t unix_ms);

} // namespace sidecar
