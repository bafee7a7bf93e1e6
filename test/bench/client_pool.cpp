// WebSocket clients for the load generator: connect, upgrade, parse server frames, account
// bench payloads, answer pings, and churn short-lived clients. See client_pool.h.
#include "client_pool.h"

#include <arpa/inet.h>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <ctime>
#include <netinet/in.h>
#include <string_view>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

namespace sidecar::bench {

namespace {

constexpr size_t kReadBuffer = 1 << 20;
constexpr size_t kMaxPending = 512 * 1024; // larger frames are not bench traffic
constexpr uint32_t kChurnSlots = 256;
constexpr uint64_t kChurnCloseWaitNs = 2'000'000'000;

bool parse_u64(const char *&p, const char *end, uint64_t &out) {
  auto [ptr, ec] = std::from_chars(p, end, out);
  if (ec != std::errc() || ptr == p) {
    return false;
  }
  p = ptr;
  return true;
}

bool expect(const char *&p, const char *end, std::string_view lit) {
  if (static_cast<size_t>(end - p) < lit.size() || std::memcmp(p, lit.data(), lit.size()) != 0) {
    return false;
  }
  p += lit.size();
  return true;
}

} // namespace

uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

struct ClientPool::Conn {
  enum class State : uint8_t { idle, connecting, handshaking, open, closing };
  int fd = -1;
  State state = State::idle;
  bool churn = false;
  uint8_t attempts = 0;
  uint32_t room = 0;
  uint32_t server = 0;      // an index into options_.servers
  uint64_t deadline_ns = 0; // churn clients: when to stop waiting for the server's close
  std::string pending;      // a partial response head or frame carried to the next read
  bool deflate = false;     // the server agreed permessage-deflate
  SeqTracker seq;
  ClientPosition pos;
};

ClientPool::ClientPool(ClientPoolOptions options)
    : options_(std::move(options)), envelopes_(options_.subprotocol == "sidecar.v1") {}

ClientPool::~ClientPool() {
  close_all();
  if (epoll_fd_ >= 0) {
    ::close(epoll_fd_);
  }
  if (inflater_ != nullptr) {
    auto *z = static_cast<z_stream *>(inflater_);
    inflateEnd(z);
    delete z;
  }
}

bool ClientPool::init(std::string &error) {
  if (options_.rooms == 0 || options_.connections == 0) {
    error = "connections and rooms must be positive";
    return false;
  }
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) {
    error = std::string("epoll_create1: ") + std::strerror(errno);
    return false;
  }
  conns_.resize(options_.connections + kChurnSlots);
  for (uint32_t i = 0; i < conns_.size(); ++i) {
    conns_[i].room = i % options_.rooms;
    conns_[i].server = i / options_.rooms % static_cast<uint32_t>(options_.servers.size());
    conns_[i].churn = i >= options_.connections;
    if (conns_[i].churn) {
      free_churn_.push_back(i);
    }
  }
  read_buf_.resize(kReadBuffer);
  for (uint32_t s = 0; s < options_.servers.size(); ++s) {
    for (uint32_t r = 0; r < options_.rooms; ++r) {
      requests_.push_back(build_request(s, r, ""));
    }
  }
  room_epoch_.resize(options_.rooms);
  if (options_.deflate) {
    auto *z = new z_stream{};
    if (inflateInit2(z, -15) != Z_OK) {
      delete z;
      error = "inflateInit2 failed";
      return false;
    }
    inflater_ = z;
    inflated_.resize(kMaxPending);
  }
  return true;
}

bool ClientPool::inflate(const char *p, size_t n, std::string_view &out) {
  // RFC 7692 7.2.2: the sender removed the final empty stored block's 00 00 ff ff; put it back.
  // The server deflates each message from an empty window (server_no_context_takeover), so
  // the stream is reset for every message.
  static const unsigned char kTail[4] = {0x00, 0x00, 0xff, 0xff};
  auto *z = static_cast<z_stream *>(inflater_);
  if (z == nullptr || inflateReset(z) != Z_OK) {
    return false;
  }
  z->next_out = reinterpret_cast<Bytef *>(inflated_.data());
  z->avail_out = static_cast<uInt>(inflated_.size());
  z->next_in = reinterpret_cast<Bytef *>(const_cast<char *>(p));
  z->avail_in = static_cast<uInt>(n);
  int rc = ::inflate(z, Z_SYNC_FLUSH);
  if (rc != Z_OK && rc != Z_BUF_ERROR && rc != Z_STREAM_END) {
    return false;
  }
  if (rc != Z_STREAM_END && z->avail_in == 0) {
    z->next_in = const_cast<Bytef *>(kTail);
    z->avail_in = 4;
    rc = ::inflate(z, Z_SYNC_FLUSH);
    if (rc != Z_OK && rc != Z_BUF_ERROR && rc != Z_STREAM_END) {
      return false;
    }
  }
  if (z->avail_in != 0 && rc != Z_STREAM_END) {
    return false; // larger than any bench payload
  }
  out = std::string_view(inflated_.data(), inflated_.size() - z->avail_out);
  return true;
}

