// Unit tests for sidecar/permessage_deflate.*: every offer shape of RFC 7692 section 7 and hostile
// headers; our deflate against zlib's own inflate and zlib's deflate (other levels, strategies,
// windows and flush points) against our inflater; the cap on bombs, truncated and corrupt streams.
#include "permessage_deflate.h"

#include <doctest/doctest.h>

#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

using namespace sidecar;

namespace {

Result<DeflateAgreement> offer(std::string_view header, uint8_t client_cap = 15) {
  DeflateOptions o;
  o.client_max_window_bits = client_cap;
  return negotiate_permessage_deflate(header, o);
}

const std::string kBase =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

// Deterministic pseudo-random bytes (xorshift), so every run tests the same inputs.
std::string random_bytes(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (auto &c : s) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c = static_cast<char>(x & 0xff);
  }
  return s;
}

// JSON events like the ones rooms relay: repetitive keys, varying values.
std::string json_events(size_t n, uint32_t seed) {
  std::string s;
  uint32_t k = seed;
  while (s.size() < n) {
    k = k * 1103515245u + 12345u;
    s += R"({"type":"order.updated","org":"acme","seq":)" + std::to_string(k % 100000) +
         R"(,"user":"u)" + std::to_string(k % 977) + R"(","price":)" + std::to_string(k % 9999) +
         R"(.25,"tags":["a","b"]},)";
  }
  s.resize(n);
  return s;
}

// zlib's own raw inflate, as a peer would run it: payload plus 00 00 ff ff, window `bits`.
std::string zlib_inflate(std::string_view payload, int bits = 15) {
  z_stream z{};
  REQUIRE(inflateInit2(&z, -bits) == Z_OK);
  std::string in(payload);
  in.append("\x00\x00\xff\xff", 4);
  std::string out;
  z.next_in = reinterpret_cast<Bytef *>(in.data());
  z.avail_in = static_cast<uInt>(in.size());
  char buf[16384];
  int rc;
  do {
    z.next_out = reinterpret_cast<Bytef *>(buf);
    z.avail_out = sizeof buf;
    rc = inflate(&z, Z_SYNC_FLUSH);
    out.append(buf, sizeof buf - z.avail_out);
  } while (rc == Z_OK && (z.avail_in > 0 || z.avail_out == 0));
  CHECK((rc == Z_OK || rc == Z_BUF_ERROR || rc == Z_STREAM_END));
  inflateEnd(&z);
  return out;
}

// zlib's deflate with parameters of its own, flushed (sync) at `parts` points, as a client that
// compresses a message in several writes would; the final 00 00 ff ff removed.
std::string zlib_deflate(std::string_view in, int level, int bits, int mem_level, int strategy,
                         size_t parts = 1) {
  z_stream z{};
  REQUIRE(deflateInit2(&z, level, Z_DEFLATED, -bits, mem_level, strategy) == Z_OK);
  std::string out;
  char buf[16384];
  size_t step = parts == 0 ? in.size() : in.size() / parts + 1;
  size_t off = 0;
  do {
    size_t n = std::min(step, in.size() - off);
    z.next_in = reinterpret_cast<Bytef *>(const_cast<char *>(in.data() + off));
    z.avail_in = static_cast<uInt>(n);
    off += n;
    do {
      z.next_out = reinterpret_cast<Bytef *>(buf);
      z.avail_out = sizeof buf;
      int rc = deflate(&z, Z_SYNC_FLUSH);
      REQUIRE((rc == Z_OK || rc == Z_BUF_ERROR));
      out.append(buf, sizeof buf - z.avail_out);
    } while (z.avail_out == 0);
  } while (off < in.size());
  deflateEnd(&z);
  REQUIRE(out.size() >= 4);
  CHECK(out.substr(out.size() - 4) == std::string("\x00\x00\xff\xff", 4));
  out.resize(out.size() - 4);
  return out;
}

struct Inflated {
  Inflater::Status status;
  std::string message;
  size_t peak = 0;
};

