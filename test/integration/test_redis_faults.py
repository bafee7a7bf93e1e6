"""Redis faults: the sidecar starts without Redis and connects when it appears; a Redis killed with
SIGKILL and restarted on the same port is reconnected with backoff and jitter, every live room is
subscribed again and clients never notice beyond the messages published while Redis was gone;
/ready says 503 while the subscriber link is down; two sidecars on one Redis both deliver a
single PUBLISH.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import statistics

from harness import SLOW, RedisServer, connect_ws, free_port, recv_json, recv_message, run, \
    wait_until
from resilience_util import log_events, ready_status, status_summary

# Short backoff so that recovery is quick; the connect timeout stays at its default.
BACKOFF = {"redis": {"reconnect_initial_ms": 50, "reconnect_max_ms": 300}}
RECOVERY_S = 10.0  # generous bound for "reconnects"; the backoff test pins the schedule itself


def wait_ready(sc, want: int, timeout: float):
    return wait_until(lambda: ready_status(sc)[0] == want, timeout, f"/ready {want}")


async def assert_receives(conn, payload: str):
    msg = await recv_message(conn, 5)
    assert msg == payload, f"expected {payload!r}, got {msg!r}"


async def assert_ping_answered(conn):
    await conn.send(json.dumps({"type": "ping"}))
    reply = await recv_json(conn, 5)
    assert reply["type"] == "pong", reply


def test_starts_without_redis_and_connects_when_it_appears(sidecar_factory):
    later = RedisServer(port=free_port())  # not started: nothing listens on its port yet
    try:
        sc = sidecar_factory(redis_url=later.url, extra_yaml=BACKOFF)
        status, body = ready_status(sc)
        assert status == 503, (status, body)
        assert "redis" in body.get("reason", ""), body
        sc.wait_log(r"event=redis_down link=subscriber", RECOVERY_S)

        async def main():
            c = await connect_ws(sc.ws_url("/ws/acme"))
            assert c.welcome["type"] == "connected"
            await assert_ping_answered(c)  # served although Redis is absent
            assert status_summary(sc)["redisConnected"] is False

            await asyncio.to_thread(later.start)
            await asyncio.to_thread(wait_ready, sc, 200, RECOVERY_S)
            await asyncio.to_thread(wait_until, lambda: later.numsub("org:acme") == 1, 5,
                                    "org:acme subscribed on the late Redis")
            assert later.publish("org:acme", "first light") == 1
            await assert_receives(c, "first light")
            await c.close()

        run(main(), 40)
        assert log_events(sc, "redis_connected", link="subscriber")
        assert log_events(sc, "redis_ready")
    finally:
        later.stop()


def test_sigkill_and_restart_keeps_clients_and_resubscribes_every_live_room(sidecar_factory,
                                                                             redis):
    sc = sidecar_factory(extra_yaml=BACKOFF)

    async def main():
        acme1 = await connect_ws(sc.ws_url("/ws/acme"))
        acme2 = await connect_ws(sc.ws_url("/ws/acme"))
        beta = await connect_ws(sc.ws_url("/ws/beta"))
        delta = await connect_ws(sc.ws_url("/ws/delta"))
        # sidecar:control is the sidecar's own subscription, there with or without rooms.
        before = {"org:acme", "org:beta", "org:delta", "sidecar:broadcast", "sidecar:control"}
        await asyncio.to_thread(wait_until, lambda: redis.pubsub_channels() == before, 5,
                                "every room subscribed")

        await asyncio.to_thread(redis.kill)
        await asyncio.to_thread(wait_ready, sc, 503, RECOVERY_S)
        await asyncio.to_thread(sc.wait_log, r"event=redis_down link=subscriber", RECOVERY_S)
        # While Redis is gone: clients stay and are served, one leaves, one arrives.
        for c in (acme1, acme2, beta):
            assert c.open
            await assert_ping_answered(c)
        await delta.close()
        gamma = await connect_ws(sc.ws_url("/ws/gamma"))
        assert status_summary(sc)["activeConnections"] == 4

        await asyncio.to_thread(redis.restart)
        await asyncio.to_thread(wait_ready, sc, 200, RECOVERY_S)
        # Exactly the rooms with members now: gamma joined, delta's room was left.
        after = {"org:acme", "org:beta", "org:gamma", "sidecar:broadcast", "sidecar:control"}
        await asyncio.to_thread(wait_until, lambda: redis.pubsub_channels() == after, 5,
                                f"PUBSUB CHANNELS == {sorted(after)}")

        assert redis.publish("org:acme", "acme after restart") == 1
        for c in (acme1, acme2):
            await assert_receives(c, "acme after restart")
        assert redis.publish("org:beta", "beta after restart") == 1
        await assert_receives(beta, "beta after restart")
        assert redis.publish("org:gamma", "gamma after restart") == 1
        await assert_receives(gamma, "gamma after restart")
        assert redis.publish("sidecar:broadcast", "to everyone") == 1
        for c in (acme1, acme2, beta, gamma):
            await assert_receives(c, "to everyone")
        for c in (acme1, acme2, beta, gamma):
            await c.close()

    run(main(), 60)
    assert len(log_events(sc, "redis_connected", link="subscriber")) >= 2
    assert log_events(sc, "redis_lost"), "no redis_lost line"
    assert len(log_events(sc, "redis_ready")) >= 2
    status, _, body = sc.http("GET", "/metrics")
    assert status == 200
    m = re.search(rb"^sidecar_redis_reconnects_total (\d+)", body, re.M)
    assert m and int(m.group(1)) >= 1, body[:400]


def test_reconnect_follows_backoff_with_jitter_up_to_the_cap(sidecar_factory):
    """With Redis refusing connections, attempts are spaced reconnect_initial_ms, doubling, up to
    reconnect_max_ms, each with +-20 % jitter; the connect timeout (kept long here) plays no part
    in a refused connection. Once Redis is back, the next attempt succeeds."""
    initial, cap = 50, 400
    absent = RedisServer(port=free_port())
    try:
        sc = sidecar_factory(redis_url=absent.url, extra_yaml={
            "redis": {"reconnect_initial_ms": initial, "reconnect_max_ms": cap,
                      "connect_timeout_ms": 5000}})

        def failures(link):
            # The first failure is logged as redis_down, each later one as redis_retry_failed.
            return log_events(sc, "redis_down", link=link) + \
                log_events(sc, "redis_retry_failed", link=link)

        want = 9  # 50, 100, 200, 400, then capped: about 2.4 s
        wait_until(lambda: all(len(failures(l)) >= want for l in ("subscriber", "command")),
                   4.5, f"{want} refused attempts on each link (not one per connect timeout)")
        for link in ("subscriber", "command"):
            times = sorted(r["_t"] for r in failures(link))[:want]
            gaps = [round((b - a) * 1000) for a, b in zip(times, times[1:])]
            for i, gap in enumerate(gaps):
                delay = min(initial * 2 ** i, cap)
                # The bus checks its retry deadlines every 50 ms, hence the slack above.
                assert delay * 0.8 - 15 <= gap <= delay * 1.2 + 80, (link, i, gaps)
        # That the delays are jittered (and not merely scattered by the tick) is
        # test_reconnect_delays_at_the_cap_are_jittered_20_percent's business.

        absent.start()
        wait_ready(sc, 200, cap * 1.2 / 1000 + 1.5)
    finally:
        absent.stop()


def test_reconnect_delays_at_the_cap_are_jittered_20_percent(sidecar_factory):
    """With reconnect_initial_ms = reconnect_max_ms every delay is the cap times a random factor
    in [0.8, 1.2]. Measured over 20 refused attempts (10 per link, from the log timestamps of
    redis_down / redis_retry_failed): every gap lies in that range (plus the bus's 50 ms tick and
    scheduling slack), some gap is clearly shorter than the cap, which only jitter can do (a timer
    never fires early), and the gaps spread like a uniform +-20 % draw (stdev 0.115 x cap), not
    like timer noise."""
    cap = 800
    absent = RedisServer(port=free_port())
    try:
        sc = sidecar_factory(redis_url=absent.url, extra_yaml={
            "redis": {"reconnect_initial_ms": cap, "reconnect_max_ms": cap,
                      "connect_timeout_ms": 5000}})

        def failures(link):
            return log_events(sc, "redis_down", link=link) + \
                log_events(sc, "redis_retry_failed", link=link)

        per_link = 11  # 10 gaps each
        wait_until(lambda: all(len(failures(l)) >= per_link for l in ("subscriber", "command")),
                   per_link * cap * 1.2 / 1000 + 5 * SLOW, f"{per_link} refused attempts per link")
        gaps = []
        for link in ("subscriber", "command"):
            times = sorted(r["_t"] for r in failures(link))[:per_link]
            gaps += [(b - a) * 1000 for a, b in zip(times, times[1:])]
        shown = [round(g) for g in gaps]
        lo, hi = 0.8 * cap - 20, 1.2 * cap + 60 + 250 * SLOW
        assert all(lo <= g <= hi for g in gaps), f"gaps outside [{lo:.0f}, {hi:.0f}] ms: {shown}"
        assert min(gaps) < 0.97 * cap, f"no delay shorter than the cap: no jitter? {shown}"
        spread = statistics.stdev(gaps)
        assert spread >= 0.04 * cap, f"stdev {spread:.0f} ms: delays barely vary {shown}"
    finally:
        absent.stop()


def test_inbound_messages_fail_softly_during_an_outage_and_flow_after(sidecar_factory, redis):
    sc = sidecar_factory(extra_yaml=dict(BACKOFF, inbound={"stream": "inbound:{org}"}))

    async def main():
        c = await connect_ws(sc.ws_url("/ws/acme"))
        # Settled first: a kill with SUBSCRIBE in flight is its own test below.
        await asyncio.to_thread(wait_until, lambda: redis.numsub("org:acme") == 1, 5,
                                "org:acme subscribed")
        await asyncio.to_thread(redis.kill)
        await asyncio.to_thread(wait_ready, sc, 503, RECOVERY_S)
        await asyncio.to_thread(
            wait_until, lambda: log_events(sc, "redis_down", link="command"), RECOVERY_S,
            "the command link to notice")
        await c.send(json.dumps({"type": "note", "n": 1}))
        err = await recv_json(c)
        assert (err["type"], err["code"], err["recoverable"]) == ("error", "UNAVAILABLE", True), err
        assert c.open

        await asyncio.to_thread(redis.restart)
        await asyncio.to_thread(
            wait_until, lambda: len(log_events(sc, "redis_connected", link="command")) >= 2,
            RECOVERY_S, "the command link back")
        await c.send(json.dumps({"type": "note", "n": 2}))
        await asyncio.to_thread(wait_until, lambda: redis.command("XLEN", "inbound:acme") == 1,
                                5, "the message in inbound:acme")
        entries = redis.command("XRANGE", "inbound:acme", "-", "+")
        fields = entries[0][1]
        data = dict(zip(fields[::2], fields[1::2]))
        assert json.loads(data[b"data"]) == {"type": "note", "n": 2}
        await c.close()

    run(main(), 60)


def test_redis_killed_with_commands_in_flight_is_noticed_and_recovered(sidecar_factory, redis):
    """Redis dies while the sidecar's SUBSCRIBE commands sit unread in its socket buffer, so
    the kernel answers with RST rather than FIN. The sidecar must notice that too: /ready 503,
    reconnect, subscribe, deliver."""
    sc = sidecar_factory(extra_yaml=BACKOFF)

    async def main():
        # A stopped Redis reads nothing: the SUBSCRIBEs for these rooms stay in its buffer.
        redis.proc.send_signal(signal.SIGSTOP)
        clients = [await connect_ws(sc.ws_url(f"/ws/room{i}")) for i in range(3)]
        await asyncio.to_thread(redis.kill)
        await asyncio.to_thread(wait_ready, sc, 503, 5)
        await asyncio.to_thread(redis.restart)
        await asyncio.to_thread(wait_ready, sc, 200, RECOVERY_S)
        want = {f"org:room{i}" for i in range(3)} | {"sidecar:broadcast", "sidecar:control"}
        await asyncio.to_thread(wait_until, lambda: redis.pubsub_channels() == want, 5,
                                "every room subscribed again")
        for i, c in enumerate(clients):
            assert redis.publish(f"org:room{i}", f"hello {i}") == 1
            await assert_receives(c, f"hello {i}")
            await c.close()

    run(main(), 40)


def test_two_sidecars_on_one_redis_both_deliver_one_publish(sidecar_factory, redis):
    a = sidecar_factory()
    b = sidecar_factory()

    async def main():
        ca = await connect_ws(a.ws_url("/ws/acme"))
        cb = await connect_ws(b.ws_url("/ws/acme"))
        other = await connect_ws(b.ws_url("/ws/other"))
        await asyncio.to_thread(wait_until, lambda: redis.numsub("org:acme") == 2, 5,
                                "both sidecars subscribed to org:acme")
        assert redis.publish("org:acme", "once") == 2
        await assert_receives(ca, "once")
        await assert_receives(cb, "once")
        assert redis.publish("sidecar:broadcast", "all") == 2
        for c in (ca, cb, other):
            await assert_receives(c, "all")
        # Room isolation holds across sidecars too: "other" got nothing of org:acme.
        assert redis.publish("org:other", "just other") == 1
        await assert_receives(other, "just other")
        for c in (ca, cb, other):
            await c.close()

    run(main(), 30)


def subscribe_calls(redis) -> int:
    stats = redis.command("INFO", "commandstats").decode()
    m = re.search(r"^cmdstat_subscribe:calls=(\d+),", stats, re.M)
    return int(m.group(1)) if m else 0


def test_a_reconnect_subscribes_every_live_room_again_in_a_few_commands(sidecar_factory, redis):
    """202 channels (200 rooms, the broadcast and the control channel) come back after the
    subscriber link is cut in at most 3 SUBSCRIBE commands of up to 100 channels, not 202; every
    room is subscribed and receives."""
    sc = sidecar_factory(extra_yaml=BACKOFF)
    orgs = [f"many{i}" for i in range(200)]

    async def main():
        conns = [await connect_ws(sc.ws_url(f"/ws/{o}")) for o in orgs]
        await asyncio.to_thread(
            wait_until, lambda: all(redis.numsub(f"org:{o}") == 1 for o in orgs), 10 * SLOW,
            "200 rooms subscribed")
        redis.command("CONFIG", "RESETSTAT")
        assert redis.command("CLIENT", "KILL", "TYPE", "pubsub") >= 1
        await asyncio.to_thread(
            wait_until, lambda: all(redis.numsub(f"org:{o}") == 1 for o in orgs), 10 * SLOW,
            "200 rooms subscribed again")
        calls = subscribe_calls(redis)
        assert 1 <= calls <= 3, f"{calls} SUBSCRIBE commands for 202 channels"
        for i in (0, 99, 199):
            assert redis.publish(f"org:{orgs[i]}", f"back {i}") == 1
            await assert_receives(conns[i], f"back {i}")
        for c in conns:
            await c.close()

    run(main(), 60 * SLOW)
