// Fuzzes the frame path: bytes after an upgrade go into WsProtocol in chunks the input chooses,
// with a message limit the input chooses too (16..1036 bytes), so that short inputs reach
// limits.max_message_bytes and its 1009.
//
// Input layout: byte 0 picks the mode (bit 7) and the read size (1..32); byte 1 the limit.
// Raw mode: the rest are the bytes a client sends; bit 5 of byte 0 says whether permessage-deflate
// was agreed (RSV1 allowed, compressed messages inflated). Structured mode: byte 2 picks binary or
// text, the number of fragments (1..4) and whether the message is sent compressed (bit 3, RSV1 on
// its first frame); the rest is the payload of one message, which the target deflates, masks and
// frames correctly itself (text is mapped to ASCII, so it is valid UTF-8).
//
// Invariants, each an abort when broken:
// - always: messages handed up are no larger than the limit and valid UTF-8 when text; output is
//   a sequence of whole, unmasked, minimally encoded server frames; a finished protocol stays
//   finished and silent.
// - structured: the outcome is known in advance. A message over the limit is closed with 1009 and
//   never delivered; one within it is delivered exactly once, byte for byte, and the connection
//   stays open. Compressed, the limit applies to the inflated size (and wslay's to the deflated).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "frame.h"
#include "fuzz_stats.h"
#include "permessage_deflate.h"
#include "ws_protocol.h"

namespace {

enum : size_t { kRawDelivered, kRaw1009, kStructuredDelivered, kStructured1009 };
fuzz::Stats stats("fuzz_ws", {{"raw_delivered", false},
                              {"raw_1009", true},
                              {"structured_delivered", true},
                              {"structured_1009", true}});

[[noreturn]] void broken(const char *what, size_t a, size_t b) {
  std::fprintf(stderr, "fuzz_ws: %s (%zu, %zu)\n", what, a, b);
  std::abort();
}

struct Checker final : sidecar::WsHandler {
  explicit Checker(size_t limit) : limit(limit) {}
  void on_ws_message(sidecar::Opcode op, const uint8_t *data, size_t len) override {
    if (len > limit)
      broken("a message over the limit was delivered", len, limit);
    if (op == sidecar::Opcode::text && !sidecar::is_valid_utf8(data, len))
      broken("an invalid UTF-8 text message was delivered", len, 0);
    ++messages;
    last_op = op;
    last.assign(reinterpret_cast<const char *>(data), len);
  }
  void on_ws_output(const uint8_t *data, size_t len) override {
    bytes.append(reinterpret_cast<const char *>(data), len);
  }
  // wslay may hand a header and its payload over in two calls, so the output is judged as a
  // stream: it must be a sequence of whole, unmasked, minimally encoded server frames.
  void check_frames() const {
    size_t i = 0;
    while (i < bytes.size()) {
      if (i + 2 > bytes.size())
        broken("a server frame header was cut", i, bytes.size());
      auto b1 = static_cast<uint8_t>(bytes[i + 1]);
      if ((b1 & 0x80) != 0)
        broken("a server frame was masked", i, 0);
      uint64_t len = b1 & 0x7f;
      size_t hdr = 2;
      if (len == 126) {
        if (i + 4 > bytes.size())
          broken("a server frame header was cut", i, bytes.size());
        len = static_cast<uint64_t>(static_cast<uint8_t>(bytes[i + 2])) << 8 |
              static_cast<uint8_t>(bytes[i + 3]);
        if (len < 126)
          broken("a server frame length was not minimal", i, len);
        hdr = 4;
      } else if (len == 127) {
        broken("a control frame or reply used the 64-bit length", i, 0);
      }
      i += hdr + len;
    }
    if (i != bytes.size())
      broken("the server output ends inside a frame", i, bytes.size());
  }

