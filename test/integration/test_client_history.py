"""The client (client/sidecar-client.js) with history (issue 11): sidecar.v1 positions kept per
channel, resumed with `recover` across a sidecar restart exactly once and in order, and onResync
when the epoch changed. Node `ws` through client_util's driver, a real sidecar and redis-server.
"""

from __future__ import annotations

import signal


from test_client_node import drivers  # noqa: F401 - the fixture, shared
from harness import wait_until

HISTORY = [{"channel": "org:{org}", "size": 1000, "ttl_s": 3600, "max_recover": 300}]


def fcall(redis, channel: str, payload: str) -> int:
    return redis.command("FCALL", "sidecar_publish", 1, channel, payload)


# ----------------------------------------------------------------------------- issue 11


def test_history_client_resumes_across_a_restart_exactly_once_in_order(sidecar_factory, redis,
                                                                        drivers):
    sc = sidecar_factory(extra_yaml={"history": HISTORY,
                                     "shutdown": {"reconnect_after_ms": 300,
                                                  "reconnect_jitter_ms": 300}})
    d = drivers({"options": {"url": sc.ws_url("/ws/acme"), "history": True}})
    opened = d.wait_state("open")
    assert opened["protocol"] == "sidecar.v1"
    first_id = d.wait(lambda e: e["event"] == "control" and e["type"] == "connected", 10,
                      "the first welcome")["payload"]["connection_id"]
    wait_until(lambda: redis.numsub("org:acme") >= 1, 10, "SUBSCRIBE org:acme")
    for i in range(3):
        fcall(redis, "org:acme", '{"type":"SYNC_SUCCESS","n":%d}' % i)
    got = [d.wait_message() for _ in range(3)]
    assert [m["data"]["n"] for m in got] == [0, 1, 2]
    offsets = [m["meta"]["offset"] for m in got]
    assert offsets == list(range(offsets[0], offsets[0] + 3))
    epoch = got[0]["meta"]["epoch"]

    sc.send_signal(signal.SIGTERM)
    d.wait_state("reconnecting")
    assert sc.wait_exit(30) == 0
    for i in range(3, 8):  # published while the client is away
        fcall(redis, "org:acme", '{"type":"SYNC_SUCCESS","n":%d}' % i)
    sc.start()
    d.wait_state("open", timeout=20)
    # The second welcome: the driver may print it just after the "open" state event.
    second = d.wait(lambda e: e["event"] == "control" and e["type"] == "connected"
                    and e["payload"].get("connection_id") != first_id, 10, "the second welcome")
    welcome = second["payload"]
    assert welcome["channels"]["org:acme"]["recovered"] is True, welcome
    missed = [d.wait_message() for _ in range(5)]
    assert [m["data"]["n"] for m in missed] == [3, 4, 5, 6, 7]
    assert [m["meta"]["offset"] for m in missed] == list(range(offsets[-1] + 1, offsets[-1] + 6))
    assert all(m["meta"]["epoch"] == epoch for m in missed)
    fcall(redis, "org:acme", '{"type":"SYNC_SUCCESS","n":8}')
    assert d.wait_message()["data"]["n"] == 8
    assert not d.of("resync")


def test_history_client_is_told_to_resync_when_the_epoch_changed(sidecar_factory, redis,
                                                                  drivers):
    sc = sidecar_factory(extra_yaml={"history": HISTORY,
                                     "shutdown": {"reconnect_after_ms": 300,
                                                  "reconnect_jitter_ms": 300}})
    d = drivers({"options": {"url": sc.ws_url("/ws/acme"), "history": True}})
    d.wait_state("open")
    wait_until(lambda: redis.numsub("org:acme") >= 1, 10, "SUBSCRIBE org:acme")
    fcall(redis, "org:acme", '{"type":"SYNC_SUCCESS","n":0}')
    d.wait_message()
    sc.send_signal(signal.SIGTERM)
    d.wait_state("reconnecting")
    assert sc.wait_exit(30) == 0
    redis.command("FLUSHALL")  # the history and its epoch are gone
    fcall(redis, "org:acme", '{"type":"SYNC_SUCCESS","n":1}')
    sc.start()
    d.wait_state("open", timeout=20)
    ev = d.wait(lambda e: e["event"] == "resync", 10, "onResync")
    assert ev["channel"] == "org:acme" and ev["reason"] == "epoch_changed", ev
    # Nothing from the lost epoch is replayed as if it were a continuation.
    assert not [m for m in d.of("message") if m["data"].get("n") == 1]
