// Small byte encodings on OpenSSL: the RFC 6455 accept key, base64 and base64url.
// Pure functions, no I/O; JWT and the handshake share them.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace sidecar {

// base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")), RFC 6455 section 4.2.2.
std::string websocket_accept_key(std::string_view client_key);

std::string base64_encode(std::string_view bytes);
// Standard alphabet with padding; nullopt on any invalid character or length.
std::optional<std::string> base64_decode(std::string_view text);
// RFC 4648 section 5 alphabet; padding is not allowed (JWT form). nullopt on error.
std::optional<std::string> base64url_decode(std::string_view text);
std::string base64url_encode(std::string_view bytes);

} // namespace sidecar
