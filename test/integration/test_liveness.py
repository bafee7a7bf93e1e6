"""Liveness: the sidecar pings quiet clients every heartbeat_ms and drops one that answers nothing
within pong_timeout_ms, so ghost (half-open) connections free their memory and their Redis
subscription; clients that answer stay; the handshake, idle and close timeouts hold.

Every test configures small timeouts and states the deadline it allows: the configured time plus
a margin for the sweep timer (a quarter of the shortest timeout) and a loaded 2-core machine.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

from harness import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, connect_ws, encode_frame, run, wait_until
from resilience_util import FrameReader, active_connections, ghost_upgrade, log_events, \
    raw_socket, read_until_closed, split_frames

HEARTBEAT_MS = 300
PONG_TIMEOUT_MS = 300
MARGIN_S = 1.5

FAST = {"websocket": {"heartbeat_ms": HEARTBEAT_MS, "pong_timeout_ms": PONG_TIMEOUT_MS}}


def test_ghost_client_is_dropped_within_heartbeat_plus_pong_timeout(sidecar_factory, redis):
    sc = sidecar_factory(extra_yaml=FAST)
    # Lower bounds count from before the connection starts, upper bounds from after the
    # handshake: the sidecar's own clock for this client starts somewhere in between.
    t_start = time.monotonic()
    sock, rest = ghost_upgrade(sc.port, "/ws/ghost")
    t0 = time.monotonic()
    try:
        # While it is young, the ghost counts as a live client with a Redis subscription.
        assert active_connections(sc) == 1
        wait_until(lambda: redis.numsub("org:ghost") == 1, 5, "the ghost's room subscribed")
        limit = (HEARTBEAT_MS + PONG_TIMEOUT_MS) / 1000 + MARGIN_S
        wait_until(lambda: active_connections(sc) == 0, limit,
                   "the ghost to be dropped (activeConnections 0)")
        wait_until(lambda: redis.numsub("org:ghost") == 0, max(limit - (time.monotonic() - t0),
                                                                0.2),
                   "the ghost's room to be unsubscribed")
        elapsed = time.monotonic() - t_start
        # Not before it had a chance to answer one ping.
        assert elapsed >= (HEARTBEAT_MS + PONG_TIMEOUT_MS) / 1000 * 0.8, elapsed
        # What the ghost would have seen had it looked: the welcome, a ping, then TCP closed
        # without a close frame (a peer that answers nothing will not read one either).
        data, how = read_until_closed(sock, 5)
        frames = split_frames(rest + data)
        opcodes = [op for op, _ in frames]
        assert opcodes[0] == OP_TEXT and json.loads(frames[0][1])["type"] == "connected"
        assert OP_PING in opcodes, opcodes
        assert OP_CLOSE not in opcodes, opcodes
        assert how in ("eof", "reset")
        assert log_events(sc, "disconnect", reason="pong timeout"), "no disconnect log line"
    finally:
        sock.close()


def test_many_ghosts_all_disappear_and_free_their_rooms(sidecar_factory, redis):
    sc = sidecar_factory(extra_yaml=FAST)
    socks = [ghost_upgrade(sc.port, f"/ws/ghost{i % 5}")[0] for i in range(30)]
    try:
        wait_until(lambda: active_connections(sc) == 30, 5, "30 ghosts connected")
        limit = (HEARTBEAT_MS + PONG_TIMEOUT_MS) / 1000 + MARGIN_S
        wait_until(lambda: active_connections(sc) == 0, limit, "every ghost dropped")
        wait_until(lambda: not (redis.pubsub_channels("org:ghost*")), 2,
                   "no ghost room left subscribed")
    finally:
        for s in socks:
            s.close()


def test_clients_that_answer_pings_stay_across_several_heartbeats(sidecar_factory, redis):
    sc = sidecar_factory(extra_yaml=FAST)
    heartbeats = 5

    async def main():
        # websockets answers pings by itself; its own keepalive pings are off so that only its
        # pongs keep it alive.
        auto = await connect_ws(sc.ws_url("/ws/live"), ping_interval=None)
        sock, rest = ghost_upgrade(sc.port, "/ws/live")
        reader = FrameReader(sock, rest, answer_pings=True)
        assert json.loads(reader.message()[1])["type"] == "connected"
        try:
            # The raw client counts the server's pings; wait for several heartbeats to pass.
            others = await asyncio.to_thread(reader.until_pings, heartbeats,
                                             heartbeats * HEARTBEAT_MS / 1000 + 5)
            assert all(op != OP_CLOSE for op, _ in others), others
            assert active_connections(sc) == 2
            assert auto.open
            assert redis.publish("org:live", "still here") == 1
            assert await asyncio.wait_for(auto.recv(), 5) == "still here"
            f = await asyncio.to_thread(reader.message, 5)
            assert f == (OP_TEXT, b"still here")
        finally:
            sock.close()
            await auto.close()

    run(main(), 30)


def test_handshake_timeout_closes_a_silent_tcp_connection(sidecar_factory):
    handshake_ms = 300
    sc = sidecar_factory(extra_yaml={"websocket": {"handshake_timeout_ms": handshake_ms}})
    t_start = time.monotonic()
    silent = raw_socket(sc.port)
    partial = raw_socket(sc.port)
    partial.sendall(b"GET /ws/acme HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
    try:
        for s in (silent, partial):
            _, how = read_until_closed(s, handshake_ms / 1000 + MARGIN_S)
            assert how in ("eof", "reset")
        assert time.monotonic() - t_start >= handshake_ms / 1000 * 0.8
        # A client that completes its request in time is still welcome.
        sock, _ = ghost_upgrade(sc.port)
        sock.close()
    finally:
        silent.close()
        partial.close()


def test_idle_timeout_closes_with_1000_a_client_that_only_answers_pings(sidecar_factory):
    idle_ms = 600
    sc = sidecar_factory(extra_yaml={"websocket": {"heartbeat_ms": 200, "pong_timeout_ms": 500,
                                                   "idle_timeout_ms": idle_ms}})

    async def main():
        t_start = time.monotonic()
        c = await connect_ws(sc.ws_url(), ping_interval=None)
        try:
            await asyncio.wait_for(c.wait_closed(), idle_ms / 1000 + MARGIN_S)
        except asyncio.TimeoutError:
            raise AssertionError("idle client was not closed in time") from None
        assert time.monotonic() - t_start >= idle_ms / 1000 * 0.8
        assert c.close_code == 1000, c.close_code

    run(main())


def test_client_sending_messages_is_not_idle(sidecar_factory):
    idle_ms = 600
    sc = sidecar_factory(extra_yaml={"websocket": {"heartbeat_ms": 200, "pong_timeout_ms": 500,
                                                   "idle_timeout_ms": idle_ms}})
    sock, rest = ghost_upgrade(sc.port)
    reader = FrameReader(sock, rest, answer_pings=True)
    try:
        assert json.loads(reader.message()[1])["type"] == "connected"
        # Each server ping (every 200 ms of quiet) is answered with a pong and a JSON ping, a
        # data message, so the client is never idle for 600 ms. Run past three idle periods.
        t_end = time.monotonic() + 3 * idle_ms / 1000
        pongs = 0
        for _ in range(200):
            if time.monotonic() >= t_end:
                break
            f = reader.frame(3)
            assert f is not None and f[0] != OP_CLOSE, f"closed a client that sends: {f}"
            if f[0] == OP_TEXT and json.loads(f[1])["type"] == "pong":
                pongs += 1
            if f[0] == OP_PING:
                sock.sendall(encode_frame(OP_PONG, f[1]) + encode_frame(OP_TEXT, b'{"type":"ping"}'))
        assert time.monotonic() >= t_end, "loop bound reached before the time bound"
        assert pongs >= 2
        assert active_connections(sc) == 1
    finally:
        sock.close()


def test_peer_that_ignores_the_close_frame_is_dropped_after_close_timeout(sidecar_factory):
    idle_ms, close_ms = 300, 400
    sc = sidecar_factory(extra_yaml={"websocket": {"heartbeat_ms": 60000, "pong_timeout_ms": 60000,
                                                   "idle_timeout_ms": idle_ms,
                                                   "close_timeout_ms": close_ms}})
    t_start = time.monotonic()
    sock, rest = ghost_upgrade(sc.port)
    try:
        data, how = read_until_closed(sock, (idle_ms + close_ms) / 1000 + MARGIN_S)
        elapsed = time.monotonic() - t_start
        frames = split_frames(rest + data)
        closes = [p for op, p in frames if op == OP_CLOSE]
        assert len(closes) == 1 and int.from_bytes(closes[0][:2], "big") == 1000, frames
        # TCP ends only after close_timeout_ms, since this peer never sent its close frame.
        assert elapsed >= (idle_ms + close_ms) / 1000 * 0.8, elapsed
        assert how in ("eof", "reset")
        wait_until(lambda: active_connections(sc) == 0, 2, "the session to be gone")
    finally:
        sock.close()


def test_ghost_room_is_unsubscribed_while_a_live_room_stays(sidecar_factory, redis):
    """A room whose only member is a ghost is unsubscribed once the ghost is dropped, even while
    a live client in another room keeps answering."""
    sc = sidecar_factory(extra_yaml=FAST)
    ghost, _ = ghost_upgrade(sc.port, "/ws/quiet")
    live, rest = ghost_upgrade(sc.port, "/ws/busy")
    reader = FrameReader(live, rest, answer_pings=True)
    stop = threading.Event()

    def answer():
        for _ in range(1000):
            if stop.is_set():
                return
            try:
                if reader.message(0.2) is None:
                    return
            except TimeoutError:
                continue
            except OSError:
                return

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    try:
        wait_until(lambda: redis.numsub("org:quiet") == 1, 5, "org:quiet subscribed")
        limit = (HEARTBEAT_MS + PONG_TIMEOUT_MS) / 1000 + MARGIN_S
        wait_until(lambda: redis.numsub("org:quiet") == 0, limit, "org:quiet unsubscribed")
        assert redis.numsub("org:busy") == 1
        assert active_connections(sc) == 1
    finally:
        stop.set()
        t.join(5)
        ghost.close()
        live.close()
