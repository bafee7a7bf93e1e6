// Fuzzes the request path: RequestParser fed in chunks the input chooses, then the upgrade checks
// and the query/cookie accessors on whatever request came out. Any crash, leak or UB is a bug; so
// is a "done" whose consumed count lies outside the bytes given.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "handshake.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  size_t chunk = 1 + data[0] % 64; // the first byte picks the read size
  const char *p = reinterpret_cast<const char *>(data + 1);
  size_t n = size - 1;
  sidecar::RequestParser parser(4096);
  size_t off = 0;
  while (off < n) {
    size_t len = n - off < chunk ? n - off : chunk;
    size_t used = 0;
    auto st = parser.feed(p + off, len, used);
    if (st == sidecar::RequestParser::State::error) {
      if (parser.error_answer().status != 400 && parser.error_answer().status != 431)
        abort();
      return 0;
    }
    if (st == sidecar::RequestParser::State::done) {
      if (used > len)
        abort();
      const sidecar::HttpRequest &r = parser.request();
      auto c = sidecar::check_upgrade(r);
      if (c.is_upgrade && !c.refusal && c.key.empty())
        abort();
      (void)r.query_param("token");
      (void)r.cookie("token");
      (void)r.header_list("sec-websocket-protocol");
      if (!c.refusal && c.is_upgrade)
        (void)sidecar::build_switching_protocols(c.key, "bearer");
      return 0;
    }
    off += len;
  }
  return 0;
}