// Our inflater over `payload` cut into frames of `frame` bytes (0: one frame).
Inflated inflate_ours(std::string_view payload, size_t cap, uint8_t bits = 15, size_t frame = 0) {
  Inflater inf;
  Inflated r{inf.begin(bits, cap), {}, 0};
  if (r.status != Inflater::Status::ok)
    return r;
  size_t step = frame == 0 ? payload.size() : frame;
  for (size_t off = 0; off < payload.size() && r.status == Inflater::Status::ok; off += step) {
    size_t n = std::min(step, payload.size() - off);
    r.status = inf.feed(reinterpret_cast<const uint8_t *>(payload.data() + off), n);
  }
  if (r.status == Inflater::Status::ok)
    r.status = inf.finish();
  r.message = std::string(inf.message());
  r.peak = inf.peak_bytes();
  inf.discard();
  CHECK_FALSE(inf.active());
  return r;
}

std::string hex_bytes(std::initializer_list<int> b) {
  std::string s;
  for (int c : b)
    s.push_back(static_cast<char>(c));
  return s;
}

} // namespace

// ---------------------------------------------------------------- negotiation

TEST_CASE("no offer, another extension only, or compression off: no extension and no reason") {
  CHECK_FALSE(offer(""));
  CHECK(offer("").error.empty());
  CHECK_FALSE(offer("x-webkit-deflate-frame"));
  CHECK(offer("x-webkit-deflate-frame").error.empty());
  DeflateOptions off;
  off.enabled = false;
  CHECK_FALSE(negotiate_permessage_deflate("permessage-deflate", off));
}

TEST_CASE("a bare offer is answered with both no_context_takeover parameters and 15-bit windows") {
  auto r = offer("permessage-deflate");
  REQUIRE(r);
  CHECK(r->response == kBase);
  CHECK(r->server_window_bits == 15);
  CHECK(r->client_window_bits == 15);
}

TEST_CASE("the default offers of Chromium, Node ws and Python websockets are accepted") {
  // All three send this; without a configured bound we still state 15, which bounds nothing.
  auto r = offer("permessage-deflate; client_max_window_bits");
  REQUIRE(r);
  CHECK(r->response == kBase + "; client_max_window_bits=15");
  CHECK(r->client_window_bits == 15);
  auto bounded = offer("permessage-deflate; client_max_window_bits", 10);
  REQUIRE(bounded);
  CHECK(bounded->response == kBase + "; client_max_window_bits=10");
  CHECK(bounded->client_window_bits == 10);
}

TEST_CASE("client_no_context_takeover and server_no_context_takeover offered are answered once") {
  for (const char *h : {"permessage-deflate; client_no_context_takeover",
                        "permessage-deflate; server_no_context_takeover",
                        "permessage-deflate;server_no_context_takeover;client_no_context_takeover",
                        "permessage-deflate ; client_no_context_takeover ; "
                        "server_no_context_takeover"}) {
    CAPTURE(h);
    auto r = offer(h);
    REQUIRE(r);
    CHECK(r->response == kBase);
  }
}

TEST_CASE("client_max_window_bits with a value is answered with that value or the smaller bound") {
  auto r = offer("permessage-deflate; client_max_window_bits=10");
  REQUIRE(r);
  CHECK(r->response == kBase + "; client_max_window_bits=10");
  CHECK(r->client_window_bits == 10);
  auto lower = offer("permessage-deflate; client_max_window_bits=13", 12);
  REQUIRE(lower);
  CHECK(lower->response == kBase + "; client_max_window_bits=12");
  CHECK(lower->client_window_bits == 12);
}

TEST_CASE("client_max_window_bits=8 is accepted without an answer and inflated with 15 bits") {
  auto r = offer("permessage-deflate; client_max_window_bits=8");
  REQUIRE(r);
  CHECK(r->response == kBase);
  CHECK(r->client_window_bits == 15);
}

TEST_CASE("client_max_window_bits is never answered when it was not offered") {
  auto r = offer("permessage-deflate", 10);
  REQUIRE(r);
  CHECK(r->response == kBase);
  CHECK(r->client_window_bits == 15);
}

TEST_CASE("server_max_window_bits is echoed and used; 8 declines the offer") {
  for (int bits = 9; bits <= 15; ++bits) {
    std::string h = "permessage-deflate; server_max_window_bits=" + std::to_string(bits);
    auto r = offer(h);
    REQUIRE(r);
    CHECK(r->response == kBase + "; server_max_window_bits=" + std::to_string(bits));
    CHECK(r->server_window_bits == bits);
  }
  auto r8 = offer("permessage-deflate; server_max_window_bits=8");
  CHECK_FALSE(r8);
  CHECK(r8.error == "server_max_window_bits=8 is not supported");
  // The next offer is tried.
  auto next = offer("permessage-deflate; server_max_window_bits=8, permessage-deflate");
  REQUIRE(next);
  CHECK(next->response == kBase);
}

