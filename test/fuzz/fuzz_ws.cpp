// Fuzzes the frame path: bytes after an upgrade go into WsProtocol in chunks the input chooses.
// Whatever comes in, messages handed up must be valid UTF-8 when they are text and no larger than
// the limit, output must be whole server frames, and a closed protocol must stay closed.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "frame.h"
#include "ws_protocol.h"

namespace {

struct Checker final : sidecar::WsHandler {
  void on_ws_message(sidecar::Opcode op, const uint8_t *data, size_t len) override {
    if (len > 4096)
      abort();
    if (op == sidecar::Opcode::text && !sidecar::is_valid_utf8(data, len))
      abort();
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
        abort();
      auto b1 = static_cast<uint8_t>(bytes[i + 1]);
      if ((b1 & 0x80) != 0)
        abort();
      uint64_t len = b1 & 0x7f;
      size_t hdr = 2;
      if (len == 126) {
        if (i + 4 > bytes.size())
          abort();
        len = static_cast<uint64_t>(static_cast<uint8_t>(bytes[i + 2])) << 8 |
              static_cast<uint8_t>(bytes[i + 3]);
        if (len < 126)
          abort();
        hdr = 4;
      } else if (len == 127) {
        abort(); // control frames and our replies never need the 64-bit form here
      }
      i += hdr + len;
    }
    if (i != bytes.size())
      abort();
  }
  std::string bytes;
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  size_t chunk = 1 + data[0] % 32;
  Checker c;
  sidecar::WsProtocol p(c, 4096);
  for (size_t off = 1; off < size; off += chunk) {
    size_t len = size - off < chunk ? size - off : chunk;
    p.feed(data + off, len);
    if (p.state() == sidecar::WsProtocol::State::done) {
      size_t before = c.bytes.size();
      p.feed(data + off, len);
      p.close(1000, "again");
      if (c.bytes.size() != before)
        abort(); // nothing more leaves a finished connection
      c.check_frames();
      return 0;
    }
  }
  if (size % 7 == 0)
    p.close(1001, "bye");
  c.check_frames();
  return 0;
}
