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

} // namespace sidecar
