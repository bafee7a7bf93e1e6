"""Slow consumers: a client that stops reading is closed once its queued bytes pass
limits.max_outbound_bytes, with limits.slow_consumer_close_code, and it never slows delivery to
anyone else in its room nor grows the sidecar's memory without bound.

The publisher runs in its own process and paces its PUBLISHes, so what the fast client measures
is the sidecar's delivery latency, not Redis's queueing or this test's own Python.
"""

from __future__ import annotations

import json
import struct
import threading
import time

from harness import OP_CLOSE, OP_TEXT, encode_frame, wait_until
from resilience_util import RSS_MEANINGFUL, FrameReader, RssSampler, active_connections, ghost_upgrade, \
    log_events, payload_stamp, percentile, start_paced_publisher, status_summary

ROOM = "org:acme"
PAYLOAD = 64 * 1024
P99_LIMIT_MS = 50.0
# The bound: baseline + 24 MiB, whatever is published (50 MiB). One slow client may hold its 4 MiB
# budget; the rest is allocator and hiredis slack. An unbounded queue would hold ~45 MiB.
RSS_HEADROOM_KIB = 24 * 1024
SLOW_RCVBUF = 4096
DEFAULT_BUDGET = 4 * 1024 * 1024  # limits.max_outbound_bytes when the config does not set it
# One relayed payload as it sits in a queue: a 64 KiB payload needs the 8-byte length form.
FRAME_BYTES = PAYLOAD + 10


class FastReader(threading.Thread):
    """Reads every paced payload on a raw socket and records its latency and sequence."""

    def __init__(self, reader: FrameReader, count: int, timeout: float):
        super().__init__(daemon=True)
        self.reader, self.count, self.timeout = reader, count, timeout
        self.latencies_ms: list[float] = []
        self.seqs: list[int] = []
        self.error: BaseException | None = None

    def run(self):
        deadline = time.monotonic() + self.timeout
        try:
            for _ in range(self.count):
                f = self.reader.message(max(deadline - time.monotonic(), 0.001))
                now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                if f is None or f[0] != OP_TEXT:
                    raise AssertionError(f"fast client: expected a payload, got {f and f[0]}")
                seq, sent = payload_stamp(f[1])
                if len(f[1]) != PAYLOAD:
                    raise AssertionError(f"payload {seq} has {len(f[1])} bytes")
                self.seqs.append(seq)
                self.latencies_ms.append((now - sent) / 1e6)
        except BaseException as e:  # reported by the test thread
            self.error = e


def run_slow_consumer_scenario(sc, redis, count: int, interval_s: float, expect_code: int,
                               budget: int = DEFAULT_BUDGET):
    slow, slow_rest = ghost_upgrade(sc.port, "/ws/acme", rcvbuf=SLOW_RCVBUF)
    fast_sock, fast_rest = ghost_upgrade(sc.port, "/ws/acme")
    fast = FrameReader(fast_sock, fast_rest)
    try:
        assert json.loads(fast.message()[1])["type"] == "connected"
        wait_until(lambda: redis.numsub(ROOM) == 1, 5, "the room subscribed")
        assert active_connections(sc) == 2
        baseline = sc.rss_kib()

        reader = FastReader(fast, count, timeout=count * interval_s + 30)
        reader.start()
        with RssSampler(sc) as rss:
            pub = start_paced_publisher(redis.port, ROOM, count, PAYLOAD, interval_s)
            try:
                out, err = pub.communicate(timeout=count * interval_s + 30)
            finally:
                if pub.poll() is None:
                    pub.kill()
                    pub.wait(5)
            assert pub.returncode == 0, err.decode(errors="replace")
            reader.join(30)
        assert not reader.is_alive(), "the fast client did not get every message in time"
        if reader.error:
            raise reader.error

        # The fast client got everything, in order, quickly.
        assert reader.seqs == list(range(count))
        p99 = percentile(reader.latencies_ms, 99)
        p50 = percentile(reader.latencies_ms, 50)
        assert p99 < P99_LIMIT_MS, f"p99 {p99:.1f} ms (p50 {p50:.1f} ms) with a slow peer"

        # Memory stayed bounded although ~count*64 KiB was published.
        grown = rss.peak_kib - baseline
        if RSS_MEANINGFUL:
            assert grown < RSS_HEADROOM_KIB, f"RSS grew {grown} KiB (baseline {baseline} KiB)"

        # The slow client was cut off, and said so in the log and the status counters.
        wait_until(lambda: status_summary(sc)["slowConsumerCloses"] >= 1, 5,
                   "slowConsumerCloses to count the slow client")
        closes = log_events(sc, "slow_consumer")
        assert len(closes) == 1, closes
        # The cut-off is the budget: the queue held at most `budget` bytes (a frame that would
        # pass it is never queued) and was full to within one frame of it, so the close came
        # when the next frame did not fit, not sooner and not later. The log line reports the
        # queue as it was at the close.
        queued = int(closes[0]["queued_bytes"])
        assert budget - FRAME_BYTES < queued <= budget, \
            f"closed with {queued} bytes queued; budget {budget}, frames of {FRAME_BYTES}"
        assert active_connections(sc) == 1

        # When it finally reads, it finds an in-order prefix of the messages, then the close
        # frame with the configured code.
        slow_reader = FrameReader(slow, slow_rest)
        assert json.loads(slow_reader.message()[1])["type"] == "connected"
        seqs = []
        for _ in range(count + 1):
            f = slow_reader.message(10)
            assert f is not None, f"TCP ended before a close frame, after {len(seqs)} messages"
            if f[0] == OP_CLOSE:
                assert struct.unpack("!H", f[1][:2])[0] == expect_code, f[1]
                break
            seqs.append(payload_stamp(f[1])[0])
        else:
            raise AssertionError("no close frame after every message")
        assert seqs == list(range(len(seqs))), "the slow client's messages are not a prefix"
        assert len(seqs) < count, "the slow client was sent everything: it was not cut off"
        slow.sendall(encode_frame(OP_CLOSE, struct.pack("!H", expect_code)))

        # The room is still served.
        assert redis.publish(ROOM, "after") == 1
        assert fast.message(5) == (OP_TEXT, b"after")
        return p50, p99, grown, len(seqs)
    finally:
        slow.close()
        fast_sock.close()