std::string ClientPool::build_request(uint32_t server, uint32_t room,
                                      const std::string &query) const {
  const WsServer &to = options_.servers[server];
  std::string path = to.path_template;
  if (const size_t at = path.find("{room}"); at != std::string::npos) {
    path.replace(at, 6, std::string(1, 'r').append(std::to_string(room)));
  }
  std::string request = "GET ";
  request.append(path).append(query).append(" HTTP/1.1\r\nHost: ").append(to.host);
  request.append(":").append(std::to_string(to.port));
  request.append("\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n");
  if (!options_.subprotocol.empty()) {
    request.append("Sec-WebSocket-Protocol: ").append(options_.subprotocol).append("\r\n");
  }
  if (options_.deflate) {
    // What Chromium, Python websockets and Node ws offer by default.
    request.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n");
  }
  request.append("Sec-WebSocket-Version: 13\r\n\r\n");
  return request;
}

const ClientPosition &ClientPool::position(uint32_t client) const { return conns_[client].pos; }

const SeqTracker &ClientPool::tracker(uint32_t client) const { return conns_[client].seq; }

void ClientPool::set_room_query(uint32_t room, const std::string &query) {
  for (uint32_t s = 0; s < options_.servers.size(); ++s) {
    requests_[s * options_.rooms + room] = build_request(s, room, query);
  }
}

void ClientPool::reconnect_all(uint32_t max_in_flight) {
  for (uint32_t i = 0; i < options_.connections; ++i) {
    Conn &c = conns_[i];
    if (c.fd >= 0) {
      ::close(c.fd);
      c.fd = -1;
    }
    c.state = Conn::State::idle;
    c.attempts = 0;
    c.pending.clear();
    c.pos.welcomed = false;
    c.pos.recovered = false;
    c.pos.since_welcome = 0;
    c.pos.live_ns = 0;
  }
  // Churn slots are idle outside the churn phase, so every handshake in flight was a steady one.
  in_flight_ = 0;
  open_ = 0;
  gave_up_ = 0;
  retry_.clear();
  next_to_connect_ = 0;
  options_.max_in_flight = max_in_flight;
}

void ClientPool::start_connect(uint32_t index) {
  Conn &c = conns_[index];
  c.pending.clear();
  c.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  ++in_flight_;
  c.state = Conn::State::connecting;
  if (c.fd < 0) {
    fail(c, index, false);
    return;
  }
  if (options_.bind_sources) {
    // Deferring the port choice to connect() lets each source address use the whole
    // ephemeral range for this one destination.
    int one = 1;
    setsockopt(c.fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    sockaddr_in src{};
    src.sin_family = AF_INET;
    src.sin_addr.s_addr = htonl(0x7f000002u + (source_++ % 8));
    if (::bind(c.fd, reinterpret_cast<sockaddr *>(&src), sizeof src) != 0) {
      fail(c, index, false);
      return;
    }
  }
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(options_.servers[c.server].port);
  inet_pton(AF_INET, options_.servers[c.server].host.c_str(), &dst.sin_addr);
  if (::connect(c.fd, reinterpret_cast<sockaddr *>(&dst), sizeof dst) != 0 &&
      errno != EINPROGRESS) {
    fail(c, index, false);
    return;
  }
  epoll_event ev{};
  ev.events = EPOLLOUT;
  ev.data.u64 = index;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, c.fd, &ev) != 0) {
    fail(c, index, false);
  }
}

