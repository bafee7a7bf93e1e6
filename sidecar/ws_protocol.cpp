// WsProtocol; see ws_protocol.h.
#include "ws_protocol.h"

#include <cerrno>
#include <cstring>
#include <new>
#include <string>

namespace sidecar {
namespace {

bool is_data_opcode(uint8_t op) { return op <= 2; }

} // namespace

ssize_t WsProtocol::recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int,
                            void *user) {
  WsProtocol::Reading &r = *static_cast<WsProtocol *>(user)->reading_;
  if (r.in_len == 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  size_t n = len < r.in_len ? len : r.in_len;
  std::memcpy(buf, r.in, n);
  r.in += n;
  r.in_len -= n;
  r.taken += n;
  return static_cast<ssize_t>(n);
}

ssize_t WsProtocol::send_cb(wslay_event_context_ptr, const uint8_t *data, size_t len, int,
                            void *user) {
  static_cast<WsProtocol *>(user)->handler_.on_ws_output(data, len);
  return static_cast<ssize_t>(len);
}

void WsProtocol::frame_start_cb(wslay_event_context_ptr,
                                const wslay_event_on_frame_recv_start_arg *arg, void *user) {
  auto *self = static_cast<WsProtocol *>(user);
  Reading &r = *self->reading_;
  r.frame_size = frame_header_size(arg->payload_length, true) + arg->payload_length;
  r.frame_is_data = is_data_opcode(arg->opcode);
  r.frame_is_close = arg->opcode == WSLAY_CONNECTION_CLOSE;
  if (r.frame_is_close)
    r.close_payload.clear();
  if (arg->opcode == WSLAY_CONNECTION_CLOSE && arg->payload_length == 1) {
    // A close payload is empty or at least a 2-byte code (RFC 6455 5.5.1); wslay would echo it.
    self->fail_code_ = CloseCode::protocol_error;
  }
  if (r.frame_is_data) {
    if (arg->opcode != WSLAY_CONTINUATION_FRAME) {
      r.frame_is_text = arg->opcode == WSLAY_TEXT_FRAME;
      r.utf8.reset();
      // wslay has refused RSV1 already where it does not belong: without an agreement (the
      // context allows no RSV bit), on a continuation and on a control frame (1002).
      r.compressed = (arg->rsv & WSLAY_RSV1_BIT) != 0;
      if (r.compressed && self->fail_code_ == CloseCode{}) {
        Inflater::Status st = r.inflater.begin(self->inflate_bits_, self->max_message_bytes_);
        if (st != Inflater::Status::ok)
          self->inflate_failed(st);
      }
    }
    r.fragmented = !arg->fin;
  }
}

void WsProtocol::end_compressed() noexcept {
  reading_->inflater.discard();
  reading_->compressed = false;
}

void WsProtocol::inflate_failed(Inflater::Status st) noexcept {
  switch (st) {
  case Inflater::Status::too_big:
    fail_code_ = CloseCode::message_too_big;
    break;
  case Inflater::Status::corrupt:
    fail_code_ = CloseCode::invalid_payload;
    break;
  default:
    fail_code_ = CloseCode::internal_error;
    break;
  }
  reading_->inflater.discard();
  handler_.on_ws_inflate_error(st);
}

void WsProtocol::frame_chunk_cb(wslay_event_context_ptr,
                                const wslay_event_on_frame_recv_chunk_arg *arg, void *user) {
  auto *self = static_cast<WsProtocol *>(user);
  Reading &r = *self->reading_;
  if (r.frame_is_close) {
    r.close_payload.append(reinterpret_cast<const char *>(arg->data), arg->data_length);
  }
  if (r.frame_is_data && r.compressed) {
    // A bomb is caught here, at the first piece that would inflate past the limit.
    if (self->fail_code_ == CloseCode{}) {
      Inflater::Status st = r.inflater.feed(arg->data, arg->data_length);
      if (st != Inflater::Status::ok)
        self->inflate_failed(st);
    }
    return;
  }
  // Text is checked as it arrives, so a code point split across fragments is still judged whole.
  if (r.frame_is_data && r.frame_is_text && !r.utf8.feed(arg->data, arg->data_length)) {
    self->fail_code_ = CloseCode::invalid_payload;
  }
}

void WsProtocol::frame_end_cb(wslay_event_context_ptr, void *user) {
  auto *self = static_cast<WsProtocol *>(user);
  Reading &r = *self->reading_;
  r.framed += r.frame_size;
  r.frame_size = 0;
  if (r.frame_is_close) {
    self->judge_close();
    return;
  }
  if (r.frame_is_data && !r.fragmented && r.compressed) {
    if (self->fail_code_ != CloseCode{})
      return;
    // The last frame: the stream must end on a block boundary, and text is judged inflated.
    Inflater::Status st = r.inflater.finish();
    if (st != Inflater::Status::ok) {
      self->inflate_failed(st);
    } else if (r.frame_is_text) {
      std::string_view m = r.inflater.message();
      if (!is_valid_utf8(reinterpret_cast<const uint8_t *>(m.data()), m.size()))
        self->fail_code_ = CloseCode::invalid_payload;
    }
    return;
  }
  if (r.frame_is_data && !r.fragmented && r.frame_is_text && !r.utf8.complete()) {
    self->fail_code_ = CloseCode::invalid_payload;
  }
}

void WsProtocol::msg_cb(wslay_event_context_ptr, const wslay_event_on_msg_recv_arg *arg,
                        void *user) {
  auto *self = static_cast<WsProtocol *>(user);
  if (self->fail_code_ != CloseCode{})
    return;
  switch (arg->opcode) {
  case WSLAY_TEXT_FRAME:
  case WSLAY_BINARY_FRAME: {
    const uint8_t *data = arg->msg;
    size_t len = arg->msg_length;
    if (self->reading_->compressed) {
      std::string_view m = self->reading_->inflater.message();
      data = reinterpret_cast<const uint8_t *>(m.data());
      len = m.size();
    }
    if (self->state_ == State::open)
      self->handler_.on_ws_message(arg->opcode == WSLAY_TEXT_FRAME ? Opcode::text : Opcode::binary,
                                   data, len);
    self->end_compressed(); // the message is over: an idle connection holds no zlib state
    break;
  }
  default:
    break;
  }
}

// RFC 6455 5.5.1 and 7.4: a close payload is empty or a valid 2-byte code plus UTF-8 text.
void WsProtocol::judge_close() noexcept {
  const std::string &p = reading_->close_payload;
  if (p.size() == 1) {
    fail_code_ = CloseCode::protocol_error;
    return;
  }
  if (p.empty()) {
    close_received_ = wire_code(CloseCode::no_status);
    echo_code_ = wire_code(CloseCode::no_status);
    return;
  }
  auto code = static_cast<uint16_t>((static_cast<uint8_t>(p[0]) << 8) | static_cast<uint8_t>(p[1]));
  close_received_ = code;
  if (!is_valid_received_close_code(code)) {
    fail_code_ = CloseCode::protocol_error;
  } else if (!is_valid_utf8(reinterpret_cast<const uint8_t *>(p.data()) + 2, p.size() - 2)) {
    fail_code_ = CloseCode::invalid_payload;
  } else {
    echo_code_ = code;
  }
}

bool WsProtocol::ensure_context() noexcept {
  if (reading_)
    return true;
  static const wslay_event_callbacks callbacks = {
      &WsProtocol::recv_cb,        &WsProtocol::send_cb,        nullptr,
      &WsProtocol::frame_start_cb, &WsProtocol::frame_chunk_cb, &WsProtocol::frame_end_cb,
      &WsProtocol::msg_cb,
  };
  auto reading = std::unique_ptr<Reading>(new (std::nothrow) Reading);
  if (!reading)
    return false;
  wslay_event_context_ptr raw = nullptr;
  if (wslay_event_context_server_init(&raw, &callbacks, this) != 0)
    return false;
  reading->ctx.reset(raw);
  reading_ = std::move(reading);
  // With compression the limit applies here to the compressed bytes as well as, in the
  // Inflater, to the inflated ones.
  wslay_event_config_set_max_recv_msg_length(raw, max_message_bytes_);
  if (inflate_bits_ != 0)
    wslay_event_config_set_allowed_rsv_bits(raw, WSLAY_RSV1_BIT);
  return true;
}

void WsProtocol::fail(uint16_t code) noexcept {
  if (state_ == State::done)
    return;
  if (state_ == State::open) {
    // 1005 stands for "no code": the answer to an empty close is an empty close.
    std::string frame = encode_frame(Opcode::close, code == wire_code(CloseCode::no_status)
                                                        ? std::string()
                                                        : encode_close_payload(code, {}));
    handler_.on_ws_output(reinterpret_cast<const uint8_t *>(frame.data()), frame.size());
    close_sent_ = code;
  }
  state_ = State::done;
  reading_.reset(); // the context and any inflate state with it
}

void WsProtocol::feed(const uint8_t *data, size_t len) noexcept {
  if (state_ == State::done || len == 0)
    return;
  if (!ensure_context()) {
    fail(CloseCode::internal_error);
    return;
  }
  reading_->in = data;
  reading_->in_len = len;
  int rv = wslay_event_recv(reading_->ctx.get());
  reading_->in = nullptr;
  reading_->in_len = 0;
  if (rv == WSLAY_ERR_NOMEM) {
    fail(CloseCode::internal_error);
    return;
  }
  if (rv != 0 && fail_code_ == CloseCode{})
    fail_code_ = CloseCode::protocol_error; // a frame wslay could not parse
  after_wslay();
}

void WsProtocol::after_wslay() noexcept {
  if (fail_code_ != CloseCode{}) {
    fail(fail_code_);
    return;
  }
  if (echo_code_ != 0) {
    // The peer closed: echo its code (unless we closed first), and the connection is over.
    fail(echo_code_);
    return;
  }
  // Flush what wslay queued (pong, the echo of a close, its own 1002/1007/1009 close).
  if (wslay_event_send(reading_->ctx.get()) != 0) {
    fail(CloseCode::internal_error);
    return;
  }
  wslay_event_context *c = reading_->ctx.get();
  if (wslay_event_get_close_sent(c)) {
    close_sent_ = wslay_event_get_status_code_sent(c);
    if (wslay_event_get_close_received(c) || !wslay_event_get_read_enabled(c)) {
      // Either the handshake is complete, or wslay refused the peer's input (1002, 1007, 1009)
      // and will read no more: in both cases nothing remains but to drop TCP once flushed.
      state_ = State::done;
      reading_.reset(); // with it, a compressed message cut short by the close
    } else {
      state_ = State::closing;
    }
    return;
  }
  const Reading &r = *reading_;
  if (state_ == State::open && r.taken == r.framed && !r.fragmented && r.in_len == 0) {
    reading_.reset(); // idle on a frame boundary: give the ~9 KiB back
  }
}

void WsProtocol::close(uint16_t code, std::string_view reason) noexcept {
  if (state_ != State::open)
    return;
  if (!ensure_context()) {
    fail(code);
    return;
  }
  if (reason.size() > 123)
    reason = reason.substr(0, 123);
  int rv = wslay_event_queue_close(reading_->ctx.get(), code,
                                   reinterpret_cast<const uint8_t *>(reason.data()), reason.size());
  if (rv != 0) {
    fail(code);
    return;
  }
  after_wslay();
}

} // namespace sidecar
