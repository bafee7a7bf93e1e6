// The load generator's client side: many non-blocking WebSocket clients on one epoll loop, their
// handshakes, frame parsing, delivery accounting, and optional connect/disconnect churn.
// Single-threaded: only the thread that calls poll() touches a ClientPool.
#pragma once

#include "accounting.h"

#include <cstdint>
#include <string>
#include <vector>

namespace sidecar::bench {

// One server the clients connect to (one URL of --url).
struct WsServer {
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  std::string path_template = "/ws/{room}"; // "{room}" is replaced by "r<index>"
};

struct ClientPoolOptions {
  // Client i joins room i % rooms on server (i / rooms) % servers.size(): each room's members
  // are dealt round-robin over the servers, so with rooms of at least that many clients every
  // room has members on every server (and fan-out crosses them, as behind a load balancer).
  std::vector<WsServer> servers{WsServer{}};
  uint32_t connections = 100;
  uint32_t rooms = 10;
  uint32_t max_in_flight = 512; // concurrent handshakes, so the server's backlog never overflows
  bool bind_sources = true;     // spread source addresses over 127.0.0.2..127.0.0.9
  // Spin on epoll instead of sleeping in it (--spin). Off by default: it steals the core that
  // Redis shares with the generator, and on this machine it did not raise the generator's cap.
  bool spin = false;
  // Sent as Sec-WebSocket-Protocol when not empty. "sidecar.v1" also switches the receive side
  // to envelopes: {"type":"message",...,"epoch":"E","offset":N,"data":<bench payload>}, whose
  // offsets are checked to be consecutive per client, and welcomes that carry positions.
  std::string subprotocol;
  // Offer permessage-deflate as browsers do ("permessage-deflate; client_max_window_bits") and
  // inflate what arrives with RSV1. The server must answer server_no_context_takeover (the
  // sidecar always does): every message is inflated from an empty window.
  bool deflate = false;
};

// What one steady client knows of its channel's position (sidecar.v1 only) and of its resume.
struct ClientPosition {
  bool welcomed = false;      // a {"type":"connected"} arrived on the current connection
  bool recovered = false;     // ... and it said "recovered":true
  bool has_offset = false;    // offset below is known (from a welcome or an envelope)
  uint64_t offset = 0;        // the last position seen, kept across reconnects
  uint32_t since_welcome = 0; // bench payloads received on the current connection
  uint64_t live_ns = 0;       // when since_welcome reached the live target (0: not yet)
};

struct ClientCounters {
  uint64_t opened = 0;         // handshakes answered with 101
  uint64_t connect_errors = 0; // connect or handshake failures (retried up to 3 times)
  uint64_t server_closed = 0;  // steady clients that the server closed or dropped
  uint64_t foreign = 0;        // frames that were not bench payloads (welcome, pong, ...)
  uint64_t misrouted = 0;      // bench payloads for a room this client is not in
  uint64_t pings = 0;
  uint64_t churn_done = 0; // churn clients that connected, upgraded and closed cleanly
  uint64_t churn_failed = 0;
  uint64_t welcomes = 0;      // {"type":"connected"} frames (sidecar.v1 only)
  uint64_t resyncs = 0;       // {"type":"resync"} frames (sidecar.v1 only)
  uint64_t offset_skips = 0;  // envelopes whose offset is not the client's last one + 1
  uint64_t epoch_changes = 0; // envelopes whose epoch differs from the room's first one seen
  // Every byte read from steady and churn sockets, handshake answers included: what the
  // server put on the wire (TCP/IP headers aside).
  uint64_t wire_bytes = 0;
  uint64_t payload_bytes = 0;     // bench payloads' bytes after inflating, as published
  uint64_t deflate_agreed = 0;    // handshakes whose answer agreed permessage-deflate
  uint64_t compressed_frames = 0; // frames with RSV1, inflated
  uint64_t inflate_errors = 0;    // compressed frames that did not inflate
};

class ClientPool {
public:
  explicit ClientPool(ClientPoolOptions options);
  ~ClientPool();
  ClientPool(const ClientPool &) = delete;
  ClientPool &operator=(const ClientPool &) = delete;