void ClientPool::fail(Conn &c, uint32_t index, bool server_side) {
  const bool was_pending =
      c.state == Conn::State::connecting || c.state == Conn::State::handshaking;
  const bool was_open = c.state == Conn::State::open || c.state == Conn::State::closing;
  if (c.fd >= 0) {
    ::close(c.fd); // also leaves the epoll set
    c.fd = -1;
  }
  c.state = Conn::State::idle;
  c.pending.clear();
  if (was_pending) {
    --in_flight_;
  }
  if (c.churn) {
    finish_churn(c, index, false);
    return;
  }
  if (was_pending) {
    ++counters_.connect_errors;
    if (++c.attempts < 3) {
      retry_.push_back(index);
    } else {
      ++gave_up_;
    }
  } else if (was_open) {
    --open_;
    if (server_side) {
      ++counters_.server_closed;
    }
  }
}

void ClientPool::finish_churn(Conn &c, uint32_t index, bool ok) {
  if (c.fd >= 0) {
    ::close(c.fd);
    c.fd = -1;
  }
  if (c.state == Conn::State::connecting || c.state == Conn::State::handshaking) {
    --in_flight_;
  }
  c.state = Conn::State::idle;
  c.pending.clear();
  ++(ok ? counters_.churn_done : counters_.churn_failed);
  free_churn_.push_back(index);
}

void ClientPool::send_masked(Conn &c, uint8_t opcode, const char *payload, size_t n) {
  // Client frames must be masked (RFC 6455 section 5.3); the key only needs to vary.
  static uint32_t state = 0x9e3779b9u;
  state ^= state << 13;
  state ^= state >> 17;
  state ^= state << 5;
  char frame[2 + 4 + 125];
  n = std::min<size_t>(n, 125);
  frame[0] = static_cast<char>(0x80 | opcode);
  frame[1] = static_cast<char>(0x80 | n);
  std::memcpy(frame + 2, &state, 4);
  for (size_t i = 0; i < n; ++i) {
    frame[6 + i] = static_cast<char>(payload[i] ^ frame[2 + i % 4]);
  }
  // A control frame this small fits any socket buffer; a short write means the peer is gone,
  // which the next read reports.
  [[maybe_unused]] ssize_t w = ::write(c.fd, frame, 6 + n);
}

void ClientPool::on_writable(Conn &c, uint32_t index) {
  int err = 0;
  socklen_t len = sizeof err;
  getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) {
    fail(c, index, false);
    return;
  }
  const std::string &request = requests_[c.server * options_.rooms + c.room];
  if (::write(c.fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    fail(c, index, false);
    return;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = index;
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
  c.state = Conn::State::handshaking;
}

void ClientPool::on_readable(Conn &c, uint32_t index) {
  char *buf = read_buf_.data();
  const size_t have = c.pending.size();
  std::memcpy(buf, c.pending.data(), have);
  const ssize_t n = ::read(c.fd, buf + have, read_buf_.size() - have);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
    return;
  }
  if (n <= 0) {
    if (c.churn && c.state == Conn::State::closing) {
      finish_churn(c, index, true); // the server closed after our close frame
    } else {
      fail(c, index, true);
    }
    return;
  }
  counters_.wire_bytes += static_cast<uint64_t>(n);
  const uint64_t now = monotonic_ns();
  size_t total = have + static_cast<size_t>(n);
  size_t used = 0;
  if (c.state == Conn::State::handshaking) {
    std::string_view head(buf, total);
    const size_t end = head.find("\r\n\r\n");
    if (end == std::string_view::npos) {
      if (total > 16384) {
        fail(c, index, false);
      } else {
        c.pending.assign(buf, total);
      }
      return;
    }
    if (!head.starts_with("HTTP/1.1 101")) {
      fail(c, index, false);
      return;
    }
    --in_flight_;
    used = end + 4;
    // The sidecar answers in lower case; an agreement names the extension in its answer.
    c.deflate = options_.deflate &&
                head.substr(0, end).find("permessage-deflate") != std::string_view::npos;
    if (c.churn) {
      // A churn client leaves at once: a masked close 1000, then wait for the server's close.
      const char code[2] = {0x03, static_cast<char>(0xe8)};
      send_masked(c, 0x8, code, 2);
      c.state = Conn::State::closing;
      c.deadline_ns = now + kChurnCloseWaitNs;
      c.pending.clear();
      return;
    }
    c.state = Conn::State::open;
    ++open_;
    ++counters_.opened;
    counters_.deflate_agreed += c.deflate ? 1 : 0;
  }
  if (c.state == Conn::State::closing) {
    c.pending.clear(); // a churn client ignores everything until the server closes
    return;
  }
  used += parse_frames(c, index, buf + used, total - used, now);
  if (c.fd < 0) {
    return; // closed while parsing
  }
  if (total - used > kMaxPending) {
    fail(c, index, false);
    return;
  }
  c.pending.assign(buf + used, total - used);
}

