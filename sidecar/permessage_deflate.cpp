// permessage-deflate negotiation, deflater and capped inflater; see permessage_deflate.h.
#include "permessage_deflate.h"

#include <climits>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

namespace sidecar {
namespace {

// ---------------------------------------------------------------- negotiation

// RFC 7230 token characters.
bool is_tchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
    return true;
  switch (c) {
  case '!':
  case '#':
  case '$':
  case '%':
  case '&':
  case '\'':
  case '*':
  case '+':
  case '-':
  case '.':
  case '^':
  case '_':
  case '`':
  case '|':
  case '~':
    return true;
  default:
    return false;
  }
}

bool is_token(std::string_view s) {
  if (s.empty())
    return false;
  for (char c : s)
    if (!is_tchar(c))
      return false;
  return true;
}

struct Param {
  std::string_view name;
  std::string value; // unescaped when it was a quoted string
  bool has_value = false;
};

struct Offer {
  std::string_view name;
  std::vector<Param> params;
};

// A cursor over the header value (RFC 6455 9.1 with RFC 7230's list and quoted-string rules).
// Each list element is parsed on its own: a malformed one is skipped up to the next comma outside
// quotes, so one bad offer does not spoil the others.
class OfferParser {
public:
  explicit OfferParser(std::string_view s) : s_(s) {}

  // The next well-formed element, skipping empty and malformed ones. False at the end, or when
  // an unterminated quoted string makes the rest of the header unreadable.
  bool next(Offer &out) {
    while (true) {
      skip_ows();
      if (i_ >= s_.size())
        return false;
      if (s_[i_] == ',') {
        ++i_; // an empty element, which RFC 7230 7 tells recipients to ignore
        continue;
      }
      size_t start = i_;
      out = Offer{};
      if (element(out))
        return true;
      ++malformed_;
      if (!skip_element(start))
        return false;
    }
  }
  size_t malformed() const { return malformed_; }

private:
  void skip_ows() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t'))
      ++i_;
  }
  std::string_view token() {
    size_t b = i_;
    while (i_ < s_.size() && is_tchar(s_[i_]))
      ++i_;
    return s_.substr(b, i_ - b);
  }
  // At an opening quote: reads the quoted-string and unescapes it.
  bool quoted(std::string &out) {
    ++i_;
    while (i_ < s_.size()) {
      char c = s_[i_++];
      if (c == '"')
        return true;
      if (c == '\\') {
        if (i_ >= s_.size())
          return false;
        c = s_[i_++];
      }
      auto u = static_cast<unsigned char>(c);
      if ((u < 0x20 && c != '\t') || u == 0x7f)
        return false;
      out.push_back(c);
    }
    return false;
  }
  bool element(Offer &out) {
    out.name = token();
    if (out.name.empty())
      return false;
    while (true) {
      skip_ows();
      if (i_ >= s_.size())
        return true;
      if (s_[i_] == ',') {
        ++i_;
        return true;
      }
      if (s_[i_] != ';')
        return false;
      ++i_;
      skip_ows();
      Param p;
      p.name = token();
      if (p.name.empty())
        return false;
      skip_ows();
      if (i_ < s_.size() && s_[i_] == '=') {
        ++i_;
        skip_ows();
        p.has_value = true;
        if (i_ < s_.size() && s_[i_] == '"') {
          if (!quoted(p.value))
            return false;
          // RFC 6455 9.1: after unescaping, a quoted value must still be a token.
          if (!is_token(p.value))
            return false;
        } else {
          std::string_view v = token();
          if (v.empty())
            return false;
          p.value.assign(v);
        }
      }
      out.params.push_back(std::move(p));
    }
  }
  // From the start of a malformed element to just past the next comma outside quotes. False when
  // a quote never closes: nothing after it can be split reliably.
  bool skip_element(size_t start) {
    i_ = start;
    bool in_quotes = false;
    while (i_ < s_.size()) {
      char c = s_[i_++];
      if (in_quotes) {
        if (c == '\\')
          ++i_;
        else if (c == '"')
          in_quotes = false;
      } else if (c == '"') {
        in_quotes = true;
      } else if (c == ',') {
        return true;
      }
    }
    if (in_quotes)
      return false;
    return true;
  }

  std::string_view s_;
  size_t i_ = 0;
  size_t malformed_ = 0;
};

// RFC 7692 7.1.2: 1*DIGIT without a leading zero, 8..15.
int window_bits(const Param &p) {
  const std::string &v = p.value;
  if (v.empty() || v.size() > 2 || v[0] == '0')
    return -1;
  int n = 0;
  for (char c : v) {
    if (c < '0' || c > '9')
      return -1;
    n = n * 10 + (c - '0');
  }
  return n >= 8 && n <= 15 ? n : -1;
}

