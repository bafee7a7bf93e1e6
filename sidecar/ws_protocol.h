// WsProtocol: the client-facing WebSocket protocol state of one session, on wslay. Bytes from the
// socket go in; whole messages and wslay's own frames (pong, close) come out through a handler.
// No uv calls, so unit tests and the fuzzer drive it directly.
//
// wslay's event context costs about 9 KiB, so it exists only while it holds state: it is created
// when bytes arrive and freed again when a read ends on a frame boundary with no fragmented message
// open. An idle session keeps only the few fields below.
//
// permessage-deflate (RFC 7692), when the handshake agreed it: RSV1 is allowed on the first frame
// of a data message, and such a message is inflated as its frames arrive (Inflater), with the
// message limit applied to the inflated size. The inflate state exists only while a compressed
// message is open; between messages it is one null pointer.
#pragma once

#include <wslay/wslay.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "close_code.h"
#include "frame.h"
#include "permessage_deflate.h"

namespace sidecar {

class WsHandler {
public:
  // A complete text (valid UTF-8) or binary message. May queue output; must not destroy the
  // protocol object (the session only marks itself closing from here).
  virtual void on_ws_message(Opcode op, const uint8_t *data, size_t len) = 0;
  // Bytes of complete frames that wslay wrote (pong, close). Must accept every byte.
  virtual void on_ws_output(const uint8_t *data, size_t len) = 0;
  // A compressed message could not be inflated (the connection is failing with 1009, 1007 or
  // 1011); for counters only.
  virtual void on_ws_inflate_error(Inflater::Status) noexcept {}

protected:
  ~WsHandler() = default;
};

class WsProtocol {
public:
  enum class State : uint8_t {
    open,    // messages flow both ways
    closing, // we sent a close frame and wait for the peer's
    done,    // the closing handshake is over or the connection failed: drop TCP once flushed
  };

  // inflate_bits: the client's window of an agreed permessage-deflate (9..15), 0 when none was
  // agreed and RSV1 is a protocol error.
  WsProtocol(WsHandler &handler, uint64_t max_message_bytes, uint8_t inflate_bits = 0)
      : handler_(handler), max_message_bytes_(static_cast<uint32_t>(
                               std::min<uint64_t>(max_message_bytes, UINT32_MAX))),
        inflate_bits_(inflate_bits) {}
  WsProtocol(const WsProtocol &) = delete;
  WsProtocol &operator=(const WsProtocol &) = delete;

  // Processes bytes read from the socket.
  void feed(const uint8_t *data, size_t len) noexcept;
  // Starts the closing handshake from our side (shutdown, slow consumer, limits). The close frame
  // goes out through on_ws_output. Calling it again, or after the peer's close, does nothing.
  void close(uint16_t code, std::string_view reason) noexcept;

  State state() const noexcept { return state_; }
  // The code of the close frame we sent (or 1006 when none was sent).
  uint16_t close_code_sent() const noexcept { return close_sent_; }
  // The code the peer sent in its close frame, 1005 for a close without code, 0 if none arrived.
  uint16_t close_code_received() const noexcept { return close_received_; }
  bool has_context() const noexcept { return reading_ != nullptr; }
  bool inflating() const noexcept { return reading_ && reading_->inflater.active(); }

private:
  struct CtxDeleter {
    void operator()(wslay_event_context *c) const noexcept { wslay_event_context_free(c); }
  };

  static ssize_t recv_cb(wslay_event_context_ptr, uint8_t *buf, size_t len, int, void *user);
  static ssize_t send_cb(wslay_event_context_ptr, const uint8_t *data, size_t len, int, void *user);
  static void frame_start_cb(wslay_event_context_ptr, const wslay_event_on_frame_recv_start_arg *,
                             void *user);
  static void frame_chunk_cb(wslay_event_context_ptr, const wslay_event_on_frame_recv_chunk_arg *,
                             void *user);
  static void frame_end_cb(wslay_event_context_ptr, void *user);
  static void msg_cb(wslay_event_context_ptr, const wslay_event_on_msg_recv_arg *, void *user);

  bool ensure_context() noexcept;
  void judge_close() noexcept;
  // Fails the connection: our own close frame with `code`, then TCP goes.
  void fail(uint16_t code) noexcept;
  void fail(CloseCode code) noexcept { fail(wire_code(code)); }
  void after_wslay() noexcept;
  // An inflate error ends the message: the close code it earns, the state freed.
  void inflate_failed(Inflater::Status st) noexcept;
  // The compressed message (if any) is over, delivered or not: its zlib state goes.
  void end_compressed() noexcept;

  // What exists only while bytes are being read (the wslay context and the frame being parsed):
  // created when bytes arrive, freed on a frame boundary with no fragmented message open, so an
  // idle session keeps the few fields after it (every idle session pays for each byte here).
  struct Reading {
    std::unique_ptr<wslay_event_context, CtxDeleter> ctx;
    // Input being fed, handed to wslay through recv_cb.
    const uint8_t *in = nullptr;
    size_t in_len = 0;
    // Bytes wslay has taken from us, and the bytes of frames it has finished; equal at a frame
    // boundary, which is when the context may be freed.
    uint64_t taken = 0;
    uint64_t framed = 0;
    uint64_t frame_size = 0;
    bool fragmented = false;    // a data message is open across frames
    bool frame_is_text = false; // the current data frame belongs to a text message
    bool frame_is_data = false;
    bool frame_is_close = false;
    bool compressed = false; // the open data message had RSV1: its frames go through inflater
    Utf8Validator utf8;
    // A close frame's payload (at most 125 bytes): we judge and answer close frames ourselves,
    // because wslay refuses codes that IANA has since assigned (1012-1014).
    std::string close_payload;
    // The zlib state only while a compressed message is open.
    Inflater inflater;
  };

  WsHandler &handler_;
  std::unique_ptr<Reading> reading_;
  uint32_t max_message_bytes_; // limits.max_message_bytes is at most 16 MiB
  State state_ = State::open;
  uint16_t close_sent_ = wire_code(CloseCode::abnormal);
  uint16_t close_received_ = 0;
  CloseCode fail_code_{};  // set from a callback (0 while none); acted on once wslay returns
  uint16_t echo_code_ = 0; // the peer's valid close, to echo once wslay returns
  uint8_t inflate_bits_;   // see the constructor
};

} // namespace sidecar
