// permessage-deflate (RFC 7692): the negotiation answer to a client's Sec-WebSocket-Extensions
// offers, the compress-once deflater for published messages, and the capped per-message inflater
// for what clients send. Pure: zlib and bytes, no uv.h, so unit tests and a fuzzer cover it.
//
// Context takeover, and what a connection costs. We always answer `server_no_context_takeover`:
// every message is deflated from an empty window, so one publication has the same compressed
// bytes for every recipient and is deflated once, whatever the size of the room. We also always
// answer `client_no_context_takeover`, whether the client offered it or not. RFC 7692 7.1.1.2
// lets a server include it in any response, and it then forbids the client to compress a message
// with the window of the previous one. Chromium, Node ws (unless its `clientNoContextTakeover` is
// set to false explicitly) and Python websockets all accept it, and none of them offers it by
// default (each offers `permessage-deflate; client_max_window_bits`). The alternative, taking over
// the client's context, would keep a live inflate stream per connection between messages: about
// 7 KiB of zlib state plus a 2^bits window, 39 KiB at the default 15 bits, 7.3 KiB even at the
// smallest 8 bits; against an idle budget of 1 KiB that is not affordable. So an Inflater holds
// nothing between messages (one null pointer); while a compressed message is being received it
// holds the zlib state (7 KiB), the window (2^bits, allocated by zlib on the first output) and the
// output, which never grows past the message limit plus one byte.
//
// Window bits. zlib refuses a raw deflate window of 8 bits (it would silently use 9, which a peer
// inflating with 8 cannot read), so an offer that insists on `server_max_window_bits=8` is
// declined, and we never ask a client for `client_max_window_bits=8`: an older zlib on its side
// would do the same. Inflating with a window at least as large as the client's is always correct,
// so without an answer of ours we inflate with 15.
//
// Errors while inflating: a message that would inflate past the limit is `too_big` (close 1009),
// before more than the limit (plus one byte) is allocated for it. Bytes that are not a DEFLATE
// stream, or that stop inside a block, are `corrupt` (close 1007: the frames were well formed but
// their payload is not valid data of the kind the RSV1 bit announced; RFC 6455 7.4.1). RSV1 on a
// control frame or a continuation frame is a framing error (1002); wslay 1.1 reports that itself
// once RSV1 is allowed on the context.
#pragma once

#include <zlib.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "frame.h"
#include "result.h"
#include "shared_frame.h"

namespace sidecar {

// What the operator allows: the config's `compression:` section (Config::compression).
struct DeflateOptions {
  bool enabled = true;
  // The largest window we let a client compress with (9..15). Smaller bounds the transient
  // inflate memory; the client must have offered client_max_window_bits for us to say so.
  uint8_t client_max_window_bits = 15;
  uint8_t level = 1; // zlib's 1..9 for published messages (see Deflater)
  // Publications shorter than this go out plain: below about a hundred bytes deflate rarely
  // saves more than its own few bytes of block header, and costs a deflate per publication.
  uint32_t min_bytes = 128;
};

// An accepted offer: the window we compress with, the window we inflate with, and the value of
// the Sec-WebSocket-Extensions response header.
struct DeflateAgreement {
  uint8_t server_window_bits = 15; // 9..15
  uint8_t client_window_bits = 15; // 9..15
  std::string response;
};

// Picks the first acceptable permessage-deflate offer in `offers` (every Sec-WebSocket-Extensions
// header of the request, joined with ", "). Without a value the caller sends no header and no
// frame of this connection may carry RSV1; `error` then says why the last permessage-deflate offer
// was declined, or is empty when there was none (or compression is off). A malformed header
// only declines the offers it spoils: it never fails the handshake.
Result<DeflateAgreement> negotiate_permessage_deflate(std::string_view offers,
                                                      const DeflateOptions &options);

// The deflater of published messages: one raw-deflate stream, reset before each message, so the
// per-message cost is the deflate itself and no allocation but the output buffer's growth (kept
// for the next message up to kKeptOutput). One per window size in use (see DeflaterSet).
class Deflater {
public:
  // level: zlib's 1..9 (1 is the default: JSON events of 200 B..2 KiB compress within a few per
  // cent of level 6 at about half the CPU; see the unit test that prints both).
  Deflater(int level, uint8_t window_bits) noexcept;
  ~Deflater();
  Deflater(const Deflater &) = delete;
  Deflater &operator=(const Deflater &) = delete;

