"""Bad input never harms anyone: clients that vanish with RST mid-handshake or mid-frame, clients
that send random bytes, and ping floods (WebSocket pings, JSON pings, pings never read) leave the
sidecar serving: afterwards a fresh client connects and receives publishes, the clients that were
there all along never noticed, and RSS is back near its baseline.

Random input comes from a seeded generator; the seed is printed so that a failure can be replayed
(SIDECAR_CHAOS_SEED=<seed>).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import struct
import threading
import time

from harness import SLOW, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, connect_ws, encode_frame, \
    read_http_head, run, upgrade_request, wait_until
from resilience_util import RSS_MEANINGFUL, FrameReader, RssSampler, active_connections, ghost_upgrade, \
    raw_socket, read_until_closed, reset_close, split_frames

ROOM = "org:acme"
# After the chaos, RSS may exceed the baseline by at most this much: freed session memory that the
# allocator keeps for reuse, not a leak (a leak of 200 sessions' buffers would be far larger).
RSS_SLACK_KIB = 16 * 1024


def chaos_rng() -> random.Random:
    seed = int(os.environ.get("SIDECAR_CHAOS_SEED", random.randrange(1 << 30)))
    print(f"SIDECAR_CHAOS_SEED={seed}")
    return random.Random(seed)


def warm_baseline(sc, redis) -> int:
    """RSS after a handful of ordinary sessions came and went, so that the allocator's first
    growth is not counted as harm."""
    async def warm():
        conns = [await connect_ws(sc.ws_url("/ws/warm")) for _ in range(10)]
        for c in conns:
            await c.close()
    run(warm(), 20)
    wait_until(lambda: active_connections(sc) == 0, 5, "warm-up sessions gone")
    return sc.rss_kib()


def assert_still_serving(sc, redis, path="/ws/acme", expect_active: int = 0):
    """Everything a user would check afterwards: the chaos is gone from the session table, a new
    client connects and gets a publish, and /health answers."""
    wait_until(lambda: active_connections(sc) == expect_active, 10,
               f"activeConnections back to {expect_active}")

    async def fresh():
        c = await connect_ws(sc.ws_url(path))
        await asyncio.to_thread(wait_until, lambda: redis.numsub(ROOM) >= 1, 5, "subscribed")
        assert redis.publish(ROOM, "after the storm") >= 1
        assert await asyncio.wait_for(c.recv(), 5) == "after the storm"
        await c.close()

    run(fresh(), 20)
    status, _, _ = sc.http("GET", "/health")
    assert status == 200
    assert sc.running()


def test_200_clients_resetting_mid_handshake_and_mid_frame_harm_nobody(sidecar_factory, redis):
    sc = sidecar_factory()
    rng = chaos_rng()
    baseline = warm_baseline(sc, redis)

    async def main():
        observer = await connect_ws(sc.ws_url("/ws/acme"))
        await asyncio.to_thread(wait_until, lambda: redis.numsub(ROOM) == 1, 5, "subscribed")

        def storm():
            for i in range(100):
                # Mid-handshake: a prefix of the request, then RST.
                req = upgrade_request(f"/ws/acme{i % 7}")
                s = raw_socket(sc.port)
                s.sendall(req[:rng.randrange(1, len(req))])
                reset_close(s)
            for i in range(100):
                # Mid-frame: upgraded, then part of a masked frame (header, some payload), RST.
                s, _ = ghost_upgrade(sc.port, f"/ws/acme{i % 7}")
                frame = encode_frame(OP_TEXT, b"z" * rng.choice([10, 200, 70000]))
                s.sendall(frame[:rng.randrange(1, len(frame))])
                reset_close(s)

        await asyncio.to_thread(storm)
        assert redis.publish(ROOM, "during") == 1
        assert await asyncio.wait_for(observer.recv(), 5) == "during"
        await asyncio.to_thread(wait_until, lambda: active_connections(sc) == 1, 10,
                                "only the observer left")
        await asyncio.to_thread(wait_until, lambda: redis.pubsub_channels("org:acme?") == set(),
                                5, "the storm's rooms unsubscribed")
        await observer.close()

    run(main(), 60)
    assert_still_serving(sc, redis)
    grown = sc.rss_kib() - baseline
    if RSS_MEANINGFUL:
        assert grown < RSS_SLACK_KIB, f"RSS {grown} KiB above baseline {baseline} KiB"


# What the sidecar must answer to noise, where the noise itself decides it. None: the answer
# depends on more than these rules model (or on bytes not sent yet); only "no harm" is checked.
OPEN = "open"  # the input is an unfinished prefix: the sidecar must wait for more


def expected_http_answer(noise: bytes):
    """The HTTP status for ``noise`` sent instead of a request: llhttp refuses a request line
    that cannot start a method with 400 (handshake.cpp, RequestParser::feed). Noise that starts
    with a CR, LF or upper-case letter might still become a request line: not judged."""
    if noise[0] in b"\r\n" or 0x41 <= noise[0] <= 0x5A:
        return None
    return 400


def expected_ws_close(noise: bytes, max_message: int = 65536):
    """The close code for ``noise`` sent as a client's first frame bytes after the upgrade, or
    OPEN, or None. RFC 6455 5.2-5.5 as wslay and ws_protocol.cpp apply them: a control frame
    that is fragmented or longer than 125 bytes fails at its first two bytes; a frame with RSV
    bits, without a mask, with a reserved opcode, or continuing no message fails once its header
    (and a first payload byte, if it has payload) is in; a data frame announcing more than
    limits.max_message_bytes is 1009. Everything else depends on the payload: not judged."""
    if len(noise) < 2:
        return OPEN
    b0, b1 = noise[0], noise[1]
    fin, rsv, op = b0 >> 7, (b0 >> 4) & 7, b0 & 0x0F
    masked, n = b1 >> 7, b1 & 0x7F
    if op & 0x8 and (n > 125 or not fin):
        return 1002
    pos = 2
    if n in (126, 127):
        ext = 2 if n == 126 else 8
        if len(noise) < pos + ext:
            return OPEN
        n = int.from_bytes(noise[pos:pos + ext], "big")
        if (ext == 2 and n < 126) or (ext == 8 and (n < 1 << 16 or n >> 63)):
            return None  # non-minimal or oversized length: wslay versions differ
        pos += ext
    if masked:
        if len(noise) < pos + 4:
            return OPEN
        pos += 4
    if n > 0 and len(noise) == pos:
        return OPEN
    if rsv or not masked or op not in (0x1, 0x2, 0x8, 0x9, 0xA):
        return 1002  # op 0: a continuation with no message begun
    if op in (0x1, 0x2) and n > max_message:
        return 1009
    return None


def test_random_bytes_before_and_after_the_handshake_harm_nobody(sidecar_factory, redis):
    sc = sidecar_factory(extra_yaml={"websocket": {"close_timeout_ms": 500}})
    rng = chaos_rng()
    baseline = warm_baseline(sc, redis)

    def answer_to(s, before_upgrade: bool, rest: bytes, expected):
        """Reads what the sidecar answered to the noise on ``s`` and checks it against
        ``expected``; returns the outcome's name."""
        if expected == OPEN:
            try:
                read_until_closed(s, 0.3)
            except TimeoutError:
                return "left open (unfinished input)"
            raise AssertionError("the sidecar closed a connection whose input was unfinished")
        try:
            data, _ = read_until_closed(s, (0.3 if expected is None else 5) * SLOW)
        except TimeoutError:
            assert expected is None, f"no answer; expected {expected}"
            return "left open"
        if before_upgrade:
            if expected is None:
                return "closed"
            assert b"\r\n\r\n" in data, f"expected an HTTP {expected} answer, got {data[:200]!r}"
            status, headers, body = read_http_head(None, buf=data)
            assert status == expected, (status, data[:200])
            assert json.loads(body[:int(headers["content-length"])])["error"] == "BAD_REQUEST"
            return f"http {status}"
        codes = [p for op, p in split_frames(rest + data) if op == OP_CLOSE]
        code = struct.unpack("!H", codes[0][:2])[0] if codes and len(codes[0]) >= 2 else None
        if expected is None:
            return "closed"
        assert len(codes) == 1, f"expected one close frame with {expected}, got {codes}"
        assert code == expected, f"close code {code}, expected {expected}"
        return f"close {code}"

    async def main():
        observer = await connect_ws(sc.ws_url("/ws/acme"))

        def storm():
            outcomes = {}
            for i in range(100):
                noise = rng.randbytes(rng.randrange(1, 4096))
                before_upgrade = i % 2 == 0
                rest = b""
                if before_upgrade:
                    s = raw_socket(sc.port)
                    expected = expected_http_answer(noise)
                else:
                    s, rest = ghost_upgrade(sc.port, "/ws/acme")
                    expected = expected_ws_close(noise)
                try:
                    s.sendall(noise)
                    name = answer_to(s, before_upgrade, rest, expected)
                except (BrokenPipeError, ConnectionResetError):
                    # The sidecar may refuse before it has read all the noise (a reset then).
                    assert expected is not OPEN, "reset while the input was unfinished"
                    name = "reset while sending"
                except AssertionError as e:
                    raise AssertionError(f"noise #{i} ({len(noise)} bytes, starts "
                                         f"{noise[:12].hex()}): {e}") from None
                finally:
                    reset_close(s)
                outcomes[name] = outcomes.get(name, 0) + 1
            return outcomes

        outcomes = await asyncio.to_thread(storm)
        print("random-bytes outcomes:", outcomes)
        # Most noise is judged exactly (400 before the upgrade, 1002 or 1009 after it).
        judged = sum(v for k, v in outcomes.items() if k.startswith(("http ", "close ")))
        assert judged >= 70, outcomes
        assert redis.publish(ROOM, "during") == 1
        assert await asyncio.wait_for(observer.recv(), 5) == "during"
        await observer.close()

    run(main(), 120)
    assert_still_serving(sc, redis)
    grown = sc.rss_kib() - baseline
    if RSS_MEANINGFUL:
        assert grown < RSS_SLACK_KIB, f"RSS {grown} KiB above baseline {baseline} KiB"