  size_t limit;
  size_t messages = 0;
  sidecar::Opcode last_op = sidecar::Opcode::text;
  std::string last;
  std::string bytes;
};

// One client frame, masked with a fixed key (the mask is not what is being tested).
void append_frame(std::string &out, bool fin, uint8_t opcode, const std::string &payload) {
  out.push_back(static_cast<char>((fin ? 0x80 : 0) | opcode));
  size_t n = payload.size();
  if (n < 126) {
    out.push_back(static_cast<char>(0x80 | n));
  } else if (n < 65536) {
    out.push_back(static_cast<char>(0x80 | 126));
    out.push_back(static_cast<char>(n >> 8));
    out.push_back(static_cast<char>(n & 0xff));
  } else {
    out.push_back(static_cast<char>(0x80 | 127));
    for (int s = 56; s >= 0; s -= 8)
      out.push_back(static_cast<char>((uint64_t{n} >> s) & 0xff));
  }
  static constexpr uint8_t kMask[4] = {0x37, 0xfa, 0x21, 0x3d};
  for (uint8_t m : kMask)
    out.push_back(static_cast<char>(m));
  for (size_t i = 0; i < n; ++i)
    out.push_back(static_cast<char>(static_cast<uint8_t>(payload[i]) ^ kMask[i % 4]));
}

void feed_all(sidecar::WsProtocol &p, const std::string &in, size_t chunk) {
  const auto *d = reinterpret_cast<const uint8_t *>(in.data());
  for (size_t off = 0; off < in.size() && p.state() == sidecar::WsProtocol::State::open;
       off += chunk)
    p.feed(d + off, std::min(chunk, in.size() - off));
}

void structured(const uint8_t *data, size_t size, size_t chunk, size_t limit) {
  if (size < 1)
    return;
  const bool text = (data[0] & 1) != 0;
  const size_t fragments = 1 + ((data[0] >> 1) & 3);
  const bool compressed = (data[0] & 8) != 0;
  std::string payload(reinterpret_cast<const char *>(data + 1), size - 1);
  if (text) {
    for (char &ch : payload)
      ch = static_cast<char>(0x20 + static_cast<uint8_t>(ch) % 95);
  }
  std::string body = payload;
  if (compressed) {
    static sidecar::Deflater deflater(1, 15);
    sidecar::Deflater::Compressed z = deflater.compress(payload);
    if (!z.ok)
      broken("deflate failed", payload.size(), 0);
    body.assign(z.bytes);
  }
  std::string wire;
  size_t per = body.size() / fragments;
  for (size_t f = 0, off = 0; f < fragments; ++f) {
    size_t len = f + 1 == fragments ? body.size() - off : per;
    auto op = static_cast<uint8_t>(f == 0 ? (text ? 0x1 : 0x2) | (compressed ? 0x40 : 0) : 0x0);
    append_frame(wire, f + 1 == fragments, op, body.substr(off, len));
    off += len;
  }

  Checker c(limit);
  sidecar::WsProtocol p(c, limit, compressed ? 15 : 0);
  feed_all(p, wire, chunk);
  c.check_frames();
  if (compressed && p.inflating())
    broken("the inflate state outlived its message", payload.size(), body.size());
  if (payload.size() > limit || body.size() > limit) {
    if (c.messages != 0)
      broken("an oversized message was delivered", payload.size(), limit);
    if (p.close_code_sent() != 1009 || p.state() != sidecar::WsProtocol::State::done)
      broken("an oversized message was not closed with 1009", p.close_code_sent(), payload.size());
    stats.hit(kStructured1009);
    return;
  }
  if (c.messages != 1 || c.last != payload ||
      c.last_op != (text ? sidecar::Opcode::text : sidecar::Opcode::binary))
    broken("a message within the limit was not delivered once and intact", c.messages,
           payload.size());
  if (p.state() != sidecar::WsProtocol::State::open)
    broken("a valid message closed the connection", p.close_code_sent(), payload.size());
  stats.hit(kStructuredDelivered);
}

void raw(const uint8_t *data, size_t size, size_t chunk, size_t limit, bool close_at_end,
         bool deflate) {
  Checker c(limit);
  sidecar::WsProtocol p(c, limit, deflate ? 15 : 0);
  for (size_t off = 0; off < size; off += chunk) {
    size_t len = size - off < chunk ? size - off : chunk;
    p.feed(data + off, len);
    if (p.state() == sidecar::WsProtocol::State::done) {
      size_t before = c.bytes.size();
      p.feed(data + off, len);
      p.close(1000, "again");
      if (c.bytes.size() != before)
        broken("output after the connection finished", c.bytes.size(), before);
      break;
    }
  }
  if (close_at_end)
    p.close(1001, "bye");
  c.check_frames();
  if (c.messages > 0)
    stats.hit(kRawDelivered);
  if (p.close_code_sent() == 1009)
    stats.hit(kRaw1009);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2)
    return 0;
  size_t chunk = 1 + (data[0] & 0x1f);
  size_t limit = 16 + size_t{data[1]} * 4;
  if ((data[0] & 0x80) != 0)
    structured(data + 2, size - 2, chunk, limit);
  else
    raw(data + 2, size - 2, chunk, limit, (data[0] & 0x40) != 0, (data[0] & 0x20) != 0);
  return 0;
}