// One permessage-deflate offer: the agreement, or why it is declined.
Result<DeflateAgreement> judge(const Offer &offer, const DeflateOptions &options) {
  bool server_nct = false, client_nct = false, client_bits_offered = false;
  int server_bits = 0; // 0: not offered
  int client_bits = 0; // 0: offered without a value, or not offered
  for (const Param &p : offer.params) {
    if (p.name == "server_no_context_takeover") {
      if (server_nct)
        return Result<DeflateAgreement>::fail("duplicate server_no_context_takeover");
      if (p.has_value)
        return Result<DeflateAgreement>::fail("server_no_context_takeover has a value");
      server_nct = true;
    } else if (p.name == "client_no_context_takeover") {
      if (client_nct)
        return Result<DeflateAgreement>::fail("duplicate client_no_context_takeover");
      if (p.has_value)
        return Result<DeflateAgreement>::fail("client_no_context_takeover has a value");
      client_nct = true;
    } else if (p.name == "server_max_window_bits") {
      if (server_bits != 0)
        return Result<DeflateAgreement>::fail("duplicate server_max_window_bits");
      server_bits = p.has_value ? window_bits(p) : -1;
      if (server_bits < 0)
        return Result<DeflateAgreement>::fail("invalid server_max_window_bits");
    } else if (p.name == "client_max_window_bits") {
      if (client_bits_offered)
        return Result<DeflateAgreement>::fail("duplicate client_max_window_bits");
      client_bits_offered = true;
      if (p.has_value) {
        client_bits = window_bits(p);
        if (client_bits < 0)
          return Result<DeflateAgreement>::fail("invalid client_max_window_bits");
      }
    } else {
      return Result<DeflateAgreement>::fail("unknown parameter");
    }
  }
  // zlib cannot deflate raw with an 8-bit window, and the answer may not exceed the offer.
  if (server_bits == 8)
    return Result<DeflateAgreement>::fail("server_max_window_bits=8 is not supported");

  DeflateAgreement a;
  a.response = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
  if (server_bits != 0) {
    a.server_window_bits = static_cast<uint8_t>(server_bits);
    a.response += "; server_max_window_bits=" + std::to_string(server_bits);
  }
  if (client_bits_offered) {
    // Without a value the client lets us choose; with one, we may only go lower (7.1.2.2). An
    // answer of 8 is never given (see the header), and then 15 is the safe window to inflate with.
    int cap = options.client_max_window_bits;
    if (cap < 9 || cap > 15)
      cap = 15;
    int bits = client_bits == 0 ? cap : (client_bits < cap ? client_bits : cap);
    if (bits >= 9) {
      a.client_window_bits = static_cast<uint8_t>(bits);
      a.response += "; client_max_window_bits=" + std::to_string(bits);
    }
  }
  // Both no_context_takeover parameters are answered whether they were offered or not (7.1.1.1
  // and 7.1.1.2 allow it), so the two flags only served to refuse duplicates.
  return a;
}

// ---------------------------------------------------------------- inflate allocation counting

// zlib's allocations for an Inflater go through these, so that its peak memory is known.
struct AllocHeader {
  size_t size;
  size_t pad; // keeps the payload 16-byte aligned
};

} // namespace

Result<DeflateAgreement> negotiate_permessage_deflate(std::string_view offers,
                                                      const DeflateOptions &options) {
  std::string last_reason;
  if (!options.enabled)
    return Result<DeflateAgreement>::fail({});
  OfferParser parser(offers);
  Offer offer;
  while (parser.next(offer)) {
    if (offer.name != "permessage-deflate")
      continue;
    Result<DeflateAgreement> r = judge(offer, options);
    if (r)
      return r;
    last_reason = r.error;
  }
  if (last_reason.empty() && parser.malformed() > 0)
    last_reason = "malformed Sec-WebSocket-Extensions";
  return Result<DeflateAgreement>::fail(last_reason);
}

size_t encode_compressed_frame_header(uint8_t *out, Opcode op, uint64_t payload_len) {
  size_t n = encode_frame_header(out, op, payload_len, true);
  out[0] = static_cast<uint8_t>(out[0] | 0x40); // RSV1: this message is compressed (RFC 7692 6)
  return n;
}

// ---------------------------------------------------------------- Deflater

Deflater::Deflater(int level, uint8_t window_bits) noexcept {
  // memLevel 8 is zlib's default; the deflater is one per process, so its memory does not matter.
  ok_ = window_bits >= 9 && window_bits <= 15 && level >= 0 && level <= 9 &&
        deflateInit2(&z_, level, Z_DEFLATED, -static_cast<int>(window_bits), 8,
                     Z_DEFAULT_STRATEGY) == Z_OK;
}

Deflater::~Deflater() {
  if (ok_)
    deflateEnd(&z_);
  std::free(out_);
}