def test_websocket_ping_flood_gets_every_pong_in_order(sidecar_factory, redis):
    sc = sidecar_factory()
    count = 5000
    sock, rest = ghost_upgrade(sc.port, "/ws/acme")
    reader = FrameReader(sock, rest, answer_pings=False)
    try:
        assert json.loads(reader.message()[1])["type"] == "connected"
        pings = b"".join(encode_frame(OP_PING, struct.pack("!I", i) + b"p" * 60)
                         for i in range(count))
        sender = threading.Thread(target=sock.sendall, args=(pings,), daemon=True)
        sender.start()
        for i in range(count):
            f = reader.frame(10)
            assert f is not None and f[0] == OP_PONG, f"pong {i}: {f}"
            # The whole application data of its ping, echoed (RFC 6455 5.5.3), in order.
            assert f[1] == struct.pack("!I", i) + b"p" * 60, f"pong {i}: {f[1]!r}"
        sender.join(10)
        assert active_connections(sc) == 1
    finally:
        sock.close()
    assert_still_serving(sc, redis)


def test_ping_flood_from_a_client_that_never_reads_is_bounded(sidecar_factory, redis):
    """Pongs queue up for a client that sends pings and reads nothing. That queue must be bounded
    like any other (the client is closed or stalled), not grow with the flood."""
    sc = sidecar_factory(extra_yaml={"websocket": {"close_timeout_ms": 500}})
    baseline = warm_baseline(sc, redis)
    sock, _ = ghost_upgrade(sc.port, "/ws/flood", rcvbuf=4096)
    ping = encode_frame(OP_PING, b"q" * 125)
    batch = ping * 1000  # 131 KB
    sent = 0
    try:
        with RssSampler(sc) as rss:
            # At most 400 batches (52 MB of pings) or 15 s; stops early once the sidecar stops
            # reading from us (our send times out) or cuts us off.
            sock.settimeout(2.0)
            t_end = time.monotonic() + 15
            for _ in range(400):
                if time.monotonic() >= t_end:
                    break
                try:
                    sock.sendall(batch)
                    sent += len(batch)
                except (socket.timeout, OSError):
                    break
        print(f"ping flood: sent {sent >> 10} KiB, RSS peak +{rss.peak_kib - baseline} KiB")
        grown = rss.peak_kib - baseline
        if RSS_MEANINGFUL:
            assert grown < 32 * 1024, f"RSS grew {grown} KiB under a ping flood of {sent >> 20} MiB"
    finally:
        reset_close(sock)
    assert_still_serving(sc, redis)


