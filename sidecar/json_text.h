// JSON text that cannot fail on bad bytes. Every JSON the sidecar writes (answers, the welcome,
// error frames, endpoint bodies, JSON log lines) is built with these, because any string in it
// may hold bytes a stranger chose: invalid UTF-8 comes out as U+FFFD, never as an exception and
// never as output that a strict parser refuses.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <string>
#include <string_view>

namespace sidecar {

// Appends s as the inside of a JSON string: quotes, backslashes, control bytes, DEL and the
// line separators U+2028/U+2029 are escaped; invalid UTF-8 becomes U+FFFD. With ascii_only every
// other non-ASCII character is escaped too (\uXXXX, surrogate pairs above U+FFFF), which is how
// log lines stay printable ASCII whatever a client wrote.
void json_escape_into(std::string &out, std::string_view s, bool ascii_only = false);

// s as a quoted JSON string.
std::string json_quoted(std::string_view s);

// nlohmann's dump() with invalid UTF-8 replaced instead of thrown (type_error.316).
std::string json_text(const nlohmann::json &j);
// The same for a document whose key order is part of the wire format (client_messages.h).
std::string json_text(const nlohmann::ordered_json &j);

} // namespace sidecar