TEST_CASE("all four parameters together") {
  auto r = offer("permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                 "server_max_window_bits=10; client_max_window_bits=12");
  REQUIRE(r);
  CHECK(r->response == kBase + "; server_max_window_bits=10; client_max_window_bits=12");
  CHECK(r->server_window_bits == 10);
  CHECK(r->client_window_bits == 12);
}

TEST_CASE("quoted values are unescaped and must still be valid") {
  auto q = offer(R"(permessage-deflate; server_max_window_bits="10")");
  REQUIRE(q);
  CHECK(q->server_window_bits == 10);
  auto esc = offer(R"(permessage-deflate; client_max_window_bits="1\2")");
  REQUIRE(esc);
  CHECK(esc->client_window_bits == 12);
  for (const char *h : {R"(permessage-deflate; server_max_window_bits="1 0")",
                        R"(permessage-deflate; server_max_window_bits="")",
                        R"(permessage-deflate; server_max_window_bits="10)",
                        R"(permessage-deflate; client_max_window_bits="a,b")"}) {
    CAPTURE(h);
    CHECK_FALSE(offer(h));
  }
}

TEST_CASE("invalid window values decline the offer") {
  for (const char *v :
       {"7", "16", "0", "08", "010", "1a", "-9", "+9", "9.0", "99999999999999999"}) {
    CAPTURE(v);
    CHECK_FALSE(offer(std::string("permessage-deflate; server_max_window_bits=") + v));
    CHECK_FALSE(offer(std::string("permessage-deflate; client_max_window_bits=") + v));
  }
  // server_max_window_bits needs a value.
  CHECK_FALSE(offer("permessage-deflate; server_max_window_bits"));
  CHECK_FALSE(offer("permessage-deflate; server_max_window_bits="));
}

TEST_CASE("a value on a no_context_takeover parameter declines the offer") {
  CHECK_FALSE(offer("permessage-deflate; server_no_context_takeover=1"));
  CHECK_FALSE(offer("permessage-deflate; client_no_context_takeover=true"));
  CHECK_FALSE(offer(R"(permessage-deflate; server_no_context_takeover="")"));
}

TEST_CASE("duplicate parameters decline the offer") {
  for (const char *h :
       {"permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
        "permessage-deflate; client_max_window_bits; client_max_window_bits=10"}) {
    CAPTURE(h);
    auto r = offer(h);
    CHECK_FALSE(r);
    CHECK(r.error.rfind("duplicate", 0) == 0);
  }
}

TEST_CASE("an unknown parameter declines only its offer") {
  CHECK_FALSE(offer("permessage-deflate; foo"));
  CHECK_FALSE(offer("permessage-deflate; mux=1"));
  auto r = offer("permessage-deflate; foo, permessage-deflate; client_max_window_bits");
  REQUIRE(r);
  CHECK(r->response == kBase + "; client_max_window_bits=15");
}

TEST_CASE("the first acceptable offer wins (RFC 7692 7.1 fallback offers)") {
  auto r = offer("permessage-deflate; client_max_window_bits; server_max_window_bits=10, "
                 "permessage-deflate; client_max_window_bits");
  REQUIRE(r);
  CHECK(r->server_window_bits == 10);
}

TEST_CASE("several headers joined, other extensions, empty elements and quoted commas") {
  auto r = offer("x-webkit-deflate-frame, foo; a=\"b, c\"; d, permessage-deflate");
  REQUIRE(r);
  CHECK(r->response == kBase);
  CHECK(offer(",, ,permessage-deflate ,,"));
  CHECK(offer("\tpermessage-deflate\t;\tclient_max_window_bits\t=\t11"));
}