  bool ok() const noexcept { return ok_; }

  struct Compressed {
    bool ok = false;        // false when zlib failed or memory ran out
    bool smaller = false;   // the compressed payload is shorter than the original
    std::string_view bytes; // valid until the next compress(); the 00 00 ff ff tail removed
  };
  // The message payload as RFC 7692 7.2.1 wants it: DEFLATE from an empty window, ended with a
  // sync flush whose empty stored block's last four bytes are removed. The same payload gives the
  // same bytes every time.
  Compressed compress(std::string_view payload) noexcept;

  // A frame to send instead of the plain one: RSV1 set, the original opcode, the compressed
  // payload. nullptr when compressing failed or did not make the payload smaller; the caller then
  // sends the plain frame, which a client that negotiated compression accepts as well.
  SharedFrame *make_frame(Opcode op, std::string_view payload) noexcept;

private:
  static constexpr size_t kKeptOutput = 256 * 1024;
  bool reserve(size_t n) noexcept;

  z_stream z_{};
  bool ok_ = false;
  uint8_t *out_ = nullptr; // malloc'd; capacity cap_
  size_t cap_ = 0;
};

// One Deflater per server window size (9..15), made on first use: clients that did not ask for a
// smaller window (all the common ones) share the 15-bit one, so a publication is deflated once per
// distinct window among the room's members, which is once in practice. Each costs about 256 KiB
// at 15 bits (zlib's 2^(bits+2) + 2^(memLevel+9)), once per process.
class DeflaterSet {
public:
  explicit DeflaterSet(int level) noexcept : level_(level) {}
  int level() const noexcept { return level_; }
  // nullptr when bits is out of range or zlib could not be initialised.
  Deflater *get(uint8_t window_bits) noexcept;

private:
  int level_;
  std::array<std::unique_ptr<Deflater>, 7> by_bits_; // index bits - 9
};

// The header of a compressed data frame: encode_frame_header's, with RSV1 set. out must have room
// for kMaxFrameHeader bytes. op must be text or binary (RSV1 belongs on the first frame only).
size_t encode_compressed_frame_header(uint8_t *out, Opcode op, uint64_t payload_len);

// Inflates the messages of one connection, one at a time, with a hard cap on the inflated size.
// Holds only a null pointer between messages; begin() allocates, finish() or discard() frees.
class Inflater {
public:
  enum class Status {
    ok,
    too_big,   // the message would inflate past the limit: close 1009
    corrupt,   // not a DEFLATE stream, or it stops inside a block: close 1007
    no_memory, // close 1011
  };

  Inflater() noexcept;
  ~Inflater();
  Inflater(const Inflater &) = delete;
  Inflater &operator=(const Inflater &) = delete;

  // Starts a compressed message (the first frame had RSV1). window_bits is the agreement's
  // client_window_bits; max_bytes the message limit, which applies to the inflated size.
  Status begin(uint8_t window_bits, size_t max_bytes) noexcept;
  // The payload bytes of the message's frames, in order and in any pieces. After an error the
  // message is over: further calls return the same error until begin() or discard().
  Status feed(const uint8_t *data, size_t len) noexcept;
  // The last frame has ended: appends 00 00 ff ff and finishes. On ok, message() holds the
  // inflated payload until discard() or the next begin().
  Status finish() noexcept;
  std::string_view message() const noexcept;
  // Frees everything; the connection is idle again.
  void discard() noexcept;

  bool active() const noexcept { return state_ != nullptr; }
  // The most bytes held at once for the current message so far: the state, zlib's allocations
  // and the output buffer. 0 when no message is active. For tests and metrics.
  size_t peak_bytes() const noexcept;

private:
  struct State;
  Status run(const uint8_t *data, size_t len, bool tail) noexcept;

  std::unique_ptr<State> state_; // the only member: an idle connection pays one pointer
};

} // namespace sidecar
