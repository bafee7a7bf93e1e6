// Redis Cluster key slots: which of the 16384 slots a key (or a sharded channel) belongs to.
// hiredis 0.14 knows nothing of Redis Cluster, so the hash is ours, and it must be bit for bit
// Redis's: CRC16-XMODEM (polynomial 0x1021, initial value 0) modulo 16384, over the hash tag when
// the key has one. Pure; no I/O.
#pragma once

#include <cstdint>
#include <string_view>

namespace sidecar {

inline constexpr uint16_t kClusterSlots = 16384;

// CRC16-XMODEM, as Redis's crc16.c computes it: crc16("123456789") is 0x31C3.
uint16_t crc16_xmodem(std::string_view data);

// The part of `key` that is hashed: the text between the first '{' and the first '}' after it,
// when that text is not empty; otherwise the whole key. So "{user1000}.following" and
// "{user1000}.followers" share a slot, and "foo{}{bar}" hashes the whole key.
std::string_view cluster_hash_tag(std::string_view key);

// The slot of `key` (a key or a sharded pub/sub channel), 0..16383.
uint16_t cluster_slot(std::string_view key);

} // namespace sidecar