bool Deflater::reserve(size_t n) noexcept {
  void *p = std::realloc(out_, n);
  if (p == nullptr)
    return false;
  out_ = static_cast<uint8_t *>(p);
  cap_ = n;
  return true;
}

Deflater::Compressed Deflater::compress(std::string_view payload) noexcept {
  Compressed c;
  if (!ok_ || payload.size() > UINT_MAX / 2)
    return c;
  if (deflateReset(&z_) != Z_OK)
    return c;
  // deflateBound covers one Z_FINISH; the sync flush's empty stored block adds at most 5 bytes.
  size_t need = deflateBound(&z_, static_cast<uLong>(payload.size())) + 16;
  // A buffer grown for one large message is given back once messages are small again.
  size_t want = cap_ > kKeptOutput && need <= kKeptOutput ? kKeptOutput : need;
  if ((need > cap_ || want < cap_) && !reserve(want))
    return c;
  z_.next_in = reinterpret_cast<Bytef *>(const_cast<char *>(payload.data()));
  z_.avail_in = static_cast<uInt>(payload.size());
  size_t produced = 0;
  while (true) {
    z_.next_out = out_ + produced;
    z_.avail_out = static_cast<uInt>(cap_ - produced);
    int rc = deflate(&z_, Z_SYNC_FLUSH);
    produced = cap_ - z_.avail_out;
    if (rc != Z_OK && rc != Z_BUF_ERROR)
      return c;
    if (z_.avail_in == 0 && z_.avail_out != 0)
      break; // the flush is complete: deflate had room left over
    if (!reserve(cap_ * 2))
      return c;
  }
  static constexpr uint8_t kTail[4] = {0x00, 0x00, 0xff, 0xff};
  if (produced < 4 || std::memcmp(out_ + produced - 4, kTail, 4) != 0)
    return c;
  c.ok = true;
  c.bytes = std::string_view(reinterpret_cast<const char *>(out_), produced - 4);
  c.smaller = c.bytes.size() < payload.size();
  return c;
}

SharedFrame *Deflater::make_frame(Opcode op, std::string_view payload) noexcept {
  Compressed c = compress(payload);
  if (!c.ok || !c.smaller)
    return nullptr;
  uint8_t header[kMaxFrameHeader];
  size_t hlen = encode_compressed_frame_header(header, op, c.bytes.size());
  return SharedFrame::make_raw(std::string_view(reinterpret_cast<const char *>(header), hlen),
                               c.bytes);
}

Deflater *DeflaterSet::get(uint8_t window_bits) noexcept {
  if (window_bits < 9 || window_bits > 15)
    return nullptr;
  std::unique_ptr<Deflater> &d = by_bits_[window_bits - 9];
  if (!d) {
    try {
      d = std::make_unique<Deflater>(level_, window_bits);
    } catch (...) {
      return nullptr;
    }
    if (!d->ok()) {
      d.reset();
      return nullptr;
    }
  }
  return d.get();
}

// ---------------------------------------------------------------- Inflater

struct Inflater::State {
  z_stream z{};
  bool z_live = false;
  uint8_t *out = nullptr; // malloc'd output, capacity cap, size bytes used
  size_t size = 0;
  size_t cap = 0;
  size_t max = 0;     // the message limit
  size_t zlib = 0;    // bytes zlib holds now
  size_t peak = 0;    // most bytes held at once (this struct, zlib, output)
  size_t fed = 0;     // compressed bytes fed so far
  bool ended = false; // a block with BFINAL set ended the stream at the last byte fed
  Status error = Status::ok;

  ~State() {
    if (z_live)
      inflateEnd(&z);
    std::free(out);
  }
  void note() {
    size_t now = sizeof(State) + zlib + cap;
    if (now > peak)
      peak = now;
  }
  static voidpf zalloc(voidpf opaque, uInt items, uInt size) {
    auto *st = static_cast<State *>(opaque);
    size_t n = size_t{items} * size;
    void *p = std::malloc(sizeof(AllocHeader) + n);
    if (p == nullptr)
      return nullptr;
    static_cast<AllocHeader *>(p)->size = n;
    st->zlib += n;
    st->note();
    return static_cast<AllocHeader *>(p) + 1;
  }
  static void zfree(voidpf opaque, voidpf addr) {
    if (addr == nullptr)
      return;
    auto *h = static_cast<AllocHeader *>(addr) - 1;
    static_cast<State *>(opaque)->zlib -= h->size;
    std::free(h);
  }
  // Room for more output. The buffer doubles from 4 KiB and stops at max + 1 bytes: a message
  // that fills that last byte is over the limit, so no more is ever allocated for it.
  Status grow() {
    if (cap > max)
      return Status::too_big;
    size_t next = cap == 0 ? 4096 : cap * 2;
    if (next > max + 1)
      next = max + 1;
    void *p = std::realloc(out, next);
    if (p == nullptr)
      return Status::no_memory;
    out = static_cast<uint8_t *>(p);
    cap = next;
    note();
    return Status::ok;
  }
};

