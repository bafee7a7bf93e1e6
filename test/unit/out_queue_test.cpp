#include "out_queue.h"

#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <string>

using namespace sidecar;

TEST_CASE("queued frames come out in order and are released once written") {
  OutQueue q;
  FrameRef a(SharedFrame::make(Opcode::text, "aaaa"));
  FrameRef b(SharedFrame::make(Opcode::text, "bb"));
  for (int i = 0; i < 100; ++i)
    q.push(i % 2 ? b.get() : a.get()); // grows the ring
  CHECK(a.get()->refs() == 51);
  CHECK(q.bytes() == 50 * 6 + 50 * 4);
  uv_buf_t bufs[8];
  unsigned n = q.gather(bufs, 8);
  CHECK(n == 8);
  CHECK(std::string(bufs[0].base + 2, 4) == "aaaa");
  q.consume(3); // part of the first frame
  n = q.gather(bufs, 8);
  CHECK(bufs[0].len == 3);
  q.consume(3 + 4); // the rest of a, all of b
  CHECK(a.get()->refs() == 50);
  CHECK(b.get()->refs() == 50);
  q.clear();
  CHECK(q.empty());
  CHECK(q.bytes() == 0);
  CHECK(a.get()->refs() == 1);
}

TEST_CASE("truncate keeps the frames a write in flight still uses") {
  OutQueue q;
  FrameRef a(SharedFrame::make(Opcode::binary, std::string(10, 'x')));
  for (int i = 0; i < 5; ++i)
    q.push(a.get());
  q.consume(4);
  q.truncate(2);
  CHECK(q.frames() == 2);
  CHECK(q.bytes() == 2 * 12 - 4);
  CHECK(a.get()->refs() == 3);
}

TEST_CASE("one frame is shared, not copied, by every queue") {
  FrameRef f(SharedFrame::make(Opcode::text, "hello"));
  OutQueue q1, q2;
  q1.push(f.get());
  q2.push(f.get());
  uv_buf_t b1, b2;
  q1.gather(&b1, 1);
  q2.gather(&b2, 1);
  CHECK(b1.base == b2.base);
}

TEST_CASE("an idle queue of up to two frames stays off the heap; a drained ring goes back inside") {
  OutQueue q;
  FrameRef f(SharedFrame::make(Opcode::text, "hi"));
  q.push(f.get());
  q.push(f.get()); // an upgrade: the 101 answer and the welcome
  CHECK(!q.on_heap());
  q.consume(8);
  CHECK(q.empty());
  q.push(f.get()); // a ping
  CHECK(!q.on_heap());
  q.consume(4);
  for (int i = 0; i < 5; ++i)
    q.push(f.get());
  CHECK(q.on_heap());
  q.shrink(); // not empty: keeps everything
  CHECK(q.frames() == 5);
  q.consume(5 * 4);
  CHECK(q.on_heap()); // a small ring is kept across turns: no allocation per message
  q.shrink();
  CHECK(!q.on_heap());
  CHECK(f.get()->refs() == 1);
  q.push(f.get());
  uv_buf_t b;
  CHECK(q.gather(&b, 1) == 1);
  CHECK(b.len == 4);
}

TEST_CASE("the ring wraps around inside and on the heap, in order") {
  OutQueue q;
  FrameRef a(SharedFrame::make(Opcode::text, "a"));
  FrameRef b(SharedFrame::make(Opcode::text, "bb"));
  q.push(a.get());
  q.push(b.get());
  q.consume(3);    // a gone; b at the second inline slot
  q.push(a.get()); // wraps to the first inline slot
  q.push(b.get()); // moves to the heap, in order b, a, b
  uv_buf_t bufs[4];
  REQUIRE(q.gather(bufs, 4) == 3);
  CHECK(bufs[0].len == 4);
  CHECK(bufs[1].len == 3);
  CHECK(bufs[2].len == 4);
}

namespace {

// A connected pair of sockets, one end opened as a libuv stream, so try_write writes for real.
struct StreamPair {
  uv_loop_t loop{};
  uv_pipe_t pipe{};
  int peer = -1;
  StreamPair() {
    int fds[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) == 0);
    peer = fds[1];
    REQUIRE(uv_loop_init(&loop) == 0);
    REQUIRE(uv_pipe_init(&loop, &pipe, 0) == 0);
    REQUIRE(uv_pipe_open(&pipe, fds[0]) == 0);
  }
  ~StreamPair() {
    uv_close(reinterpret_cast<uv_handle_t *>(&pipe), nullptr);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    if (peer >= 0)
      ::close(peer);
  }
  uv_stream_t *stream() { return reinterpret_cast<uv_stream_t *>(&pipe); }
  std::string read_all() {
    std::string out;
    char buf[65536];
    for (ssize_t n; (n = ::read(peer, buf, sizeof buf)) > 0;)
      out.append(buf, static_cast<size_t>(n));
    return out;
  }
};

} // namespace

TEST_CASE("try_write sends one frame, or several in order, from where the last write stopped") {
  StreamPair s;
  OutQueue q;
  FrameRef a(SharedFrame::make(Opcode::text, "aaaa"));
  FrameRef b(SharedFrame::make(Opcode::text, "bb"));
  CHECK(q.try_write(s.stream(), 64) == 0); // nothing queued

  q.push(a.get()); // one frame: write(2)
  CHECK(q.try_write(s.stream(), 64) == 6);
  q.consume(6);
  CHECK(s.read_all() == std::string("\x81\x04"
                                    "aaaa"));

  q.push(a.get()); // several: writev(2), the first frame already half written
  q.push(b.get());
  q.push(a.get());
  q.consume(3);
  CHECK(q.try_write(s.stream(), 64) == 3 + 4 + 6);
  q.consume(13);
  CHECK(s.read_all() == std::string("aaa\x81\x02"
                                    "bb\x81\x04"
                                    "aaaa"));

  q.push(b.get()); // max_bufs bounds what one call sends
  q.push(b.get());
  CHECK(q.try_write(s.stream(), 1) == 4);
  q.consume(4);
  CHECK(q.frames() == 1);
  q.clear();
}

TEST_CASE("try_write reports a full socket as UV_EAGAIN and a closed peer as an error") {
  StreamPair s;
  OutQueue q;
  FrameRef big(SharedFrame::make(Opcode::binary, std::string(1 << 20, 'x')));
  q.push(big.get());
  ssize_t total = 0;
  for (int i = 0; i < 64; ++i) {
    ssize_t w = q.try_write(s.stream(), 64);
    if (w == UV_EAGAIN)
      break;
    REQUIRE(w > 0);
    total += w;
    q.consume(static_cast<size_t>(w));
    if (q.empty())
      q.push(big.get());
  }
  CHECK(q.try_write(s.stream(), 64) == UV_EAGAIN);
  CHECK(total > 0);
  std::signal(SIGPIPE, SIG_IGN); // as the sidecar's main() does: EPIPE instead of a signal
  ::close(s.peer);
  s.peer = -1;
  ssize_t w = q.try_write(s.stream(), 64);
  CHECK((w == UV_EPIPE || w == UV_ECONNRESET));
  q.clear();
}
