#include "ws_protocol.h"

#include <doctest/doctest.h>
#include <zlib.h>

#include <string>
#include <vector>

using namespace sidecar;

namespace {

// Records what the protocol hands out, so tests can look at whole messages and output bytes.
struct Recorder final : WsHandler {
  std::vector<std::pair<Opcode, std::string>> messages;
  std::string output;
  void on_ws_message(Opcode op, const uint8_t *data, size_t len) override {
    messages.emplace_back(op, std::string(reinterpret_cast<const char *>(data), len));
  }
  void on_ws_output(const uint8_t *data, size_t len) override {
    output.append(reinterpret_cast<const char *>(data), len);
  }
  std::vector<Inflater::Status> inflate_errors;
  void on_ws_inflate_error(Inflater::Status st) noexcept override { inflate_errors.push_back(st); }
};

// A message payload as a permessage-deflate client sends it (RFC 7692 7.2.1).
std::string deflated(std::string_view in, int bits = 15) {
  z_stream z{};
  REQUIRE(deflateInit2(&z, 6, Z_DEFLATED, -bits, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  std::string out(deflateBound(&z, static_cast<uLong>(in.size())) + 16, '\0');
  z.next_in = reinterpret_cast<Bytef *>(const_cast<char *>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef *>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&z, Z_SYNC_FLUSH) == Z_OK);
  out.resize(out.size() - z.avail_out - 4); // the 00 00 ff ff tail
  deflateEnd(&z);
  return out;
}

// A masked client frame, as a browser would send it.
std::string client_frame(uint8_t first_byte, std::string_view payload, bool mask = true) {
  std::string f;
  f.push_back(static_cast<char>(first_byte));
  uint8_t m = mask ? 0x80 : 0;
  if (payload.size() < 126) {
    f.push_back(static_cast<char>(m | payload.size()));
  } else if (payload.size() <= 0xffff) {
    f.push_back(static_cast<char>(m | 126));
    f.push_back(static_cast<char>(payload.size() >> 8));
    f.push_back(static_cast<char>(payload.size() & 0xff));
  } else {
    f.push_back(static_cast<char>(m | 127));
    for (int i = 7; i >= 0; --i)
      f.push_back(static_cast<char>((payload.size() >> (8 * i)) & 0xff));
  }
  const char key[4] = {0x12, 0x34, 0x56, 0x78};
  if (mask)
    f.append(key, 4);
  for (size_t i = 0; i < payload.size(); ++i) {
    f.push_back(mask ? static_cast<char>(payload[i] ^ key[i % 4]) : payload[i]);
  }
  return f;
}

void feed(WsProtocol &p, const std::string &bytes) {
  p.feed(reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size());
}

// The close code in the first close frame of server output, or 0.
uint16_t sent_close_code(const std::string &out) {
  for (size_t i = 0; i + 1 < out.size();) {
    auto op = static_cast<uint8_t>(out[i]) & 0x0f;
    size_t len = static_cast<uint8_t>(out[i + 1]) & 0x7f;
    size_t hdr = 2;
    if (len == 126) {
      len = (static_cast<uint8_t>(out[i + 2]) << 8) | static_cast<uint8_t>(out[i + 3]);
      hdr = 4;
    }
    if (op == 8) {
      return len >= 2 ? static_cast<uint16_t>((static_cast<uint8_t>(out[i + hdr]) << 8) |
                                              static_cast<uint8_t>(out[i + hdr + 1]))
                      : 1005;
    }
    i += hdr + len;
  }
  return 0;
}

} // namespace

TEST_CASE("a masked text message is delivered whole, whatever the read splits") {
  std::string bytes = client_frame(0x81, "{\"type\":\"ping\"}") + client_frame(0x82, "\x01\x02");
  for (size_t cut = 0; cut <= bytes.size(); ++cut) {
    Recorder r;
    WsProtocol p(r, 1024);
    feed(p, bytes.substr(0, cut));
    feed(p, bytes.substr(cut));
    REQUIRE(r.messages.size() == 2);
    CHECK(r.messages[0] == std::pair{Opcode::text, std::string("{\"type\":\"ping\"}")});
    CHECK(r.messages[1].first == Opcode::binary);
    CHECK(p.state() == WsProtocol::State::open);
    CHECK_FALSE(p.has_context()); // back on a frame boundary: the wslay context is freed
  }
}

TEST_CASE("the wslay context lives only while a frame is half read") {
  Recorder r;
  WsProtocol p(r, 1024);
  std::string f = client_frame(0x81, "hello");
  feed(p, f.substr(0, 3));
  CHECK(p.has_context());
  feed(p, f.substr(3));
  CHECK_FALSE(p.has_context());
  // A fragmented message keeps it until the final fragment.
  feed(p, client_frame(0x01, "he"));
  CHECK(p.has_context());
  feed(p, client_frame(0x80, "llo"));
  CHECK_FALSE(p.has_context());
  REQUIRE(r.messages.size() == 2);
  CHECK(r.messages[1].second == "hello");
}

TEST_CASE("a ping is answered with a pong carrying the same payload") {
  Recorder r;
  WsProtocol p(r, 1024);
  feed(p, client_frame(0x89, "abc"));
  CHECK(r.output == std::string("\x8a\x03"
                                "abc",
                                5));
}

TEST_CASE("an unmasked client frame fails the connection with 1002") {
  Recorder r;
  WsProtocol p(r, 1024);
  feed(p, client_frame(0x81, "hi", false));
  CHECK(sent_close_code(r.output) == 1002);
  CHECK(p.state() == WsProtocol::State::done);
  CHECK(r.messages.empty());
}

TEST_CASE("protocol violations are closed with 1002") {
  std::vector<std::string> cases = {
      client_frame(0xC1, "x"),                           // RSV1 without an extension
      client_frame(0x83, "x"),                           // reserved data opcode
      client_frame(0x8B, ""),                            // reserved control opcode
      client_frame(0x80, "x"),                           // continuation without a start
      client_frame(0x09, ""),                            // fragmented ping
      client_frame(0x89, std::string(126, 'p')),         // control frame over 125 bytes
      client_frame(0x01, "a") + client_frame(0x81, "b"), // new message inside a fragmented one
      client_frame(0x88, "\x03"),                        // one-byte close payload
      client_frame(0x88, std::string("\x03\xe7", 2)),    // close code 999
      client_frame(0x88, std::string("\x03\xee", 2)),    // close code 1006
      client_frame(0x88, std::string("\x13\x88", 2)),    // close code 5000
  };
  for (const auto &bytes : cases) {
    CAPTURE(bytes.size());
    Recorder r;
    WsProtocol p(r, 1024);
    feed(p, bytes);
    CHECK(sent_close_code(r.output) == 1002);
    CHECK(p.state() == WsProtocol::State::done);
  }
}

TEST_CASE("a 64-bit length with the top bit set is a protocol error") {
  Recorder r;
  WsProtocol p(r, 1 << 20);
  std::string f = "\x82\xff";
  f.append("\x80\x00\x00\x00\x00\x00\x00\x01", 8);
  f.append("\x01\x02\x03\x04", 4);
  feed(p, f);
  CHECK(sent_close_code(r.output) == 1002);
}

TEST_CASE("invalid UTF-8 is closed with 1007, also when split across fragments") {
  for (const auto &bytes :
       {client_frame(0x81, "\xc3\x28"), client_frame(0x01, "ok \xe2\x82") + client_frame(0x80, "x"),
        client_frame(0x01, "ok \xe2") + client_frame(0x80, ""),
        client_frame(0x88, std::string("\x03\xe8\xff", 3))}) {
    Recorder r;
    WsProtocol p(r, 1024);
    feed(p, bytes);
    CHECK(sent_close_code(r.output) == 1007);
    CHECK(r.messages.empty());
  }
}

TEST_CASE("a code point split across fragments is accepted") {
  Recorder r;
  WsProtocol p(r, 1024);
  feed(p, client_frame(0x01, "\xe2\x82") + client_frame(0x80, "\xac"));
  REQUIRE(r.messages.size() == 1);
  CHECK(r.messages[0].second == "\xe2\x82\xac");
}

TEST_CASE("a message over the size limit is closed with 1009") {
  Recorder r;
  WsProtocol p(r, 100);
  feed(p, client_frame(0x81, std::string(100, 'a')));
  CHECK(r.messages.size() == 1);
  feed(p, client_frame(0x81, std::string(101, 'a')));
  CHECK(sent_close_code(r.output) == 1009);
  CHECK(r.messages.size() == 1);
}

TEST_CASE("a client close is echoed and ends the connection") {
  Recorder r;
  WsProtocol p(r, 1024);
  feed(p, client_frame(0x88, std::string("\x03\xe8"
                                         "bye",
                                         5)));
  CHECK(sent_close_code(r.output) == 1000);
  CHECK(p.close_code_received() == 1000);
  CHECK(p.state() == WsProtocol::State::done);
}

TEST_CASE("a server close waits for the peer's close, then is done") {
  Recorder r;
  WsProtocol p(r, 1024);
  p.close(1001, "going away");
  CHECK(sent_close_code(r.output) == 1001);
  CHECK(p.state() == WsProtocol::State::closing);
  size_t before = r.output.size();
  feed(p, client_frame(0x81, "late message"));
  CHECK(r.messages.empty()); // nothing is delivered once we are closing
  feed(p, client_frame(0x88, std::string("\x03\xe9", 2)));
  CHECK(p.state() == WsProtocol::State::done);
  CHECK(r.output.size() == before); // the peer's close is not echoed a second time
}

TEST_CASE("close codes IANA assigned after RFC 6455 are echoed, an empty close gets an empty one") {
  for (int code : {1012, 1013, 1014, 3000, 4999}) {
    Recorder r;
    WsProtocol p(r, 1024);
    std::string payload = {static_cast<char>(code >> 8), static_cast<char>(code & 0xff)};
    feed(p, client_frame(0x88, payload + "bye"));
    CHECK(sent_close_code(r.output) == code);
    CHECK(p.close_code_received() == code);
  }
  Recorder r;
  WsProtocol p(r, 1024);
  feed(p, client_frame(0x88, ""));
  CHECK(r.output == std::string("\x88\x00", 2));
  CHECK(p.close_code_received() == 1005);
}

// ---------------------------------------------------------------- permessage-deflate

TEST_CASE("a compressed message is inflated, whatever the read splits, and nothing stays") {
  std::string text = R"({"type":"chat","text":"h\u00e9llo h\u00e9llo h\u00e9llo h\u00e9llo"})";
  std::string body = deflated(text);
  std::string bytes = client_frame(0xC1, body) + client_frame(0x81, "plain") +
                      client_frame(0x41, body.substr(0, 5)) + client_frame(0x89, "p") +
                      client_frame(0x80, body.substr(5));
  for (size_t cut = 0; cut <= bytes.size(); ++cut) {
    Recorder r;
    WsProtocol p(r, 1024, 15);
    feed(p, bytes.substr(0, cut));
    feed(p, bytes.substr(cut));
    REQUIRE(r.messages.size() == 3);
    CHECK(r.messages[0].second == text);
    CHECK(r.messages[1].second == "plain");
    CHECK(r.messages[2].second == text);
    CHECK(p.state() == WsProtocol::State::open);
    CHECK_FALSE(p.inflating()); // an idle connection keeps no zlib state
    CHECK_FALSE(p.has_context());
  }
}

TEST_CASE("the inflate state exists only while a compressed message is open") {
  Recorder r;
  WsProtocol p(r, 1024, 15);
  std::string body = deflated(std::string(300, 'x'));
  feed(p, client_frame(0x42, body.substr(0, 3)));
  CHECK(p.inflating());
  feed(p, client_frame(0x80, body.substr(3)));
  CHECK_FALSE(p.inflating());
  REQUIRE(r.messages.size() == 1);
  CHECK(r.messages[0] == std::pair{Opcode::binary, std::string(300, 'x')});
}

TEST_CASE("the message limit applies to the inflated size: a bomb is closed with 1009") {
  Recorder r;
  WsProtocol p(r, 4096, 15);
  feed(p, client_frame(0xC1, deflated(std::string(4096, 'a'))));
  CHECK(r.messages.size() == 1);
  std::string bomb = deflated(std::string(2 << 20, 'a')); // 2 MiB in about 2 KiB
  REQUIRE(bomb.size() < 4096); // under the limit on the wire: only inflating finds it
  feed(p, client_frame(0xC2, bomb));
  CHECK(sent_close_code(r.output) == 1009);
  CHECK(p.state() == WsProtocol::State::done);
  CHECK(r.messages.size() == 1);
  CHECK(r.inflate_errors == std::vector{Inflater::Status::too_big});
  CHECK_FALSE(p.inflating());
}

TEST_CASE("broken deflate and invalid inflated UTF-8 are closed with 1007") {
  std::string whole = deflated(std::string(3000, 'q') + "tail of the message");
  for (const auto &bytes :
       {client_frame(0xC1, whole.substr(0, whole.size() / 2)),
        client_frame(0xC1, "\x07\xff\xff\xff"), client_frame(0xC1, deflated("ok \xff\xfe"))}) {
    Recorder r;
    WsProtocol p(r, 1 << 20, 15);
    feed(p, bytes);
    CHECK(sent_close_code(r.output) == 1007);
    CHECK(r.messages.empty());
    CHECK_FALSE(p.inflating());
  }
}

TEST_CASE("RSV1 is a protocol error without an agreement, on a control frame or a continuation") {
  std::string body = deflated("{}");
  struct Case {
    uint8_t bits;
    std::string bytes;
  };
  for (const Case &c : {Case{0, client_frame(0xC1, body)}, Case{15, client_frame(0xC9, "")},
                        Case{15, client_frame(0x41, "") + client_frame(0xC0, body)},
                        Case{15, client_frame(0x01, "{") + client_frame(0xC0, "}")},
                        Case{15, client_frame(0xA1, "{}")}, Case{15, client_frame(0x91, "{}")}}) {
    Recorder r;
    WsProtocol p(r, 1024, c.bits);
    feed(p, c.bytes);
    CHECK(sent_close_code(r.output) == 1002);
    CHECK(r.messages.empty());
    CHECK_FALSE(p.inflating());
  }
}

TEST_CASE("an empty compressed message is the empty message") {
  Recorder r;
  WsProtocol p(r, 1024, 15);
  feed(p, client_frame(0xC1, "") + client_frame(0xC1, std::string("\x00", 1)));
  REQUIRE(r.messages.size() == 2);
  CHECK(r.messages[0].second.empty());
  CHECK(r.messages[1].second.empty());
}