TEST_CASE("a malformed header is declined, never fatal") {
  const char *bad[] = {
      "permessage-deflate;",
      "permessage-deflate;;",
      "permessage-deflate; =10",
      "permessage-deflate garbage",
      "permessage-deflate; client_max_window_bits=10 11",
      "\"permessage-deflate\"",
      "permessage-deflate; server_max_window_bits=\"10",
      "\"unterminated, permessage-deflate",
      "permessage-deflate\r\n; x",
      "permessage-deflate\x01",
      "Permessage-Deflate",
      ";",
      "=",
  };
  for (const char *h : bad) {
    CAPTURE(h);
    CHECK_FALSE(offer(h));
  }
  // A malformed element before a good offer does not spoil it.
  CHECK(offer("foo bar, permessage-deflate"));
  CHECK(offer("foo;, permessage-deflate"));
  // Bytes no header should carry, anywhere.
  std::string nul("permessage-deflate\0; x", 22);
  CHECK_FALSE(offer(nul));
  CHECK_FALSE(offer("permessage-deflate; client_max_window_bits=\xff"));
  CHECK_FALSE(offer("\xff\xfe, permessage-deflate; \x80"));
}

TEST_CASE("huge and pathological headers end quickly and decline") {
  std::string many = "permessage-deflate";
  for (int i = 0; i < 20000; ++i)
    many += "; a";
  CHECK_FALSE(offer(many));
  std::string commas(100000, ',');
  CHECK_FALSE(offer(commas));
  std::string quotes(100001, '"');
  CHECK_FALSE(offer(quotes));
  CHECK(offer(commas + "permessage-deflate"));
  std::string offers;
  for (int i = 0; i < 5000; ++i)
    offers += "permessage-deflate; server_max_window_bits=8, ";
  offers += "permessage-deflate";
  CHECK(offer(offers));
}

TEST_CASE("every random header is judged without a crash") {
  for (uint32_t seed = 1; seed < 3000; ++seed) {
    std::string h = random_bytes(seed % 64, seed);
    // Mix in the grammar's own characters so the parser goes deep.
    static const char kAlphabet[] = "permessage-deflate;=,\" \\_0189cs";
    for (auto &c : h)
      c = kAlphabet[static_cast<uint8_t>(c) % (sizeof kAlphabet - 1)];
    auto r = offer(h);
    if (r) {
      CHECK(r->response.rfind(kBase, 0) == 0);
    }
  }
}

// ---------------------------------------------------------------- deflate

TEST_CASE("RFC 7692 7.2.3.1: \"Hello\" deflates to f2 48 cd c9 c9 07 00") {
  Deflater d(1, 15);
  REQUIRE(d.ok());
  auto c = d.compress("Hello");
  REQUIRE(c.ok);
  CHECK(std::string(c.bytes) == hex_bytes({0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}));
}

TEST_CASE("an empty message deflates to the single byte 00 (RFC 7692 7.2.3.6)") {
  Deflater d(6, 15);
  auto c = d.compress("");
  REQUIRE(c.ok);
  CHECK(std::string(c.bytes) == std::string(1, '\0'));
  CHECK_FALSE(c.smaller);
}

TEST_CASE("round trips of 0 B to 1 MiB, text and binary, through our deflate and zlib's inflate") {
  const size_t sizes[] = {0, 1, 2, 5, 100, 125, 126, 1000, 4096, 65535, 65536, 100000, 1 << 20};
  for (int level : {1, 6, 9}) {
    for (uint8_t bits : {uint8_t{9}, uint8_t{12}, uint8_t{15}}) {
      Deflater d(level, bits);
      REQUIRE(d.ok());
      for (size_t n : sizes) {
        for (bool text : {true, false}) {
          CAPTURE(level);
          CAPTURE(int(bits));
          CAPTURE(n);
          CAPTURE(text);
          std::string payload = text ? json_events(n, uint32_t(n)) : random_bytes(n, uint32_t(n));
          auto c = d.compress(payload);
          REQUIRE(c.ok);
          std::string compressed(c.bytes);
          // A peer inflating with exactly the window we promised reads it.
          CHECK(zlib_inflate(compressed, bits) == payload);
          auto ours = inflate_ours(compressed, payload.size() + 1);
          CHECK(ours.status == Inflater::Status::ok);
          CHECK(ours.message == payload);
          if (text && n >= 100)
            CHECK(c.smaller);
        }
      }
    }
  }
}

