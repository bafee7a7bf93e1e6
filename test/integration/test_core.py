"""Core behaviour a user of the sidecar notices: the welcome, ping/pong, byte-exact relay of what a
backend PUBLISHes (any size, text or binary, from redis-cli or any client), ordering, room
isolation, Redis subscriptions that follow membership, robustness against clients that vanish,
and a graceful SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct

import websockets

from harness import (RawWs, connect_ws, recv_json, recv_message, run, wait_until,
                     ws_close_code)

ROOM = "org:acme"


def utf8_payload(n: int) -> bytes:
    """Exactly n bytes of valid UTF-8 mixing 1-, 2-, 3- and 4-byte characters."""
    unit = "héllo wörld ✓ 𝄞 ".encode()
    data = (unit * (n // len(unit) + 1))[:n]
    # Cut back to a character boundary, then pad with ASCII to the exact size.
    while True:
        try:
            data.decode()
            break
        except UnicodeDecodeError:
            data = data[:-1]
    data += b"x" * (n - len(data))
    assert len(data) == n
    data.decode()
    return data


def wait_subscribed(redis, channel: str = ROOM):
    wait_until(lambda: redis.numsub(channel) >= 1, 10, f"a subscriber on {channel}")


# ----------------------------------------------------------------------------- welcome and ping


def test_welcome_names_connection_org_and_heartbeat(sidecar):
    async def main():
        a = await connect_ws(sidecar.ws_url("/ws/acme"))
        b = await connect_ws(sidecar.ws_url("/ws/acme"))
        for w in (a.welcome, b.welcome):
            assert w["type"] == "connected"
            assert isinstance(w["connection_id"], str) and w["connection_id"]
            assert w["org"] == "acme"
            assert isinstance(w["heartbeat_ms"], int) and not isinstance(w["heartbeat_ms"], bool)
            assert w["heartbeat_ms"] == 25000  # the documented default
        assert a.welcome["connection_id"] != b.welcome["connection_id"]
        await a.close()
        await b.close()

    run(main())


def test_welcome_reports_configured_heartbeat(sidecar_factory):
    sc = sidecar_factory(extra_yaml={"websocket": {"heartbeat_ms": 12000}})

    async def main():
        c = await connect_ws(sc.ws_url())
        assert c.welcome["heartbeat_ms"] == 12000
        await c.close()

    run(main())


def test_ping_is_answered_with_pong_and_timestamp(sidecar):
    async def main():
        c = await connect_ws(sidecar.ws_url())
        for _ in range(3):
            await c.send(json.dumps({"type": "ping"}))
            pong = await recv_json(c)
            assert pong["type"] == "pong"
            ts = pong["timestamp"]
            assert isinstance(ts, (int, float)) and not isinstance(ts, bool) and ts > 0
        await c.close()

    run(main())


# ----------------------------------------------------------------------------- byte-exact relay


def test_payloads_of_every_length_class_arrive_byte_exact_as_text(sidecar, redis):
    # 0 and 125 use the 7-bit length, 126 and 65535 the 16-bit form, 65536 and up the 64-bit form.
    sizes = [0, 1, 125, 126, 65535, 65536, 1 << 20]

    async def main():
        c = await connect_ws(sidecar.ws_url())
        wait_subscribed(redis)
        for n in sizes:
            payload = utf8_payload(n)
            assert redis.publish(ROOM, payload) == 1
            msg = await recv_message(c, 10)
            assert isinstance(msg, str), f"size {n}: valid UTF-8 must arrive as a text frame"
            assert msg.encode() == payload, f"size {n}: payload differs"
        await c.close()

    run(main())


def test_invalid_utf8_payloads_arrive_byte_exact_as_binary(sidecar, redis):
    payloads = [b"\xff", b"\xc3\x28" + bytes(range(256)), b"\x80" + os.urandom(70000),
                b"\xfe" + os.urandom((1 << 20) - 1)]

    async def main():
        c = await connect_ws(sidecar.ws_url())
        wait_subscribed(redis)
        for p in payloads:
            assert redis.publish(ROOM, p) == 1
            msg = await recv_message(c, 10)
            assert isinstance(msg, bytes), f"{len(p)} bytes of invalid UTF-8 must be binary"
            assert msg == p
        await c.close()

    run(main())


def test_payload_published_with_redis_cli_arrives_verbatim(sidecar, redis):
    payload = '{"type":"SYNC_SUCCESS","pfaId":"pfa-123","note":"ünïcödé ✓"}'

    async def main():
        c = await connect_ws(sidecar.ws_url())
        wait_subscribed(redis)
        out = redis.cli("PUBLISH", ROOM, payload)
        assert out.strip() == "1"
        assert await recv_message(c) == payload
        await c.close()

    run(main())


def test_burst_of_1000_messages_arrives_complete_and_in_order(sidecar, redis):
    async def main():
        c = await connect_ws(sidecar.ws_url())
        wait_subscribed(redis)
        payloads = [json.dumps({"type": "seq", "n": i}).encode() for i in range(1000)]
        counts = redis.publish_many(ROOM, payloads)
        assert counts == [1] * 1000
        got = [json.loads(await recv_message(c, 10))["n"] for _ in range(1000)]
        assert got == list(range(1000))
        await c.close()

    run(main())


# ----------------------------------------------------------------------------- rooms


def test_rooms_are_isolated(sidecar, redis):
    async def main():
        a = await connect_ws(sidecar.ws_url("/ws/acme"))
        g = await connect_ws(sidecar.ws_url("/ws/globex"))
        assert g.welcome["org"] == "globex"
        wait_subscribed(redis, "org:acme")
        wait_subscribed(redis, "org:globex")
        # Each room's message is published before the other's: the first thing each client
        # receives must be its own room's message, so the other one was never delivered.
        redis.publish("org:globex", "for-globex")
        redis.publish("org:acme", "for-acme")
        assert await recv_message(a) == "for-acme"
        assert await recv_message(g) == "for-globex"
        redis.publish("org:acme", "acme-2")
        redis.publish("org:globex", "globex-2")
        assert await recv_message(a) == "acme-2"
        assert await recv_message(g) == "globex-2"
        await a.close()
        await g.close()

    run(main())


def test_every_client_of_a_room_receives_each_message(sidecar, redis):
    async def main():
        a = await connect_ws(sidecar.ws_url())
        b = await connect_ws(sidecar.ws_url())
        wait_subscribed(redis)
        assert redis.publish(ROOM, "to-both") == 1  # one sidecar subscription serves both
        assert await recv_message(a) == "to-both"
        assert await recv_message(b) == "to-both"
        await a.close()
        await b.close()

    run(main())


def test_a_channel_named_by_two_templates_delivers_once(sidecar_factory, redis):
    """The broadcast channel configured equal to a room's channel must not double deliveries."""
    sc = sidecar_factory(extra_yaml={"channels": {"broadcast": "org:acme"}})

    async def main():
        ws = await connect_ws(sc.ws_url())
        wait_subscribed(redis)
        redis.publish(ROOM, "first")
        redis.publish(ROOM, "second")
        assert await recv_message(ws) == "first"
        # Were the room joined twice, "first" would arrive again here.
        assert await recv_message(ws) == "second"
        await ws.close()

    run(main())


