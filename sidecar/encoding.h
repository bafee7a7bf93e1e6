// Small byte encodings on OpenSSL: the RFC 6455 accept key, SHA-256, base64 and base64url; and
// UTF-8 repair for text a stranger sent, before anything stores it or writes it into JSON or a log.
// Pure functions, no I/O; JWT, the handshake, the session and the log share them.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace sidecar {

// base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")), RFC 6455 section 4.2.2.
std::string websocket_accept_key(std::string_view client_key);

// The 32 raw bytes of SHA-256(bytes): the dashboard's policy hashes and the client's ETag.
std::string sha256_digest(std::string_view bytes);

std::string base64_encode(std::string_view bytes);
// Standard alphabet with padding; nullopt on any invalid character or length.
std::optional<std::string> base64_decode(std::string_view text);
// RFC 4648 section 5 alphabet; padding is not allowed (JWT form). nullopt on error.
std::optional<std::string> base64url_decode(std::string_view text);
std::string base64url_encode(std::string_view bytes);

// One step of UTF-8 decoding at s[i] (i < s.size()). A valid sequence (RFC 3629: shortest form,
// no surrogates, at most U+10FFFF) gives its code point and length. Anything else is invalid and
// `len` covers its maximal subpart (the bytes that still began a valid sequence, at least one),
// so that each invalid stretch is replaced by one U+FFFD as Unicode recommends.
struct Utf8Step {
  char32_t code_point = 0;
  size_t len = 1;
  bool valid = false;
};
Utf8Step utf8_step(std::string_view s, size_t i);

// The longest prefix of s of at most max_bytes that does not end inside a UTF-8 sequence. Meant
// for valid UTF-8; on other bytes it still never cuts through a sequence that began well.
std::string_view utf8_truncate(std::string_view s, size_t max_bytes);

// Valid UTF-8 of at most max_bytes: every invalid stretch becomes U+FFFD, and the text is cut
// on a character boundary. What a stranger sent is stored through this, and only through this.
std::string sanitize_utf8(std::string_view s, size_t max_bytes = std::string_view::npos);

} // namespace sidecar