TEST_CASE("the same payload deflates to the same bytes every time") {
  Deflater d(1, 15);
  std::string a = json_events(3000, 7), b = json_events(5000, 8);
  std::string first(d.compress(a).bytes);
  (void)d.compress(b);
  (void)d.compress(random_bytes(200000, 3));
  std::string again(d.compress(a).bytes);
  CHECK(first == again);
  Deflater other(1, 15);
  CHECK(std::string(other.compress(a).bytes) == first);
}

TEST_CASE("a compressed frame has RSV1, the original opcode and the compressed length") {
  Deflater d(1, 15);
  std::string payload = json_events(2000, 1);
  FrameRef f(d.make_frame(Opcode::text, payload));
  REQUIRE(f);
  const uint8_t *p = f.get()->data();
  CHECK(p[0] == (0x80 | 0x40 | 0x01));
  size_t len = p[1] & 0x7f;
  size_t hdr = 2;
  if (len == 126) {
    len = size_t{p[2]} << 8 | p[3];
    hdr = 4;
  }
  CHECK(hdr + len == f.get()->size());
  std::string body(reinterpret_cast<const char *>(p + hdr), len);
  CHECK(zlib_inflate(body) == payload);
  FrameRef bin(d.make_frame(Opcode::binary, payload));
  REQUIRE(bin);
  CHECK(bin.get()->data()[0] == (0x80 | 0x40 | 0x02));
  uint8_t header[kMaxFrameHeader];
  CHECK(encode_compressed_frame_header(header, Opcode::binary, 70000) == 10);
  CHECK(header[0] == 0xc2);
  CHECK(header[1] == 127);
}

TEST_CASE("a payload that does not shrink gets no compressed frame") {
  Deflater d(6, 15);
  CHECK(d.make_frame(Opcode::binary, random_bytes(300, 9)) == nullptr);
  CHECK(d.make_frame(Opcode::text, "") == nullptr);
}

TEST_CASE("a deflater set makes one deflater per window, and none for 8 or 16") {
  DeflaterSet set(1);
  CHECK(set.get(8) == nullptr);
  CHECK(set.get(16) == nullptr);
  Deflater *d15 = set.get(15);
  REQUIRE(d15 != nullptr);
  CHECK(set.get(15) == d15);
  CHECK(set.get(9) != d15);
}

// ---------------------------------------------------------------- inflate

TEST_CASE("the RFC 7692 7.2.3 examples inflate to \"Hello\"") {
  const std::string cases[] = {
      hex_bytes({0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}),                         // 7.2.3.1
      hex_bytes({0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00}), // 7.2.3.3
      hex_bytes({0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00}),                   // 7.2.3.4
      hex_bytes({0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07,
                 0x00}), // 7.2.3.5
  };
  for (const auto &c : cases) {
    for (size_t frame = 0; frame <= c.size(); ++frame) {
      auto r = inflate_ours(c, 64, 15, frame);
      CHECK(r.status == Inflater::Status::ok);
      CHECK(r.message == "Hello");
    }
  }
  // 7.2.3.4 without its final 00 still ends at a final block: accepted as zlib-based peers do.
  auto bfinal = inflate_ours(hex_bytes({0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}), 64);
  CHECK(bfinal.status == Inflater::Status::ok);
  CHECK(bfinal.message == "Hello");
}

TEST_CASE("an empty message: the byte 00, or no payload at all") {
  auto one = inflate_ours(std::string(1, '\0'), 16);
  CHECK(one.status == Inflater::Status::ok);
  CHECK(one.message.empty());
  auto none = inflate_ours("", 16);
  CHECK(none.status == Inflater::Status::ok);
  CHECK(none.message.empty());
}

TEST_CASE("zlib's deflate with other parameters and flush points inflates through ours") {
  const int strategies[] = {Z_DEFAULT_STRATEGY, Z_FILTERED, Z_HUFFMAN_ONLY, Z_RLE, Z_FIXED};
  const size_t sizes[] = {0, 1, 130, 5000, 70000, 1 << 20};
  for (size_t n : sizes) {
    for (int strategy : strategies) {
      for (int bits : {9, 11, 15}) {
        CAPTURE(n);
        CAPTURE(strategy);
        CAPTURE(bits);
        std::string payload = n % 2 ? random_bytes(n, 5) : json_events(n, 5);
        std::string c = zlib_deflate(payload, 9, bits, 9, strategy, 3);
        auto r = inflate_ours(c, n, static_cast<uint8_t>(bits), 1000);
        CHECK(r.status == Inflater::Status::ok);
        CHECK(r.message == payload);
      }
    }
  }
}

