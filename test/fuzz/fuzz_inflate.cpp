// Fuzzes the permessage-deflate inflate path (Inflater) with a cap the input chooses (16..4096
// bytes), so short inputs reach the limit; and the deflater against zlib's own inflate.
//
// Input layout: byte 0 picks the mode (bit 7), the window (9 + low 3 bits mod 7) and, in round-trip
// mode, the level (bits 3-6 mod 10); byte 1 the cap; byte 2 the frame size (1..64).
// Inflate mode: the rest is the compressed payload of one message, fed in frames of that size.
// Round-trip mode: the rest is a plain payload, which we deflate and inflate again.
//
// Invariants, each an abort when broken:
// - inflate: never more than the cap inflated, and nothing handed out after an error; with the
//   15-bit window (no distance can leave it), the outcome and bytes do not depend on how the
//   payload is cut into frames; the memory held stays under cap + 1 plus zlib's 48 KiB.
// - round trip: zlib inflates our bytes, with the window we promised, to the payload; so does our
//   inflater, unless the payload is over the cap, which is then too_big; the same payload deflates
//   to the same bytes twice.
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "fuzz_stats.h"
#include "permessage_deflate.h"

namespace {

using sidecar::Inflater;

enum : size_t { kOk, kTooBig, kCorrupt, kRoundTrip, kRoundTripTooBig };
fuzz::Stats stats("fuzz_inflate", {{"ok", true},
                                   {"too_big", true},
                                   {"corrupt", true},
                                   {"round_trip", true},
                                   {"round_trip_too_big", true}});

[[noreturn]] void broken(const char *what, size_t a, size_t b) {
  std::fprintf(stderr, "fuzz_inflate: %s (%zu, %zu)\n", what, a, b);
  std::abort();
}

struct Outcome {
  Inflater::Status status;
  std::string message;
};

Outcome inflate(const uint8_t *p, size_t n, uint8_t bits, size_t cap, size_t frame) {
  Inflater inf;
  Outcome o{inf.begin(bits, cap), {}};
  for (size_t off = 0; off < n && o.status == Inflater::Status::ok; off += frame) {
    size_t k = n - off < frame ? n - off : frame;
    o.status = inf.feed(p + off, k);
    if (inf.peak_bytes() > cap + 1 + 48 * 1024)
      broken("the inflater held more than the cap and zlib's state", inf.peak_bytes(), cap);
  }
  if (o.status == Inflater::Status::ok)
    o.status = inf.finish();
  o.message.assign(inf.message());
  if (o.message.size() > cap)
    broken("more than the cap was inflated", o.message.size(), cap);
  if (o.status != Inflater::Status::ok && !o.message.empty())
    broken("a failed message still has bytes", o.message.size(), 0);
  inf.discard();
  if (inf.active() || inf.peak_bytes() != 0)
    broken("discard left state behind", 0, 0);
  return o;
}

std::string zlib_inflate(std::string_view payload, int bits) {
  z_stream z{};
  if (inflateInit2(&z, -bits) != Z_OK)
    broken("zlib inflateInit2 failed", 0, 0);
  std::string in(payload);
  in.append("\x00\x00\xff\xff", 4);
  std::string out;
  z.next_in = reinterpret_cast<Bytef *>(in.data());
  z.avail_in = static_cast<uInt>(in.size());
  char buf[4096];
  int rc;
  do {
    z.next_out = reinterpret_cast<Bytef *>(buf);
    z.avail_out = sizeof buf;
    rc = inflate(&z, Z_SYNC_FLUSH);
    out.append(buf, sizeof buf - z.avail_out);
  } while (rc == Z_OK && (z.avail_in > 0 || z.avail_out == 0));
  inflateEnd(&z);
  if (rc != Z_OK && rc != Z_BUF_ERROR)
    broken("zlib could not inflate our deflate output", static_cast<size_t>(-rc), 0);
  return out;
}

void inflate_mode(const uint8_t *p, size_t n, uint8_t bits, size_t cap, size_t frame) {
  Outcome o = inflate(p, n, bits, cap, frame);
  stats.hit(o.status == Inflater::Status::ok        ? kOk
            : o.status == Inflater::Status::too_big ? kTooBig
                                                    : kCorrupt);
  if (bits == 15) {
    Outcome whole = inflate(p, n, bits, cap, n == 0 ? 1 : n);
    if (whole.status != o.status || whole.message != o.message)
      broken("the outcome depends on the frame size", static_cast<size_t>(o.status),
             static_cast<size_t>(whole.status));
  }
}

void round_trip(const uint8_t *p, size_t n, uint8_t bits, int level, size_t cap, size_t frame) {
  sidecar::Deflater d(level, bits);
  if (!d.ok())
    broken("the deflater did not initialise", bits, static_cast<size_t>(level));
  std::string_view payload(reinterpret_cast<const char *>(p), n);
  auto c = d.compress(payload);
  if (!c.ok)
    broken("deflate failed", n, 0);
  std::string bytes(c.bytes);
  if (std::string(d.compress(payload).bytes) != bytes)
    broken("the same payload deflated to different bytes", n, bytes.size());
  if (zlib_inflate(bytes, bits) != payload)
    broken("zlib's inflate disagrees with the payload", n, bits);
  Outcome o =
      inflate(reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size(), bits, cap, frame);
  if (n > cap) {
    if (o.status != Inflater::Status::too_big)
      broken("a payload over the cap was not too big", n, cap);
    stats.hit(kRoundTripTooBig);
  } else {
    if (o.status != Inflater::Status::ok || o.message != payload)
      broken("our inflater disagrees with the payload", n, static_cast<size_t>(o.status));
    stats.hit(kRoundTrip);
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3)
    return 0;
  auto bits = static_cast<uint8_t>(9 + (data[0] & 0x07) % 7);
  int level = ((data[0] >> 3) & 0x0f) % 10;
  size_t cap = 16 + size_t{data[1]} * 16;
  size_t frame = 1 + (data[2] & 0x3f);
  if ((data[0] & 0x80) != 0)
    round_trip(data + 3, size - 3, bits, level, cap, frame);
  else
    inflate_mode(data + 3, size - 3, bits, cap, frame);
  return 0;
}
