"""A Redis link that goes silent without closing (a partition, a NAT that forgot the flow, a
frozen redis-server) is noticed within redis.reply_timeout_ms: each link sends PING every
redis.ping_interval_ms, and a command left unanswered past the deadline counts as link down.
/ready answers 503, the sidecar reconnects (new connections get through), subscribes every live
room again and delivers; clients stay connected throughout.

The partition is made by ``RedisProxy.freeze()`` (redis_proxy.py): a TCP proxy between the
sidecar and Redis stops forwarding on every connection it has, keeping both sockets open so that
neither end sees a FIN or RST, while still forwarding connections made afterwards.
"""

from __future__ import annotations

import asyncio
import signal

from harness import SLOW, connect_ws, recv_message, run, wait_until
from redis_proxy import RedisProxy
from resilience_util import log_events, ready_status

PING_MS, TIMEOUT_MS = 200, 1000
PROBE = {"redis": {"ping_interval_ms": PING_MS, "reply_timeout_ms": TIMEOUT_MS,
                   "reconnect_initial_ms": 50, "reconnect_max_ms": 300}}
# Noticing takes at most one ping interval (the probe is sent) plus the deadline; the rest is
# the test's own polling and a loaded machine.
NOTICE_S = (PING_MS + TIMEOUT_MS) / 1000 + 1.5 * SLOW


def wait_ready(sc, want: int, timeout: float, what: str):
    return wait_until(lambda: ready_status(sc)[0] == want, timeout, what)


def test_a_partitioned_link_is_noticed_within_the_deadline_and_recovered(sidecar_factory, redis):
    proxy = RedisProxy(redis.port)
    try:
        sc = sidecar_factory(redis_url=proxy.url, extra_yaml=PROBE)

        async def main():
            c = await connect_ws(sc.ws_url("/ws/acme"))
            await asyncio.to_thread(wait_until, lambda: redis.numsub("org:acme") == 1, 5 * SLOW,
                                    "org:acme subscribed through the proxy")
            await asyncio.to_thread(wait_ready, sc, 200, 5 * SLOW, "/ready 200")
            before = proxy.accepted

            proxy.freeze()
            await asyncio.to_thread(wait_ready, sc, 503, NOTICE_S,
                                    "/ready 503 after the link went silent")
            down = log_events(sc, "redis_down", link="subscriber")
            assert down and "reply" in down[-1]["reason"], down
            # The command link has its own probe and is noticed too.
            await asyncio.to_thread(
                wait_until, lambda: log_events(sc, "redis_down", link="command"), NOTICE_S,
                "the command link noticed as silent")

            # New connections get through the proxy: reconnect, resubscribe, deliver.
            await asyncio.to_thread(wait_ready, sc, 200, 5 * SLOW, "/ready 200 again")
            # /ready follows the subscriber link; the command link reconnects on its own
            # backoff, so it may come a moment later.
            await asyncio.to_thread(wait_until, lambda: proxy.accepted >= before + 2, 5 * SLOW,
                                    "both links reconnected through the proxy")
            # The frozen connection is still subscribed as far as Redis knows; the new one too.
            await asyncio.to_thread(wait_until, lambda: redis.numsub("org:acme") == 2, 5 * SLOW,
                                    "org:acme subscribed on the new connection")
            redis.publish("org:acme", "after the partition")
            assert await recv_message(c, 3) == "after the partition"
            assert c.open
            await c.close()

        run(main(), 60 * SLOW)
    finally:
        proxy.close()


def test_a_frozen_redis_is_noticed_and_the_link_recovers_when_it_thaws(sidecar_factory, redis):
    """kill -STOP: Redis keeps its sockets open and answers nothing. After SIGCONT the reconnect
    (whose connect the kernel already accepted into the backlog) completes and rooms receive."""
    sc = sidecar_factory(extra_yaml=PROBE)

    async def main():
        c = await connect_ws(sc.ws_url("/ws/acme"))
        await asyncio.to_thread(wait_until, lambda: redis.numsub("org:acme") == 1, 5 * SLOW,
                                "org:acme subscribed")
        redis.proc.send_signal(signal.SIGSTOP)
        try:
            await asyncio.to_thread(wait_ready, sc, 503, NOTICE_S, "/ready 503 on a frozen Redis")
        finally:
            redis.proc.send_signal(signal.SIGCONT)
        await asyncio.to_thread(wait_ready, sc, 200, 5 * SLOW, "/ready 200 after SIGCONT")
        await asyncio.to_thread(wait_until, lambda: redis.numsub("org:acme") == 1, 5 * SLOW,
                                "org:acme subscribed again (the old connection closed)")
        assert redis.publish("org:acme", "thawed") == 1
        assert await recv_message(c, 3) == "thawed"
        await c.close()

    run(main(), 60 * SLOW)