def test_late_joiner_gets_nothing_published_before_it_joined(sidecar, redis):
    async def main():
        early = await connect_ws(sidecar.ws_url())
        wait_subscribed(redis)
        redis.publish(ROOM, "old")
        assert await recv_message(early) == "old"
        late = await connect_ws(sidecar.ws_url())
        redis.publish(ROOM, "new")
        assert await recv_message(late) == "new"
        assert await recv_message(early) == "new"
        await early.close()
        await late.close()

    run(main())


def test_redis_subscription_follows_room_membership(sidecar, redis):
    async def main():
        assert ROOM not in redis.pubsub_channels()
        a = await connect_ws(sidecar.ws_url())
        b = await connect_ws(sidecar.ws_url())
        wait_until(lambda: ROOM in redis.pubsub_channels(), 10, "SUBSCRIBE org:acme")
        assert redis.numsub(ROOM) == 1

        # One member leaves: the room stays subscribed and the other still receives.
        await a.close()
        redis.publish(ROOM, "still-here")
        assert await recv_message(b) == "still-here"
        assert redis.numsub(ROOM) == 1

        # The last member leaves: the sidecar unsubscribes.
        await b.close()
        wait_until(lambda: ROOM not in redis.pubsub_channels(), 10, "UNSUBSCRIBE org:acme")

        # A new member subscribes again.
        c = await connect_ws(sidecar.ws_url())
        wait_until(lambda: ROOM in redis.pubsub_channels(), 10, "SUBSCRIBE org:acme again")
        redis.publish(ROOM, "back")
        assert await recv_message(c) == "back"
        await c.close()
        wait_until(lambda: ROOM not in redis.pubsub_channels(), 10, "UNSUBSCRIBE again")

    run(main())


