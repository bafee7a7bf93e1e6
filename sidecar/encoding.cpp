// Byte encodings; see encoding.h.
#include "encoding.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <array>
#include <cstdint>

namespace sidecar {
namespace {

constexpr std::string_view kWebSocketGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
constexpr std::string_view kAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int decode_char(char c, bool url) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == (url ? '-' : '+'))
    return 62;
  if (c == (url ? '_' : '/'))
    return 63;
  return -1;
}

// Decodes groups of four characters; a final group of 2 or 3 characters is the unpadded tail.
std::optional<std::string> decode(std::string_view text, bool url) {
  if (text.size() % 4 == 1)
    return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3 + 2);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    int v = decode_char(c, url);
    if (v < 0)
      return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  // Leftover bits must be zero, or two encodings would decode to the same bytes.
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
    return std::nullopt;
  return out;
}

std::string encode(std::string_view bytes, bool url) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t v = (static_cast<uint8_t>(bytes[i]) << 16) |
                 (static_cast<uint8_t>(bytes[i + 1]) << 8) | static_cast<uint8_t>(bytes[i + 2]);
    for (int s = 18; s >= 0; s -= 6)
      out.push_back(kAlphabet[(v >> s) & 63]);
  }
  size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    if (rest == 2)
      v |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    if (rest == 2)
      out.push_back(kAlphabet[(v >> 6) & 63]);
    if (!url)
      out.append(rest == 1 ? "==" : "=");
  }
  if (url) {
    for (char &c : out) {
      if (c == '+')
        c = '-';
      else if (c == '/')
        c = '_';
    }
  }
  return out;
}

} // namespace

std::string websocket_accept_key(std::string_view client_key) {
  std::string input(client_key);
  input.append(kWebSocketGuid);
  std::array<unsigned char, SHA_DIGEST_LENGTH> digest{};
  SHA1(reinterpret_cast<const unsigned char *>(input.data()), input.size(), digest.data());
  return base64_encode(
      std::string_view(reinterpret_cast<const char *>(digest.data()), digest.size()));
}

std::string sha256_digest(std::string_view bytes) {
  std::array<unsigned char, SHA256_DIGEST_LENGTH> digest{};
  SHA256(reinterpret_cast<const unsigned char *>(bytes.data()), bytes.size(), digest.data());
  return std::string(reinterpret_cast<const char *>(digest.data()), digest.size());
}

std::string base64_encode(std::string_view bytes) { return encode(bytes, false); }
std::string base64url_encode(std::string_view bytes) { return encode(bytes, true); }

std::optional<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0)
    return std::nullopt;
  size_t pad = 0;
  while (pad < 2 && pad < text.size() && text[text.size() - 1 - pad] == '=')
    ++pad;
  return decode(text.substr(0, text.size() - pad), false);
}

std::optional<std::string> base64url_decode(std::string_view text) { return decode(text, true); }

Utf8Step utf8_step(std::string_view s, size_t i) {
  auto byte = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  uint8_t b0 = byte(i);
  if (b0 < 0x80)
    return {b0, 1, true};
  // The length a lead byte announces, its payload bits, and the range its second byte must fall
  // in: narrower than 80..BF after E0, ED, F0 and F4, which is what rules out overlong forms,
  // surrogates and code points above U+10FFFF (RFC 3629 section 4).
  size_t need = 0;
  char32_t cp = 0;
  uint8_t lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    cp = b0 & 0x0F;
    lo = b0 == 0xE0 ? 0xA0 : 0x80;
    hi = b0 == 0xED ? 0x9F : 0xBF;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    cp = b0 & 0x07;
    lo = b0 == 0xF0 ? 0x90 : 0x80;
    hi = b0 == 0xF4 ? 0x8F : 0xBF;
  } else {
    return {0, 1, false}; // a continuation byte, C0, C1 or F5..FF: never a lead
  }
  size_t len = 1;
  while (len < need) {
    if (i + len >= s.size())
      return {0, len, false}; // cut short by the end of the text
    uint8_t b = byte(i + len);
    if (b < (len == 1 ? lo : 0x80) || b > (len == 1 ? hi : 0xBF))
      return {0, len, false};
    cp = (cp << 6) | (b & 0x3F);
    ++len;
  }
  return {cp, len, true};
}

std::string_view utf8_truncate(std::string_view s, size_t max_bytes) {
  if (s.size() <= max_bytes)
    return s;
  size_t cut = max_bytes;
  // Back up over continuation bytes to the start of the character that the limit cuts; a
  // sequence is at most four bytes, so at most three steps.
  for (int steps = 0; steps < 3 && cut > 0 && (static_cast<uint8_t>(s[cut]) & 0xC0) == 0x80;
       ++steps) {
    --cut;
  }
  if ((static_cast<uint8_t>(s[cut]) & 0xC0) == 0x80)
    cut = max_bytes; // not UTF-8 here anyway: no boundary to find
  return s.substr(0, cut);
}

std::string sanitize_utf8(std::string_view s, size_t max_bytes) {
  constexpr std::string_view kReplacement = "\xEF\xBF\xBD"; // U+FFFD
  std::string out;
  out.reserve(s.size() < max_bytes ? s.size() : max_bytes);
  for (size_t i = 0; i < s.size();) {
    Utf8Step st = utf8_step(s, i);
    std::string_view piece = st.valid ? s.substr(i, st.len) : kReplacement;
    if (out.size() + piece.size() > max_bytes)
      break;
    out.append(piece);
    i += st.len;
  }
  return out;
}

} // namespace sidecar