def test_json_ping_flood_is_rate_limited_then_closed_with_1008(sidecar_factory, redis):
    sc = sidecar_factory()

    async def main():
        observer = await connect_ws(sc.ws_url("/ws/acme"))
        flooder = await connect_ws(sc.ws_url("/ws/acme"))
        for _ in range(300):
            try:
                await flooder.send('{"type":"ping"}')
            except Exception:  # closed under us: that is the expected outcome
                break
        codes = []
        rate_limited = 0
        for _ in range(400):
            try:
                msg = json.loads(await asyncio.wait_for(flooder.recv(), 5))
            except asyncio.TimeoutError:
                raise AssertionError("flooder neither closed nor answered") from None
            except Exception:
                break
            codes.append(msg["type"])
            rate_limited += msg.get("code") == "RATE_LIMITED"
        await asyncio.wait_for(flooder.wait_closed(), 5)
        assert flooder.close_code == 1008, flooder.close_code
        assert rate_limited >= 1, codes[:40]
        # The observer was never touched.
        assert redis.publish(ROOM, "calm") == 1
        assert await asyncio.wait_for(observer.recv(), 5) == "calm"
        await observer.close()

    run(main(), 30)
    assert_still_serving(sc, redis)


def test_half_closed_and_close_frame_storms_leave_no_sessions(sidecar_factory, redis):
    sc = sidecar_factory(extra_yaml={"websocket": {"close_timeout_ms": 500}})
    baseline = warm_baseline(sc, redis)

    def storm():
        for i in range(100):
            s, rest = ghost_upgrade(sc.port, "/ws/acme")
            if i % 3 == 0:
                s.shutdown(socket.SHUT_WR)  # FIN without a close frame
            elif i % 3 == 1:
                s.sendall(encode_frame(OP_CLOSE, struct.pack("!H", 1000)) * 3)  # repeated close
            else:
                s.sendall(encode_frame(OP_CLOSE, b"\x03"))  # 1-byte close payload: 1002
            try:
                read_until_closed(s, 3)
            finally:
                s.close()

    storm()
    assert_still_serving(sc, redis)
    grown = sc.rss_kib() - baseline
    if RSS_MEANINGFUL:
        assert grown < RSS_SLACK_KIB, f"RSS {grown} KiB above baseline {baseline} KiB"
