"""A SUBSCRIBE that Redis refuses (here an ACL that does not grant the channel: NOPERM) costs only
the room that asked for it. The refusal is logged with what happens next, counted in /metrics by
error code and shown in /ready's body; the channel is retried with backoff on its own while
every other room on the same link keeps receiving, and once the ACL grants the channel the next
retry subscribes it and the room receives.

Why /ready stays 200 for a refused room channel: rooms are named by clients (any org id that
passes the pattern), so a 503 here would let one client take every sidecar out of the load
balancer by joining a room the ACL forbids. A refused broadcast channel, which every session
needs, is a different matter and answers 503.
"""

from __future__ import annotations

import asyncio
import re

from harness import SLOW, RedisServer, connect_ws, recv_message, run, wait_until
from resilience_util import log_events, ready_status

# Short backoff: reconnects and per-channel retries both follow it.
BACKOFF = {"reconnect_initial_ms": 50, "reconnect_max_ms": 300}


def acl_user(redis: RedisServer, *channels: str):
    """User sc (password pw) may run any command on any key but use only ``channels``."""
    assert redis.command("ACL", "SETUSER", "sc", "reset", "on", ">pw", "~*", "+@all",
                         "resetchannels", *[f"&{c}" for c in channels]) == b"OK"


def sc_url(redis: RedisServer) -> str:
    return f"redis://sc:pw@127.0.0.1:{redis.port}/0"


def metric(sc, name_and_labels: str) -> float | None:
    status, _, body = sc.http("GET", "/metrics")
    assert status == 200, status
    m = re.search(rb"^" + re.escape(name_and_labels.encode()) + rb" (\S+)$", body, re.M)
    return float(m.group(1)) if m else None


def test_refused_subscribe_is_retried_per_channel_and_other_rooms_keep_receiving(
        sidecar_factory, redis):
    # The sidecar's own subscriptions are granted (control) or off (the connection pattern, which
    # an ACL can only grant by its exact text): this test counts the refusals of rooms alone.
    acl_user(redis, "org:good", "sidecar:broadcast", "sidecar:control")
    sc = sidecar_factory(redis_url=sc_url(redis),
                         extra_yaml={"redis": BACKOFF, "channels": {"connection": ""}})

    async def main():
        good = await connect_ws(sc.ws_url("/ws/good"))
        await asyncio.to_thread(wait_until, lambda: redis.numsub("org:good") == 1, 5 * SLOW,
                                "org:good subscribed")
        bad = await connect_ws(sc.ws_url("/ws/bad"))
        assert bad.welcome["type"] == "connected"

        # The refusal is logged, with the Redis reply and what the sidecar does about it.
        await asyncio.to_thread(sc.wait_log,
                                r"event=redis_subscribe_refused .*channel=org:bad", 5)
        rec = log_events(sc, "redis_subscribe_refused", channel="org:bad")[0]
        assert rec["reply"].startswith("NOPERM"), rec
        assert "retry" in rec["action"], rec

        # It is retried on its own: several refusals, and meanwhile the good room receives.
        def refusals():
            return metric(sc, 'sidecar_redis_subscribe_errors_total{code="NOPERM"}') or 0

        await asyncio.to_thread(wait_until, lambda: refusals() >= 3, 5 * SLOW,
                                "three refused SUBSCRIBEs of org:bad counted")
        for i in range(3):
            assert redis.publish("org:good", f"good {i}") == 1
            msg = await recv_message(good, 5)
            assert msg == f"good {i}", msg
        assert redis.numsub("org:good") == 1
        assert redis.numsub("org:bad") == 0
        assert metric(sc, "sidecar_redis_channels_refused") == 1

        # /ready still 200 (see the module docstring), but says what is wrong.
        status, body = ready_status(sc)
        assert status == 200, (status, body)
        assert "1 channel" in body.get("degraded", "") and "NOPERM" in body["degraded"], body

        # One subscriber connection all along: the refusal never dropped the link.
        assert len(log_events(sc, "redis_connected", link="subscriber")) == 1, sc.log()
        assert not log_events(sc, "redis_down", link="subscriber"), sc.log()

        # The operator grants the channel: the next retry subscribes it and the room receives.
        assert redis.command("ACL", "SETUSER", "sc", "&org:bad") == b"OK"
        await asyncio.to_thread(wait_until, lambda: redis.numsub("org:bad") == 1,
                                (0.3 * 1.2 + 2) * SLOW, "org:bad subscribed after the grant")
        assert redis.publish("org:bad", "finally") == 1
        assert await recv_message(bad, 5) == "finally"
        assert redis.publish("org:good", "still") == 1
        assert await recv_message(good, 5) == "still"
        await asyncio.to_thread(sc.wait_log,
                                r"event=redis_subscribe_recovered .*channel=org:bad", 5)
        status, body = ready_status(sc)
        assert status == 200 and "degraded" not in body, (status, body)
        assert metric(sc, "sidecar_redis_channels_refused") == 0
        await good.close()
        await bad.close()

    run(main(), 60 * SLOW)