def test_slow_consumer_is_closed_with_1008_and_the_fast_peer_keeps_p99_under_50ms(
        sidecar_factory, redis):
    # 800 x 64 KiB = 50 MiB, one every 4 ms. A long close timeout lets the slow client find its
    # close frame however late it reads.
    sc = sidecar_factory(extra_yaml={"websocket": {"close_timeout_ms": 60000}})
    p50, p99, grown, got = run_slow_consumer_scenario(sc, redis, count=800, interval_s=0.004,
                                                      expect_code=1008)
    print(f"p50={p50:.2f}ms p99={p99:.2f}ms rss_growth={grown}KiB slow_got={got}")


def test_slow_consumer_close_code_1013_is_used_when_configured(sidecar_factory, redis):
    sc = sidecar_factory(extra_yaml={"websocket": {"close_timeout_ms": 60000},
                                     "limits": {"slow_consumer_close_code": 1013}})
    run_slow_consumer_scenario(sc, redis, count=300, interval_s=0.004, expect_code=1013)


def test_smaller_budget_cuts_off_sooner(sidecar_factory, redis):
    sc = sidecar_factory(extra_yaml={"websocket": {"close_timeout_ms": 60000},
                                     "limits": {"max_outbound_bytes": "256KiB"}})
    # One every 20 ms: 256 KiB is four payloads, so the fast client may fall 80 ms behind (a
    # loaded machine) before it too would be over budget.
    _, _, _, got = run_slow_consumer_scenario(sc, redis, count=200, interval_s=0.02,
                                              expect_code=1008, budget=256 * 1024)
    # 256 KiB of queue plus what the kernel buffers hold: far fewer than the 200 published.
    assert got < 150, got


def test_client_that_pauses_within_its_budget_is_not_closed(sidecar_factory, redis):
    sc = sidecar_factory()
    sock, rest = ghost_upgrade(sc.port, "/ws/acme", rcvbuf=SLOW_RCVBUF)
    try:
        wait_until(lambda: redis.numsub(ROOM) == 1, 5, "the room subscribed")
        # 1 MiB while it does not read: under the default 4 MiB budget.
        payload = b"y" * (64 * 1024)
        for _ in range(16):
            assert redis.publish(ROOM, payload) == 1
        wait_until(lambda: status_summary(sc)["totalMessages"] >= 16, 5, "16 messages relayed")
        assert status_summary(sc)["slowConsumerCloses"] == 0
        reader = FrameReader(sock, rest)
        assert json.loads(reader.message()[1])["type"] == "connected"
        for i in range(16):
            f = reader.message(5)
            assert f == (OP_TEXT, payload), f"message {i}: {f and (f[0], len(f[1]))}"
        assert active_connections(sc) == 1
    finally:
        sock.close()