def test_last_member_vanishing_without_close_unsubscribes(sidecar, redis):
    ws = RawWs.connect(sidecar.port, "/ws/solo")
    assert ws.recv_json()["type"] == "connected"
    wait_until(lambda: "org:solo" in redis.pubsub_channels(), 10, "SUBSCRIBE org:solo")
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.close()
    wait_until(lambda: "org:solo" not in redis.pubsub_channels(), 10, "UNSUBSCRIBE org:solo")


# ----------------------------------------------------------------------------- robustness


def test_100_clients_reset_abruptly_leave_the_rest_working(sidecar, redis):
    doomed = []
    try:
        for _ in range(100):
            ws = RawWs.connect(sidecar.port, "/ws/acme")
            doomed.append(ws)
        for ws in doomed:
            assert ws.recv_json()["type"] == "connected"

        async def main():
            survivor = await connect_ws(sidecar.ws_url())
            wait_subscribed(redis)
            redis.publish(ROOM, "before")
            assert await recv_message(survivor) == "before"

            # SO_LINGER 0 makes close() send RST: the sidecar sees resets, not close frames,
            # some of them while it is writing a fan-out to those sockets.
            for i, ws in enumerate(doomed):
                ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                ws.close()
                if i % 10 == 0:
                    redis.publish(ROOM, f"during-{i}")
            for i in range(0, 100, 10):
                assert await recv_message(survivor) == f"during-{i}"

            redis.publish(ROOM, "after")
            assert await recv_message(survivor) == "after"

            # Newcomers are served too, and the process is healthy.
            newcomer = await connect_ws(sidecar.ws_url())
            redis.publish(ROOM, "for-both")
            assert await recv_message(survivor) == "for-both"
            assert await recv_message(newcomer) == "for-both"
            status, _, _ = sidecar.http("GET", "/health")
            assert status == 200
            await survivor.close()
            await newcomer.close()

        run(main())
        assert sidecar.running()
    finally:
        for ws in doomed:
            ws.close()


# ----------------------------------------------------------------------------- shutdown


def test_sigterm_closes_clients_with_1001_and_exits_0(sidecar):
    async def main():
        c = await connect_ws(sidecar.ws_url())
        sidecar.send_signal(signal.SIGTERM)
        assert await ws_close_code(c, 15) == 1001

    run(main())
    assert sidecar.wait_exit(20) == 0


def test_sigterm_announces_server_shutdown_before_closing(sidecar):
    async def main():
        c = await connect_ws(sidecar.ws_url())
        sidecar.send_signal(signal.SIGTERM)
        seen = []
        try:
            while True:
                seen.append(await recv_message(c, 15))
        except websockets.ConnectionClosed as e:
            assert e.rcvd is not None and e.rcvd.code == 1001
        types = [json.loads(m).get("type") for m in seen if isinstance(m, str)]
        assert "server_shutdown" in types, f"messages before the close: {seen}"

    run(main())
    assert sidecar.wait_exit(20) == 0


def test_sigterm_with_no_clients_exits_0_promptly(sidecar):
    sidecar.send_signal(signal.SIGTERM)
    assert sidecar.wait_exit(10) == 0