def test_a_forbidden_room_in_a_reconnects_batch_does_not_keep_the_others_deaf(
        sidecar_factory, redis):
    """After a reconnect every room is subscribed again in one SUBSCRIBE naming all of them; Redis
    refuses such a command whole when one channel is forbidden. Each channel of it is then sent
    on its own at once: the granted rooms are back without waiting for any backoff, and only the
    forbidden one is refused (and counted) and retried."""
    good = [f"g{i}" for i in range(20)]
    acl_user(redis, *[f"org:{o}" for o in good], "sidecar:broadcast", "sidecar:control")
    sc = sidecar_factory(redis_url=sc_url(redis),
                         extra_yaml={"redis": {"reconnect_initial_ms": 50,
                                               "reconnect_max_ms": 60000},
                                     "channels": {"connection": ""}})

    async def main():
        conns = {o: await connect_ws(sc.ws_url(f"/ws/{o}")) for o in good}
        bad = await connect_ws(sc.ws_url("/ws/bad"))
        await asyncio.to_thread(
            wait_until, lambda: all(redis.numsub(f"org:{o}") == 1 for o in good), 5 * SLOW,
            "the granted rooms subscribed")
        await asyncio.to_thread(sc.wait_log, r"event=redis_subscribe_refused .*channel=org:bad", 5)
        before = metric(sc, 'sidecar_redis_subscribe_errors_total{code="NOPERM"}') or 0
        assert redis.command("CLIENT", "KILL", "TYPE", "pubsub") >= 1
        # The link is back after ~50 ms; the rooms must not wait for org:bad's backoff.
        await asyncio.to_thread(
            wait_until, lambda: all(redis.numsub(f"org:{o}") == 1 for o in good), 3 * SLOW,
            "every granted room subscribed again")
        for o in (good[0], good[-1]):
            assert redis.publish(f"org:{o}", f"hi {o}") == 1
            assert await recv_message(conns[o], 5) == f"hi {o}"
        assert redis.numsub("org:bad") == 0
        after = metric(sc, 'sidecar_redis_subscribe_errors_total{code="NOPERM"}') or 0
        # org:bad's own refusals only: the batch's refusal is not counted against 21 channels.
        assert 1 <= after - before <= 3, (before, after)
        for c in list(conns.values()) + [bad]:
            await c.close()

    run(main(), 60 * SLOW)


def test_refused_broadcast_channel_makes_the_sidecar_not_ready(sidecar_factory, redis):
    """Every session needs the broadcast channel, so its refusal is the sidecar's problem as a
    whole: /ready 503 naming it, until the ACL allows it."""
    acl_user(redis, "org:*")
    sc = sidecar_factory(redis_url=sc_url(redis), extra_yaml={"redis": BACKOFF})

    async def main():
        c = await connect_ws(sc.ws_url("/ws/acme"))
        await asyncio.to_thread(wait_until, lambda: redis.numsub("org:acme") == 1, 5 * SLOW,
                                "org:acme subscribed")
        await asyncio.to_thread(wait_until, lambda: ready_status(sc)[0] == 503, 5 * SLOW,
                                "/ready 503 while sidecar:broadcast is refused")
        status, body = ready_status(sc)
        assert "sidecar:broadcast" in body.get("reason", ""), body
        assert redis.publish("org:acme", "room works") == 1
        assert await recv_message(c, 5) == "room works"

        assert redis.command("ACL", "SETUSER", "sc", "&sidecar:broadcast") == b"OK"
        await asyncio.to_thread(wait_until, lambda: ready_status(sc)[0] == 200, 5 * SLOW,
                                "/ready 200 once the broadcast channel is granted")
        assert redis.publish("sidecar:broadcast", "all") == 1
        assert await recv_message(c, 5) == "all"
        await c.close()

    run(main(), 60 * SLOW)


def test_a_refused_auth_keeps_the_link_down_with_backoff_until_the_password_works(
        sidecar_factory, redis):
    """AUTH is answered before a link counts as up: a wrong password is /ready 503 naming the
    reply, retried on the backoff (not in a tight loop), and the link comes up once Redis accepts
    the password."""
    acl_user(redis, "*")
    url = f"redis://sc:wrong@127.0.0.1:{redis.port}/0"
    sc = sidecar_factory(redis_url=url, extra_yaml={"redis": BACKOFF})
    wait_until(lambda: "WRONGPASS" in ready_status(sc)[1].get("reason", ""), 5 * SLOW,
               "/ready 503 naming WRONGPASS")
    assert ready_status(sc)[0] == 503

    def attempts():
        return log_events(sc, "redis_down", link="subscriber") + \
            log_events(sc, "redis_retry_failed", link="subscriber")

    wait_until(lambda: len(attempts()) >= 5, 5 * SLOW, "five refused AUTHs")
    times = sorted(r["_t"] for r in attempts())
    # 50, 100, 200, then 300 ms (+-20 %): a tight loop would make these gaps a few ms. The log's
    # timestamps are whole milliseconds, so the shortest (40 ms) can read as 39 (seen in CI).
    gaps = [b - a for a, b in zip(times, times[1:])][:4]
    assert all(g >= 0.035 for g in gaps) and gaps[-1] >= 0.2, gaps
    assert "AUTH" in attempts()[0]["reason"], attempts()[0]

    assert redis.command("ACL", "SETUSER", "sc", ">wrong") == b"OK"
    wait_until(lambda: ready_status(sc)[0] == 200, (0.3 * 1.2 + 2) * SLOW,
               "/ready 200 once the password is accepted")
    assert log_events(sc, "redis_connected", link="subscriber")