Inflater::Inflater() noexcept = default;
Inflater::~Inflater() = default;

void Inflater::discard() noexcept { state_.reset(); }

size_t Inflater::peak_bytes() const noexcept { return state_ ? state_->peak : 0; }

std::string_view Inflater::message() const noexcept {
  if (!state_ || state_->error != Status::ok)
    return {};
  return std::string_view(reinterpret_cast<const char *>(state_->out), state_->size);
}

Inflater::Status Inflater::begin(uint8_t window_bits, size_t max_bytes) noexcept {
  state_.reset();
  try {
    state_ = std::make_unique<State>();
  } catch (...) {
    return Status::no_memory;
  }
  State &st = *state_;
  st.max = max_bytes;
  st.note();
  st.z.zalloc = &State::zalloc;
  st.z.zfree = &State::zfree;
  st.z.opaque = &st;
  if (window_bits < 8 || window_bits > 15)
    window_bits = 15;
  int rc = inflateInit2(&st.z, -static_cast<int>(window_bits));
  if (rc != Z_OK)
    return st.error = rc == Z_MEM_ERROR ? Status::no_memory : Status::corrupt;
  st.z_live = true;
  return Status::ok;
}

// Inflates `len` bytes into the output. `tail` marks the 00 00 ff ff that finish() appends: it is
// inflated with Z_BLOCK, so that inflate stops at the block boundary it must end on, and the
// stream is whole only if it stops there having used every byte.
Inflater::Status Inflater::run(const uint8_t *data, size_t len, bool tail) noexcept {
  State &st = *state_;
  st.z.next_in = const_cast<Bytef *>(data);
  while (true) {
    // zlib counts in uInt; frames are fed in pieces far smaller, but a huge one is cut here.
    size_t piece = len > UINT_MAX ? UINT_MAX : len;
    st.z.avail_in = static_cast<uInt>(piece);
    if (st.ended) {
      if (piece == 0)
        return Status::ok;
      // RFC 7692 7.2.1 and 7.2.3.4: a block with BFINAL set may be followed by more blocks.
      if (inflateReset(&st.z) != Z_OK)
        return st.error = Status::corrupt;
      st.ended = false;
    }
    if (st.size == st.cap) {
      Status g = st.grow();
      if (g != Status::ok)
        return st.error = g;
    }
    st.z.next_out = st.out + st.size;
    st.z.avail_out = static_cast<uInt>(st.cap - st.size);
    int rc = inflate(&st.z, tail ? Z_BLOCK : Z_SYNC_FLUSH);
    st.size = st.cap - st.z.avail_out;
    size_t used = piece - st.z.avail_in;
    len -= used;
    // The buffer stops at max + 1 bytes; filling it is the message being too big, however the
    // stream goes on (or ends right there).
    if (st.size > st.max)
      return st.error = Status::too_big;
    switch (rc) {
    case Z_STREAM_END:
      st.ended = true;
      continue;
    case Z_OK:
    case Z_BUF_ERROR:
      break;
    case Z_MEM_ERROR:
      return st.error = Status::no_memory;
    default: // Z_DATA_ERROR, Z_NEED_DICT (not in raw DEFLATE), Z_STREAM_ERROR
      return st.error = Status::corrupt;
    }
    if (st.z.avail_out == 0)
      continue; // the output is full: grow it (or find the message too big) and go on
    if (len == 0) {
      if (tail && (st.z.data_type & 128) == 0)
        return st.error = Status::corrupt; // the data stops inside a block
      return Status::ok;
    }
    if (used == 0)
      return st.error = Status::corrupt; // stopped at a block boundary with bytes left over
  }
}

Inflater::Status Inflater::feed(const uint8_t *data, size_t len) noexcept {
  if (!state_)
    return Status::corrupt;
  if (state_->error != Status::ok)
    return state_->error;
  if (len == 0)
    return Status::ok;
  state_->fed += len;
  return run(data, len, false);
}

Inflater::Status Inflater::finish() noexcept {
  if (!state_)
    return Status::corrupt;
  State &st = *state_;
  if (st.error != Status::ok)
    return st.error;
  // An empty compressed payload is taken as the empty message, as zlib-based peers do.
  if (st.fed == 0)
    return Status::ok;
  // A stream that a BFINAL block ended exactly at the last byte is complete without the tail.
  if (st.ended)
    return Status::ok;
  static constexpr uint8_t kTail[4] = {0x00, 0x00, 0xff, 0xff};
  return run(kTail, sizeof kTail, true);
}

} // namespace sidecar