  bool init(std::string &error);
  // Runs the loop for at most timeout_ms, starting connects while fewer than max_in_flight
  // handshakes are pending, and churn clients at the configured rate.
  void poll(int timeout_ms);
  bool all_open() const { return open_ == options_.connections; }
  uint32_t open_count() const { return open_; }
  bool connect_failed() const { return gave_up_ > 0; }

  // Churn: short-lived clients opened and closed at `per_second`, 0 to stop. They join rooms
  // like the others, but nothing they receive is accounted.
  void set_churn(double per_second);

  // Totals for all steady clients given how many messages each room has been sent.
  DeliveryTotals totals(const std::vector<uint64_t> &published_per_room) const;
  LatencyHistogram &latency() { return latency_; }
  const ClientCounters &counters() const { return counters_; }
  // Time spent handling events (not waiting for them): with spinning on, this rather than CPU
  // time shows whether the generator itself was the bottleneck.
  double busy_seconds() const { return static_cast<double>(busy_ns_) / 1e9; }
  uint32_t rooms() const { return options_.rooms; }
  uint32_t connections() const { return options_.connections; }
  uint32_t room_of(uint32_t client) const { return client % options_.rooms; }
  void close_all();

  // For the resume storm. The query string (with its '?') appended to a room's upgrade path
  // from now on; "" for none.
  void set_room_query(uint32_t room, const std::string &query);
  // Closes every steady client and connects them all again from the next poll(), at most
  // max_in_flight handshakes at a time. Sequence trackers and positions are kept, so what a
  // reconnected client receives is checked against what it saw before.
  void reconnect_all(uint32_t max_in_flight);
  // A client counts as live once it has a welcome and `messages` bench payloads on its current
  // connection; 0 turns this off.
  void set_live_target(uint32_t messages) { live_target_ = messages; }
  const ClientPosition &position(uint32_t client) const;
  const SeqTracker &tracker(uint32_t client) const;
  // The epoch of a room's first envelope; "" before one arrived.
  const std::string &room_epoch(uint32_t room) const { return room_epoch_[room]; }

private:
  struct Conn;
  void start_connect(uint32_t index);
  void on_event(uint32_t index, uint32_t events);
  void on_writable(Conn &c, uint32_t index);
  void on_readable(Conn &c, uint32_t index);
  size_t parse_frames(Conn &c, uint32_t index, char *data, size_t len, uint64_t now_ns);
  void on_payload(Conn &c, const char *p, size_t n, uint64_t now_ns);
  void on_sidecar_v1(Conn &c, const char *p, size_t n, uint64_t now_ns);
  std::string build_request(uint32_t server, uint32_t room, const std::string &query) const;
  // The message of one RSV1 frame, inflated into inflated_; false when it does not inflate.
  bool inflate(const char *p, size_t n, std::string_view &out);
  void fail(Conn &c, uint32_t index, bool server_side);
  void finish_churn(Conn &c, uint32_t index, bool ok);
  void send_masked(Conn &c, uint8_t opcode, const char *payload, size_t n);
  void churn_tick(uint64_t now_ns);

  ClientPoolOptions options_;
  int epoll_fd_ = -1;
  std::vector<Conn> conns_; // steady clients first, then churn slots
  std::vector<uint32_t> free_churn_;
  uint32_t next_to_connect_ = 0;
  uint32_t in_flight_ = 0;
  uint32_t open_ = 0;
  uint32_t gave_up_ = 0;
  std::vector<uint32_t> retry_;
  uint32_t source_ = 0;
  uint64_t busy_ns_ = 0;
  double churn_rate_ = 0;
  uint64_t churn_start_ns_ = 0;
  uint64_t churn_started_ = 0;
  LatencyHistogram latency_;
  ClientCounters counters_;
  std::vector<char> read_buf_;
  // The upgrade request of each server and room, at [server * rooms + room], built once.
  std::vector<std::string> requests_;
  std::vector<std::string> room_epoch_;
  uint32_t live_target_ = 0;
  bool envelopes_ = false;
  void *inflater_ = nullptr; // a z_stream, raw inflate (zlib.h stays out of this header)
  std::vector<char> inflated_;
};

uint64_t monotonic_ns();

} // namespace sidecar::bench
