// Key slots; see cluster_slot.h.
#include "cluster_slot.h"

#include <array>

namespace sidecar {
namespace {

// The table for polynomial 0x1021, most significant bit first, made at compile time rather than
// pasted, so there is no 256-entry literal to get wrong.
constexpr std::array<uint16_t, 256> make_crc16_table() {
  std::array<uint16_t, 256> t{};
  for (unsigned i = 0; i < 256; ++i) {
    unsigned crc = i << 8;
    for (int bit = 0; bit < 8; ++bit)
      crc = (crc & 0x8000u) != 0 ? (crc << 1) ^ 0x1021u : crc << 1;
    t[i] = static_cast<uint16_t>(crc & 0xFFFFu);
  }
  return t;
}

constexpr std::array<uint16_t, 256> kCrc16Table = make_crc16_table();

} // namespace

uint16_t crc16_xmodem(std::string_view data) {
  unsigned crc = 0;
  for (char ch : data) {
    unsigned byte = static_cast<unsigned char>(ch);
    crc = ((crc << 8) ^ kCrc16Table[((crc >> 8) ^ byte) & 0xFFu]) & 0xFFFFu;
  }
  return static_cast<uint16_t>(crc);
}

std::string_view cluster_hash_tag(std::string_view key) {
  size_t open = key.find('{');
  if (open == std::string_view::npos)
    return key;
  size_t close = key.find('}', open + 1);
  // No closing brace, or "{}": Redis hashes the whole key.
  if (close == std::string_view::npos || close == open + 1)
    return key;
  return key.substr(open + 1, close - open - 1);
}

uint16_t cluster_slot(std::string_view key) {
  return static_cast<uint16_t>(crc16_xmodem(cluster_hash_tag(key)) & (kClusterSlots - 1));
}

} // namespace sidecar