TEST_CASE("every split of a message with sync-flush points inside inflates the same") {
  std::string payload = json_events(300, 11);
  std::string c = zlib_deflate(payload, 6, 15, 8, Z_DEFAULT_STRATEGY, 4);
  for (size_t a = 0; a <= c.size(); ++a) {
    for (size_t b = a; b <= c.size(); b += 7) {
      Inflater inf;
      REQUIRE(inf.begin(15, 1000) == Inflater::Status::ok);
      const auto *p = reinterpret_cast<const uint8_t *>(c.data());
      CHECK(inf.feed(p, a) == Inflater::Status::ok);
      CHECK(inf.feed(p + a, b - a) == Inflater::Status::ok);
      CHECK(inf.feed(p + b, c.size() - b) == Inflater::Status::ok);
      REQUIRE(inf.finish() == Inflater::Status::ok);
      CHECK(inf.message() == payload);
    }
  }
}

TEST_CASE("a message of exactly the limit passes; one byte more is too big") {
  std::string payload = json_events(10000, 2);
  Deflater d(1, 15);
  std::string c(d.compress(payload).bytes);
  CHECK(inflate_ours(c, 10000).status == Inflater::Status::ok);
  CHECK(inflate_ours(c, 9999).status == Inflater::Status::too_big);
  CHECK(inflate_ours(c, 9999).message.empty());
}

TEST_CASE("a 10 MiB bomb stops at the cap, early, having allocated about the cap") {
  std::string zeros(10 << 20, '\0');
  std::string bomb = zlib_deflate(zeros, 9, 15, 9, Z_DEFAULT_STRATEGY);
  CHECK(bomb.size() < 12 * 1024);
  const size_t cap = 1 << 20;
  Inflater inf;
  REQUIRE(inf.begin(15, cap) == Inflater::Status::ok);
  size_t fed = 0;
  Inflater::Status s = Inflater::Status::ok;
  while (fed < bomb.size() && s == Inflater::Status::ok) {
    size_t n = std::min<size_t>(256, bomb.size() - fed);
    s = inf.feed(reinterpret_cast<const uint8_t *>(bomb.data()) + fed, n);
    fed += n;
  }
  CHECK(s == Inflater::Status::too_big);
  // Stopped after about cap / 1000 compressed bytes, not at the end of the frame.
  CHECK(fed < 4096);
  // The output never exceeds cap + 1; zlib adds its state and 32 KiB window.
  MESSAGE("bomb: stopped after " << fed << " compressed bytes, peak " << inf.peak_bytes()
                                 << " bytes for a cap of " << cap);
  CHECK(inf.peak_bytes() <= cap + 1 + 48 * 1024);
  // The error sticks until the message is discarded.
  CHECK(inf.finish() == Inflater::Status::too_big);
  CHECK(inf.message().empty());
  inf.discard();
  CHECK(inf.peak_bytes() == 0);
}

TEST_CASE("an idle inflater is one pointer; an active one costs zlib's state and window") {
  CHECK(sizeof(Inflater) == sizeof(void *));
  Inflater inf;
  CHECK_FALSE(inf.active());
  for (uint8_t bits : {uint8_t{9}, uint8_t{15}}) {
    REQUIRE(inf.begin(bits, 1 << 20) == Inflater::Status::ok);
    size_t before = inf.peak_bytes();
    std::string payload = json_events(1000, 3);
    std::string c = zlib_deflate(payload, 6, bits, 8, Z_DEFAULT_STRATEGY);
    REQUIRE(inf.feed(reinterpret_cast<const uint8_t *>(c.data()), c.size()) ==
            Inflater::Status::ok);
    REQUIRE(inf.finish() == Inflater::Status::ok);
    CHECK(inf.message() == payload);
    MESSAGE("inflate, " << int(bits) << "-bit window: " << before
                        << " bytes after begin (state + zlib), peak " << inf.peak_bytes()
                        << " with a 4 KiB output buffer");
    inf.discard();
    CHECK_FALSE(inf.active());
  }
}