size_t ClientPool::parse_frames(Conn &c, uint32_t index, char *data, size_t len, uint64_t now) {
  size_t off = 0;
  while (len - off >= 2) {
    const auto *b = reinterpret_cast<const uint8_t *>(data + off);
    const uint8_t opcode = b[0] & 0x0f;
    const bool rsv1 = (b[0] & 0x40) != 0;
    const bool masked = (b[1] & 0x80) != 0;
    uint64_t plen = b[1] & 0x7f;
    size_t hdr = 2;
    if (plen == 126) {
      if (len - off < 4) {
        break;
      }
      plen = (uint64_t{b[2]} << 8) | b[3];
      hdr = 4;
    } else if (plen == 127) {
      if (len - off < 10) {
        break;
      }
      plen = 0;
      for (int i = 0; i < 8; ++i) {
        plen = (plen << 8) | b[2 + i];
      }
      hdr = 10;
    }
    if (masked) {
      hdr += 4;
    }
    if (plen > kMaxPending) {
      fail(c, index, false);
      return off;
    }
    if (len - off < hdr + plen) {
      break;
    }
    const char *payload = data + off + hdr;
    size_t n = static_cast<size_t>(plen);
    off += hdr + n;
    if (rsv1 && (opcode == 0x1 || opcode == 0x2)) {
      std::string_view message;
      if (!c.deflate || !inflate(payload, n, message)) {
        ++counters_.inflate_errors;
        continue;
      }
      ++counters_.compressed_frames;
      payload = message.data();
      n = message.size();
    }
    switch (opcode) {
    case 0x1:
    case 0x2:
      if (masked) {
        ++counters_.foreign; // servers never mask; this is not bench traffic
      } else if (envelopes_) {
        on_sidecar_v1(c, payload, n, now);
      } else {
        on_payload(c, payload, n, now);
      }
      break;
    case 0x8:
      fail(c, index, true);
      return off;
    case 0x9:
      ++counters_.pings;
      send_masked(c, 0xA, payload, n);
      break;
    default:
      ++counters_.foreign;
      break;
    }
  }
  return off;
}

void ClientPool::on_sidecar_v1(Conn &c, const char *p, size_t n, uint64_t now_ns) {
  // Envelopes and welcomes have their keys in a fixed order (the sidecar builds them so); a
  // search for each key is enough here and keeps this side free of a JSON library.
  const std::string_view text(p, n);
  if (text.starts_with(R"({"type":"message")")) {
    const size_t e = text.find(R"(,"epoch":")");
    const size_t o = text.find(R"(,"offset":)");
    const size_t d = text.find(R"(,"data":)");
    if (e == std::string_view::npos || o == std::string_view::npos || d == std::string_view::npos) {
      ++counters_.foreign;
      return;
    }
    const size_t e_end = text.find('"', e + 10);
    const std::string_view epoch = text.substr(e + 10, e_end - (e + 10));
    std::string &room_epoch = room_epoch_[c.room];
    if (room_epoch.empty()) {
      room_epoch.assign(epoch);
    } else if (epoch != room_epoch) {
      ++counters_.epoch_changes;
    }
    const char *q = p + o + 10;
    uint64_t offset = 0;
    if (!parse_u64(q, p + n, offset)) {
      ++counters_.foreign;
      return;
    }
    if (c.pos.has_offset && offset != c.pos.offset + 1) {
      ++counters_.offset_skips;
    }
    c.pos.offset = offset;
    c.pos.has_offset = true;
    on_payload(c, p + d + 8, n - d - 8 - 1, now_ns); // without the envelope's closing brace
    return;
  }
  if (text.starts_with(R"({"type":"connected")")) {
    ++counters_.welcomes;
    c.pos.welcomed = true;
    c.pos.recovered = text.find(R"("recovered":true)") != std::string_view::npos;
    if (const size_t o = text.find(R"("offset":)");
        o != std::string_view::npos && !c.pos.has_offset) {
      const char *q = p + o + 9;
      c.pos.has_offset = parse_u64(q, p + n, c.pos.offset);
    }
    return;
  }
  if (text.starts_with(R"({"type":"resync")")) {
    ++counters_.resyncs;
  }
  ++counters_.foreign;
}

