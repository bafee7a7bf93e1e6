"""A smoke check that history is wired end to end (issue 11): config -> RedisBus's FUNCTION LOAD
-> FCALL sidecar_publish -> room -> session, for a sidecar.v1 client and a verbatim one, and one
resume after a client drop. The full contract is covered by the test_history_*.py suites; this
file only proves the pieces meet.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse

from harness import SLOW, RespConn, _merge, connect_ws, recv_json, recv_message, run, wait_until
from redis_proxy import RedisProxy

HISTORY = {"history": [{"channel": "org:{org}", "size": 100, "ttl_s": 600, "max_recover": 50}]}


def fcall_publish(redis, channel, payload):
    conn = RespConn(redis.port)
    try:
        return conn.command("FCALL", "sidecar_publish", 1, channel, payload)
    finally:
        conn.close()


def library_loaded(sidecar):
    return sidecar.wait_log(r"redis_function_loaded")


def subscribed(redis, channel):
    return lambda: redis.numsub(channel) >= 1


def test_fcall_reaches_a_v1_client_in_an_envelope_and_a_verbatim_client_verbatim(
        redis, sidecar_factory):
    sc = sidecar_factory(extra_yaml=HISTORY)
    library_loaded(sc)

    async def scenario():
        v1 = await connect_ws(sc.ws_url(), subprotocols=["sidecar.v1"])
        plain = await connect_ws(sc.ws_url())
        try:
            assert v1.subprotocol == "sidecar.v1"
            assert v1.welcome["type"] == "connected"
            start = v1.welcome["channels"]["org:acme"]
            assert start["recovered"] is False and start["offset"] == 0
            assert "channels" not in plain.welcome  # verbatim welcome unchanged
            wait_until(subscribed(redis, "org:acme"), 5, "SUBSCRIBE org:acme")
            assert fcall_publish(redis, "org:acme", '{"type":"SYNC_SUCCESS"}') == 1
            env = await recv_json(v1)
            assert env == {"type": "message", "channel": "org:acme", "epoch": start["epoch"],
                           "offset": 1, "data": {"type": "SYNC_SUCCESS"}}
            assert await recv_message(plain) == '{"type":"SYNC_SUCCESS"}'
            # A plain PUBLISH still reaches both: verbatim as sent, v1 in an envelope without
            # a position.
            redis.publish("org:acme", "hello")
            assert await recv_json(v1) == {"type": "message", "channel": "org:acme",
                                           "data": "hello"}
            assert await recv_message(plain) == "hello"
            # Binary payloads: the same bytes verbatim, base64 in the envelope.
            assert fcall_publish(redis, "org:acme", b"\xff\x00\x01") == 2
            env = await recv_json(v1)
            assert env["offset"] == 2 and env["data_b64"] == "/wAB"
            assert await recv_message(plain) == b"\xff\x00\x01"
        finally:
            await v1.close()
            await plain.close()

    run(scenario())


def test_a_client_that_drops_resumes_with_what_it_missed_exactly_once(redis, sidecar_factory):
    sc = sidecar_factory(extra_yaml=HISTORY)
    library_loaded(sc)

    async def scenario():
        first = await connect_ws(sc.ws_url(), subprotocols=["sidecar.v1"])
        wait_until(subscribed(redis, "org:acme"), 5, "SUBSCRIBE org:acme")
        for i in range(1, 4):
            fcall_publish(redis, "org:acme", json.dumps({"n": i}))
        seen = [await recv_json(first) for _ in range(3)]
        assert [m["offset"] for m in seen] == [1, 2, 3]
        epoch = seen[-1]["epoch"]
        await first.close()
        # Published while the client is away. The room went with its last member, so the
        # resume also goes through a new room's first read (RoomMember::room_ready).
        for i in range(4, 8):
            fcall_publish(redis, "org:acme", json.dumps({"n": i}))
        recover = urllib.parse.quote(f"org:acme@{epoch}:3", safe="")
        back = await connect_ws(sc.ws_url(f"/ws/acme?recover={recover}"),
                                subprotocols=["sidecar.v1"])
        try:
            assert back.welcome["channels"]["org:acme"] == {"epoch": epoch, "offset": 3,
                                                            "recovered": True}
            got = [await recv_json(back) for _ in range(4)]
            assert [m["offset"] for m in got] == [4, 5, 6, 7]
            assert [m["data"]["n"] for m in got] == [4, 5, 6, 7]
            fcall_publish(redis, "org:acme", json.dumps({"n": 8}))
            live = await recv_json(back)
            assert live["offset"] == 8  # live follows the replay with no duplicate and no hole
        finally:
            await back.close()

    run(scenario())
    status, _, body = sc.http("GET", "/metrics")
    text = body.decode()
    assert 'sidecar_resumes_total{result="recovered"} 1' in text
    assert "sidecar_replayed_messages_total 4" in text


def test_a_bad_recover_parameter_is_refused_before_the_upgrade(redis, sidecar_factory):
    sc = sidecar_factory(extra_yaml=HISTORY)
    status, _, body = sc.http("GET", "/ws/acme?recover=nonsense",
                              headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                       "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                       "Sec-WebSocket-Version": "13"})
    assert status == 400
    assert json.loads(body)["error"] == "BAD_RECOVER"


def test_a_killed_subscriber_link_is_read_once_for_history_rooms_and_resynced_elsewhere(
        redis, sidecar_factory):
    sc = sidecar_factory(extra_yaml=HISTORY)
    library_loaded(sc)

    async def scenario():
        client = await connect_ws(sc.ws_url(), subprotocols=["sidecar.v1"])
        try:
            wait_until(subscribed(redis, "org:acme"), 5, "SUBSCRIBE org:acme")
            wait_until(subscribed(redis, "sidecar:broadcast"), 5, "SUBSCRIBE sidecar:broadcast")
            fcall_publish(redis, "org:acme", '"one"')
            assert (await recv_json(client))["offset"] == 1
            redis.command("CLIENT", "KILL", "TYPE", "pubsub")
            # Published while the link is down: lost to pub/sub, kept in the stream.
            fcall_publish(redis, "org:acme", '"two"')
            fcall_publish(redis, "org:acme", '"three"')
            got = {}
            while len(got) < 3:
                m = await recv_json(client, timeout=10)
                if m["type"] == "resync":
                    assert m == {"type": "resync", "channel": "sidecar:broadcast",
                                 "reason": "redis_reconnected"}
                    got["resync"] = m
                else:
                    got[m["offset"]] = m["data"]
            assert got[2] == "two" and got[3] == "three"
        finally:
            await client.close()

    run(scenario())


def test_a_publication_between_the_subscribe_and_a_new_rooms_first_read_is_delivered(
        redis, sidecar_factory):
    """A verbatim client is welcomed at once; its history room subscribes, then reads the stream's
    top to anchor its position. A message published after Redis confirmed the SUBSCRIBE but before
    that read ran is in the stream below the top and also arrives live: it is news to the client,
    as it would be in a room without history, and must be delivered, once. The proxy holds the
    room's FCALL sidecar_read so that the publication falls inside that window every time."""
    proxy = RedisProxy(redis.port)
    try:
        # The held read must not count as a silent link: a long reply deadline.
        sc = sidecar_factory(redis_url=proxy.url, extra_yaml=_merge(
            HISTORY, {"redis": {"reply_timeout_ms": 30000, "ping_interval_ms": 10000}}))
        library_loaded(sc)
        proxy.hold(b"sidecar_read")

        async def scenario():
            client = await connect_ws(sc.ws_url())
            try:
                await asyncio.to_thread(wait_until, subscribed(redis, "org:acme"), 5 * SLOW,
                                        "SUBSCRIBE org:acme")
                assert await asyncio.to_thread(proxy.held.wait, 5 * SLOW), \
                    "the room's first read never reached the proxy"
                assert fcall_publish(redis, "org:acme", "in the window") == 1
                await asyncio.to_thread(
                    wait_until, lambda: redis_messages(sc) >= 1, 5 * SLOW,
                    "the sidecar received the live message")
                proxy.release()
                assert await recv_message(client) == "in the window"
                fcall_publish(redis, "org:acme", "after")
                assert await recv_message(client) == "after"  # no duplicate before it
            finally:
                await client.close()

        run(scenario())
    finally:
        proxy.close()


def redis_messages(sc) -> int:
    status, _, body = sc.http("GET", "/metrics")
    m = re.search(r"^sidecar_redis_messages_total (\d+)$", body.decode(), re.M)
    assert status == 200 and m, "sidecar_redis_messages_total not on /metrics"
    return int(m.group(1))
