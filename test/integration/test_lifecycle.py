"""Process lifecycle as an operator drives it: SIGTERM drains (server_shutdown with a jittered
reconnect hint, close 1001, listener closed and /ready 503 at once, exit 0 within
shutdown.drain_timeout_ms), a second SIGTERM exits at once, and SIGHUP reloads (a broken file is
rejected and the old config keeps serving; a lowered limit applies to new connections; what cannot
change live is reported)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from harness import OP_CLOSE, SLOW, RawWs, connect_ws, free_port, read_http_response, recv_json, \
    recv_message, run, wait_until, ws_close_code
from ops_util import events, get_json, http_on, parse_prometheus, port_refuses

ROOM = "org:acme"


def rewrite_config(sc, **changes):
    """Deep-merges ``changes`` into the sidecar's generated config and writes the file again,
    so that a following SIGHUP reads it."""
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(sc.extra_yaml.get(key), dict):
            sc.extra_yaml[key] = {**sc.extra_yaml[key], **value}
        else:
            sc.extra_yaml[key] = value
    Path(sc.config_path).write_text(sc.config())


# ----------------------------------------------------------------------------- SIGTERM


def test_sigterm_sends_server_shutdown_then_close_1001_and_exits_0(sidecar_factory):
    sc = sidecar_factory(extra_yaml={"shutdown": {"reconnect_after_ms": 500,
                                                  "reconnect_jitter_ms": 3000}})

    async def main():
        clients = [await connect_ws(sc.ws_url()) for _ in range(6)]
        sc.send_signal(signal.SIGTERM)
        hints = []
        for c in clients:
            msg = await recv_json(c)
            assert msg["type"] == "server_shutdown", msg
            hints.append(msg["reconnect_after_ms"])
            assert await ws_close_code(c) == 1001
        return hints

    hints = run(main())
    assert all(isinstance(h, int) and 500 <= h <= 3500 for h in hints), hints
    # Per-client jitter: six draws from 3001 values are not all equal unless jitter is missing.
    assert len(set(hints)) > 1, f"every client got the same reconnect hint: {hints}"
    assert sc.wait_exit(10) == 0
    assert events(sc, "shutdown_started") and events(sc, "shutdown_complete")


def test_sigint_drains_like_sigterm(sidecar):
    async def main():
        c = await connect_ws(sidecar.ws_url())
        sidecar.send_signal(signal.SIGINT)
        assert (await recv_json(c))["type"] == "server_shutdown"
        assert await ws_close_code(c) == 1001

    run(main())
    assert sidecar.wait_exit(10) == 0


def test_sigterm_without_clients_exits_0_promptly(sidecar):
    t0 = time.monotonic()
    sidecar.send_signal(signal.SIGTERM)
    assert sidecar.wait_exit(5) == 0
    # Nothing to drain: no wait for drain_timeout_ms (10 s by default), nor for a sweep.
    took = time.monotonic() - t0
    assert took < 1.5 * SLOW, f"took {took:.2f} s with no client to drain"


def test_listener_closes_as_soon_as_shutdown_starts(sidecar_factory):
    # A client that never answers the close handshake keeps the sidecar draining.
    sc = sidecar_factory(extra_yaml={"shutdown": {"drain_timeout_ms": 8000},
                                     "websocket": {"close_timeout_ms": 8000}})
    ws = RawWs.connect(sc.port)
    assert ws.recv_json()["type"] == "connected"
    sc.send_signal(signal.SIGTERM)
    assert ws.recv_json()["type"] == "server_shutdown"
    close = ws.recv_message()
    assert close is not None and close.opcode == OP_CLOSE and close.close_code() == 1001
    # The close is unanswered, so the process is still draining, yet takes no new clients.
    assert sc.running()
    wait_until(lambda: port_refuses(sc.port), 5, "the main listener to close")
    assert sc.running()
    ws.close()
    assert sc.wait_exit(10) == 0


def test_ready_is_503_on_the_admin_listener_while_draining(sidecar_factory):
    """The brief's readiness check: the main listener closes at shutdown start, so /ready during
    the drain can only be seen on admin.listen. It must answer 503 until the process exits."""
    admin_port = free_port()
    sc = sidecar_factory(extra_yaml={"admin": {"listen": f"127.0.0.1:{admin_port}"},
                                     "shutdown": {"drain_timeout_ms": 8000},
                                     "websocket": {"close_timeout_ms": 8000}})
    assert get_json(admin_port, "/ready")[0] == 200
    ws = RawWs.connect(sc.port)
    assert ws.recv_json()["type"] == "connected"
    sc.send_signal(signal.SIGTERM)
    assert ws.recv_json()["type"] == "server_shutdown"
    # The client holds the drain open by not answering the close frame that follows.
    assert sc.running()
    try:
        status, _, doc = get_json(admin_port, "/ready", timeout=2)
    except OSError as e:
        raise AssertionError(
            f"admin listener closed at shutdown start ({e!r}): readiness cannot be observed "
            "during the drain") from None
    finally:
        still_draining = sc.running()
        ws.close()
    assert still_draining
    assert status == 503
    assert doc["reason"] == "shutting down"
    assert sc.wait_exit(10) == 0


def _accepted_total(admin_port: int) -> int:
    status, _, body = http_on(admin_port, "GET", "/metrics")
    assert status == 200, status
    return int(parse_prometheus(body.decode())["sidecar_connections_accepted_total"])


def test_upgrade_request_in_progress_at_sigterm_gets_503_shutting_down(sidecar_factory):
    """A client whose TCP connection was accepted before SIGTERM but whose upgrade request was not
    complete yet gets a real answer, 503 with {"error": "SHUTTING_DOWN"}, not a dropped socket;
    and the drain does not wait for it."""
    admin_port = free_port()
    sc = sidecar_factory(extra_yaml={"admin": {"listen": f"127.0.0.1:{admin_port}"},
                                     "shutdown": {"drain_timeout_ms": 8000}})
    base = _accepted_total(admin_port)  # counts its own connection
    s = sc.raw_connect()
    head = b"GET /ws/acme HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    s.sendall(head)
    # The sidecar has accepted it once accepted_total counts one more than our own polls.
    polls = iter(range(1, 1000))
    wait_until(lambda: _accepted_total(admin_port) - base - next(polls) == 1, 5 * SLOW,
               "the sidecar to accept the half-sent request")
    t0 = time.monotonic()
    sc.send_signal(signal.SIGTERM)
    try:
        status, headers, body = read_http_response(s, timeout=5 * SLOW)
    except (ConnectionError, TimeoutError) as e:
        raise AssertionError(f"no HTTP answer to an upgrade in progress at SIGTERM: {e!r}") \
            from None
    finally:
        s.close()
    assert status == 503, (status, headers, body)
    assert headers.get("content-type", "").startswith("application/json"), headers
    assert json.loads(body)["error"] == "SHUTTING_DOWN", body
    assert sc.wait_exit(10) == 0
    assert time.monotonic() - t0 < 4 * SLOW, "the drain waited for the refused request"


def test_drain_timeout_ends_a_stuck_drain_with_exit_0(sidecar_factory):
    sc = sidecar_factory(extra_yaml={"shutdown": {"drain_timeout_ms": 1500},
                                     "websocket": {"close_timeout_ms": 60000}})
    ws = RawWs.connect(sc.port)
    assert ws.recv_json()["type"] == "connected"
    t0 = time.monotonic()
    sc.send_signal(signal.SIGTERM)
    rc = sc.wait_exit(15)
    took = time.monotonic() - t0
    ws.close()
    assert rc == 0
    # Not before the deadline (the client never answered), and not much after it.
    assert 1.3 <= took < 8, took
    assert events(sc, "drain_timeout")


def test_second_sigterm_exits_at_once(sidecar_factory):
    sc = sidecar_factory(extra_yaml={"shutdown": {"drain_timeout_ms": 60000},
                                     "websocket": {"close_timeout_ms": 60000}})
    ws = RawWs.connect(sc.port)
    assert ws.recv_json()["type"] == "connected"
    sc.send_signal(signal.SIGTERM)
    sc.wait_log(r"event=shutdown_started")
    assert sc.running()
    t0 = time.monotonic()
    sc.send_signal(signal.SIGTERM)
    rc = sc.wait_exit(5)
    ws.close()
    assert time.monotonic() - t0 < 5
    assert rc == 0
    assert events(sc, "shutdown_forced")


# ----------------------------------------------------------------------------- SIGHUP


def test_reload_with_a_broken_file_is_rejected_and_keeps_serving(redis, sidecar):
    async def main():
        c = await connect_ws(sidecar.ws_url())
        wait_until(lambda: redis.numsub(ROOM) >= 1, 10, "the sidecar to subscribe")
        Path(sidecar.config_path).write_text("listen: [unclosed\nlimits:\n  max_connections: -4\n")
        sidecar.send_signal(signal.SIGHUP)
        sidecar.wait_log(r"event=reload_rejected")
        assert sidecar.running()
        assert not events(sidecar, "reloaded")
        # The old configuration keeps serving: the old client, new clients and every endpoint.
        redis.publish(ROOM, '{"type":"SYNC_SUCCESS","pfaId":"pfa-1"}')
        assert json.loads(await recv_message(c))["pfaId"] == "pfa-1"
        d = await connect_ws(sidecar.ws_url())
        assert d.welcome["type"] == "connected"
        assert sidecar.http("GET", "/ready")[0] == 200
        await c.close()
        await d.close()

    run(main())


def test_reload_applies_a_lowered_max_connections_to_new_connections(sidecar):
    async def main():
        a = await connect_ws(sidecar.ws_url())
        b = await connect_ws(sidecar.ws_url())
        rewrite_config(sidecar, limits={"max_connections": 2})
        sidecar.send_signal(signal.SIGHUP)
        sidecar.wait_log(r"event=reloaded")
        # The two open sessions stay; a third is refused with 503.
        with_upgrade = {"Upgrade": "websocket", "Connection": "Upgrade",
                        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                        "Sec-WebSocket-Version": "13"}
        status, _, body = http_on(sidecar.port, "GET", "/ws/acme", with_upgrade)
        assert (status, json.loads(body)["error"]) == (503, "AT_CAPACITY"), (status, body)
        await a.ping()
        await b.ping()
        await a.close()
        # With a slot free, the next client is admitted again.
        wait_until(lambda: get_json(sidecar.port, "/health")[2]["connections"] == 1, 5,
                   "the closed session to leave")
        c = await connect_ws(sidecar.ws_url())
        await b.close()
        await c.close()

    run(main())


def test_reload_reports_what_cannot_change_live(sidecar):
    old_port, new_port = sidecar.port, free_port()
    rewrite_config(sidecar, listen=f"127.0.0.1:{new_port}",
                   websocket={"heartbeat_ms": 7000})
    sidecar.send_signal(signal.SIGHUP)
    m = sidecar.wait_log(r"event=reloaded .*not_applied_live=(\S+)")
    assert m.group(1).split(",") == ["listen"], m.group(0)
    assert port_refuses(new_port), "the new listen address was applied live after all"
    # The old port keeps serving, and the live-changeable key took effect.
    status, _, doc = get_json(old_port, "/ws/config")
    assert status == 200
    assert doc["websocket_config"]["connection_limits"]["heartbeat_interval"] == 7000


def test_reload_reports_redis_settings_it_keeps_until_a_restart(sidecar):
    # The Redis links read their settings when they are made; a reload must say it kept them
    # rather than seem to apply a new deadline.
    rewrite_config(sidecar, redis={"url": sidecar.redis_url, "ping_interval_ms": 700,
                                   "reply_timeout_ms": 2500, "reconnect_max_ms": 900})
    sidecar.send_signal(signal.SIGHUP)
    m = sidecar.wait_log(r"event=reloaded .*not_applied_live=(\S+)")
    assert sorted(m.group(1).split(",")) == ["redis.ping_interval_ms", "redis.reconnect_max_ms",
                                             "redis.reply_timeout_ms"], m.group(0)
    assert sidecar.http("GET", "/ready")[0] == 200