TEST_CASE("truncated streams are corrupt") {
  Deflater d(6, 15);
  std::string payload = json_events(20000, 4);
  std::string c(d.compress(payload).bytes);
  for (size_t cut = 1; cut <= 64; ++cut) {
    CAPTURE(cut);
    auto r = inflate_ours(std::string_view(c).substr(0, c.size() - cut), 1 << 20);
    CHECK(r.status == Inflater::Status::corrupt);
    CHECK(r.message.empty());
  }
  // A stored block that promises more than it carries.
  CHECK(inflate_ours(hex_bytes({0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65}), 64).status ==
        Inflater::Status::corrupt);
  // The sync-flush marker left in (not removed) leaves a partial block behind the appended one.
  CHECK(inflate_ours(c + std::string("\x00\x00\xff\xff", 4), 1 << 20).status ==
        Inflater::Status::corrupt);
}

TEST_CASE("garbage and data after a final block are corrupt, never over the cap") {
  CHECK(inflate_ours("\xff\xff\xff", 64).status == Inflater::Status::corrupt); // block type 11
  // 7.2.3.4's final block followed by bytes that are not a block.
  CHECK(
      inflate_ours(hex_bytes({0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0xff, 0xff}), 64).status ==
      Inflater::Status::corrupt);
  size_t ok = 0;
  for (uint32_t seed = 1; seed < 4000; ++seed) {
    std::string g = random_bytes(1 + seed % 300, seed);
    auto r = inflate_ours(g, 512, 15, 1 + seed % 17);
    CHECK(r.message.size() <= 512);
    if (r.status == Inflater::Status::ok)
      ++ok;
  }
  MESSAGE(ok << " of 3999 random payloads happened to be valid DEFLATE");
}

TEST_CASE("a stream using a window larger than agreed fails once the bytes are out of reach") {
  // Repeats 2 KiB apart: a 9-bit (512 B) window cannot reach them. zlib still resolves such a
  // distance when it lands in output written by the same inflate call, so a whole frame may pass;
  // fed a byte at a time the distance leaves both window and output, and the stream is corrupt.
  // Either way nothing is read out of bounds and nothing wrong is delivered.
  std::string chunk = random_bytes(2048, 12);
  std::string payload = chunk + chunk;
  std::string c = zlib_deflate(payload, 9, 15, 9, Z_DEFAULT_STRATEGY);
  CHECK(inflate_ours(c, 1 << 20, 15, 1).message == payload);
  auto whole = inflate_ours(c, 1 << 20, 9);
  CHECK((whole.status == Inflater::Status::corrupt || whole.message == payload));
  auto bytewise = inflate_ours(c, 1 << 20, 9, 1);
  CHECK(bytewise.status == Inflater::Status::corrupt);
  CHECK(bytewise.message.empty());
}

TEST_CASE("feeding without begin, or after finish, reports corrupt and touches nothing") {
  Inflater inf;
  const uint8_t b = 0;
  CHECK(inf.feed(&b, 1) == Inflater::Status::corrupt);
  CHECK(inf.finish() == Inflater::Status::corrupt);
  CHECK(inf.message().empty());
}

TEST_CASE("a final block that ends exactly one byte over the limit is too big") {
  // Found by fuzz_inflate: the stream ends (BFINAL) just as the output buffer's last byte fills.
  for (size_t cap : {size_t{16}, size_t{192}, size_t{4095}, size_t{4096}, size_t{8191}}) {
    CAPTURE(cap);
    std::string payload = json_events(cap + 1, 6);
    z_stream z{};
    REQUIRE(deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    std::string out(deflateBound(&z, payload.size()) + 16, '\0');
    z.next_in = reinterpret_cast<Bytef *>(payload.data());
    z.avail_in = static_cast<uInt>(payload.size());
    z.next_out = reinterpret_cast<Bytef *>(out.data());
    z.avail_out = static_cast<uInt>(out.size());
    REQUIRE(deflate(&z, Z_FINISH) == Z_STREAM_END);
    out.resize(out.size() - z.avail_out);
    deflateEnd(&z);
    CHECK(inflate_ours(out, cap).status == Inflater::Status::too_big);
    CHECK(inflate_ours(out, cap + 1).message == payload);
  }
}
