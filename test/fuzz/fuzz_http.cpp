// Fuzzes the request path: RequestParser fed in chunks the input chooses, with a head limit the
// input chooses too (64..4144 bytes), so that short inputs reach limits.max_header_bytes and its
// 431. Then the upgrade checks and the query/cookie accessors on whatever request came out.
//
// Input layout: byte 0 picks the mode (bit 7) and the read size (1..64); byte 1 the head limit;
// the rest is either the raw request (raw mode) or the padding of one X-Pad header in an
// otherwise valid upgrade request (structured mode).
//
// Invariants, each an abort when broken:
// - raw: an error is 400 or 431, and 431 only once more bytes than the limit came in; the parser
//   never asks for more after the limit is passed; a "done" head fits in the limit and its
//   consumed count lies inside the bytes given.
// - structured: the answer is known in advance. A head longer than the limit is exactly 431; one
//   that fits is done, consumed ends exactly at the blank line (the frame bytes after it stay
//   unparsed) and the upgrade is accepted with the key that was sent.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "fuzz_stats.h"
#include "handshake.h"

namespace {

enum : size_t { kRawDone, kRaw400, kRaw431, kStructuredDone, kStructured431 };
fuzz::Stats stats("fuzz_http", {{"raw_done", false},
                                {"raw_400", false},
                                {"raw_431", true},
                                {"structured_done", true},
                                {"structured_431", true}});

[[noreturn]] void broken(const char *what, size_t a, size_t b) {
  std::fprintf(stderr, "fuzz_http: %s (%zu, %zu)\n", what, a, b);
  std::abort();
}

constexpr char kKey[] = "dGhlIHNhbXBsZSBub25jZQ==";
// A masked empty text frame: the client's first WebSocket bytes, sent with the head.
constexpr char kFrame[] = "\x81\x80\x01\x02\x03\x04";

void structured(const uint8_t *pad, size_t pad_len, size_t chunk, size_t limit) {
  static constexpr char kAlnum[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string req = std::string("GET /ws/acme?token=t HTTP/1.1\r\nHost: h\r\n"
                                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                                "Sec-WebSocket-Key: ") +
                    kKey + "\r\nSec-WebSocket-Version: 13\r\nX-Pad: ";
  for (size_t i = 0; i < pad_len; ++i)
    req.push_back(kAlnum[pad[i] % 64]);
  req += "\r\n\r\n";
  const size_t head = req.size();
  req.append(kFrame, sizeof kFrame - 1);

  sidecar::RequestParser parser(limit);
  size_t off = 0;
  while (off < req.size()) {
    size_t len = std::min(chunk, req.size() - off);
    size_t used = 0;
    auto st = parser.feed(req.data() + off, len, used);
    if (st == sidecar::RequestParser::State::error) {
      if (head <= limit)
        broken("a head within the limit was refused", head, limit);
      if (parser.error_answer().status != 431)
        broken("an oversized head was not answered 431",
               static_cast<size_t>(parser.error_answer().status), head);
      stats.hit(kStructured431);
      return;
    }
    if (st == sidecar::RequestParser::State::done) {
      if (head > limit)
        broken("an oversized head was accepted", head, limit);
      if (off + used != head)
        broken("consumed does not end at the blank line", off + used, head);
      auto c = sidecar::check_upgrade(parser.request());
      if (!c.is_upgrade || c.refusal || c.key != kKey)
        broken("a valid upgrade was not accepted", head, limit);
      stats.hit(kStructuredDone);
      return;
    }
    off += len;
  }
  broken("a complete head left the parser waiting", head, limit);
}

void raw(const char *p, size_t n, size_t chunk, size_t limit) {
  sidecar::RequestParser parser(limit);
  size_t off = 0;
  while (off < n) {
    size_t len = n - off < chunk ? n - off : chunk;
    size_t used = 0;
    auto st = parser.feed(p + off, len, used);
    if (st == sidecar::RequestParser::State::error) {
      int status = parser.error_answer().status;
      if (status == 431 && off + len <= limit)
        broken("431 before the limit was passed", off + len, limit);
      if (status != 400 && status != 431)
        broken("error answer is neither 400 nor 431", static_cast<size_t>(status), 0);
      stats.hit(status == 431 ? kRaw431 : kRaw400);
      return;
    }
    if (st == sidecar::RequestParser::State::done) {
      if (used > len)
        broken("consumed more than it was given", used, len);
      if (off + used > limit)
        broken("a head over the limit was accepted", off + used, limit);
      stats.hit(kRawDone);
      const sidecar::HttpRequest &r = parser.request();
      auto c = sidecar::check_upgrade(r);
      if (c.is_upgrade && !c.refusal && c.key.empty())
        broken("an accepted upgrade has no key", 0, 0);
      (void)r.query_param("token");
      (void)r.cookie("token");
      (void)r.header_list("sec-websocket-protocol");
      if (!c.refusal && c.is_upgrade)
        (void)sidecar::build_switching_protocols(c.key, "bearer");
      return;
    }
    off += len;
    if (off > limit)
      broken("still waiting for more after the limit was passed", off, limit);
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2)
    return 0;
  size_t chunk = 1 + (data[0] & 0x3f);
  size_t limit = 64 + size_t{data[1]} * 16;
  if ((data[0] & 0x80) != 0)
    structured(data + 2, size - 2, chunk, limit);
  else
    raw(reinterpret_cast<const char *>(data + 2), size - 2, chunk, limit);
  return 0;
}