void ClientPool::on_payload(Conn &c, const char *p, size_t n, uint64_t now_ns) {
  // Payload form, written by the publisher: {"seq":N,"room":"rI","t":T,"pad":"..."} or
  // {"seq":N,"room":"rI","t":T,<an event's other fields>}
  const char *start = p;
  const char *end = p + n;
  uint64_t seq = 0;
  uint64_t room = 0;
  uint64_t t = 0;
  if (!expect(p, end, "{\"seq\":") || !parse_u64(p, end, seq) || !expect(p, end, ",\"room\":\"r") ||
      !parse_u64(p, end, room) || !expect(p, end, "\",\"t\":") || !parse_u64(p, end, t)) {
    ++counters_.foreign;
    return;
  }
  if (room != c.room) {
    ++counters_.misrouted;
    return;
  }
  counters_.payload_bytes += static_cast<uint64_t>(end - start);
  c.seq.on_receive(seq);
  latency_.record(now_ns > t ? now_ns - t : 0);
  if (++c.pos.since_welcome == live_target_ && c.pos.welcomed) {
    c.pos.live_ns = now_ns;
  }
}

void ClientPool::churn_tick(uint64_t now) {
  if (churn_rate_ <= 0) {
    return;
  }
  const auto due =
      static_cast<uint64_t>(churn_rate_ * static_cast<double>(now - churn_start_ns_) / 1e9);
  while (churn_started_ < due && !free_churn_.empty()) {
    const uint32_t slot = free_churn_.back();
    free_churn_.pop_back();
    ++churn_started_;
    start_connect(slot);
  }
  // If every slot is busy the churn falls behind; the report shows the achieved rate.
  for (uint32_t i = options_.connections; i < conns_.size(); ++i) {
    Conn &c = conns_[i];
    if (c.state == Conn::State::closing && c.deadline_ns < now) {
      finish_churn(c, i, false);
    }
  }
}

void ClientPool::set_churn(double per_second) {
  churn_rate_ = per_second;
  churn_start_ns_ = monotonic_ns();
  churn_started_ = 0;
}

void ClientPool::poll(int timeout_ms) {
  while (in_flight_ < options_.max_in_flight) {
    if (!retry_.empty()) {
      const uint32_t i = retry_.back();
      retry_.pop_back();
      start_connect(i);
    } else if (next_to_connect_ < options_.connections) {
      start_connect(next_to_connect_++);
    } else {
      break;
    }
  }
  churn_tick(monotonic_ns());
  epoll_event events[1024];
  int n = 0;
  if (options_.spin) {
    const uint64_t until = monotonic_ns() + static_cast<uint64_t>(timeout_ms) * 1'000'000;
    while ((n = epoll_wait(epoll_fd_, events, 1024, 0)) == 0 && monotonic_ns() < until) {
    }
  } else {
    n = epoll_wait(epoll_fd_, events, 1024, timeout_ms);
  }
  const uint64_t busy_from = monotonic_ns();
  for (int i = 0; i < n; ++i) {
    const auto index = static_cast<uint32_t>(events[i].data.u64);
    Conn &c = conns_[index];
    if (c.fd < 0) {
      continue;
    }
    if (c.state == Conn::State::connecting) {
      on_writable(c, index);
    } else {
      on_readable(c, index);
    }
  }
  busy_ns_ += monotonic_ns() - busy_from;
}

DeliveryTotals ClientPool::totals(const std::vector<uint64_t> &published_per_room) const {
  DeliveryTotals t;
  for (uint32_t i = 0; i < options_.connections; ++i) {
    t.add(conns_[i].seq, published_per_room[conns_[i].room]);
  }
  return t;
}

void ClientPool::close_all() {
  for (auto &c : conns_) {
    if (c.fd >= 0) {
      ::close(c.fd);
      c.fd = -1;
      c.state = Conn::State::idle;
    }
  }
}

} // namespace sidecar::bench
