"""client/sidecar-client.js in a real browser: headless Chromium (driven by browser/drive.js, as in
test_browser.py) loads browser/client_page.html, which imports the client from the sidecar's own
GET /client.js. The page receives publishes, dispatches on their type, rides out a SIGTERM and
restart of the sidecar (waiting the server_shutdown hint), sends what was queued meanwhile, stops
on a refused token although the browser never shows it the 401, refreshes its token in-band, and
reconnects with a fresh one when a refresh is refused. With `history: true` it resumes across the
restart and misses nothing; taken offline (DevTools network emulation), it waits for "online"
instead of spending attempts and reconnects as soon as it fires.

The page is served by a small http.server on another loopback port, so it is another origin than
the sidecar: its module import (always a CORS fetch) and its discovery request prove the
sidecar's Access-Control-Allow-Origin answers, as an app hosted apart from the sidecar needs."""

from __future__ import annotations

import http.server
import json
import re
import signal
import threading
import time
import urllib.parse

import jwt
import pytest

from client_util import cmake_version
from harness import HOST, SLOW, wait_until
from test_browser import DRIVER_TIMEOUT_MS, PAGE_DIR, BrowserRun, driver_script  # noqa: F401

SECRET = "client-browser-test-secret-of-decent-length"


class _ClientPageHandler(http.server.BaseHTTPRequestHandler):
    """/client_page.html only; nothing else of the repository is served (the client itself comes
    from the sidecar)."""

    FILES = {"/client_page.html": (PAGE_DIR / "client_page.html", "text/html; charset=utf-8")}

    def do_GET(self):  # noqa: N802 - the base class names it so
        path = urllib.parse.urlsplit(self.path).path
        if path not in self.FILES:
            self.send_error(404)
            return
        file, ctype = self.FILES[path]
        body = file.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002
        pass


@pytest.fixture(scope="module")
def client_page_server():
    # The app's own origin: a port other than the sidecar's.
    server = http.server.ThreadingHTTPServer((HOST, 0), _ClientPageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def page(driver_script, client_page_server):  # noqa: F811 - the fixture imported above
    """``page(ws_url, **params)`` opens client_page.html in its own Chromium; all are ended at
    teardown."""
    started: list[PageRun] = []

    def open_page(ws_url: str, **params):
        query = urllib.parse.urlencode({"ws": ws_url, **{k: str(v) for k, v in params.items()}})
        run = PageRun(driver_script, {"page_url": f"{client_page_server}/client_page.html?{query}",
                                      "timeout_ms": DRIVER_TIMEOUT_MS})
        started.append(run)
        return run

    yield open_page
    for run in started:
        run.end()


class PageRun(BrowserRun):
    """A BrowserRun whose events can be waited for by predicate."""

    def wait(self, pred, timeout: float = 15.0, what: str = "page event") -> dict:
        deadline = time.monotonic() + timeout * SLOW
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"waiting for {what}; so far {self.seen}")
            ev = self.event(remaining / SLOW)
            if pred(ev):
                return ev

    def wait_state(self, state: str, timeout: float = 15.0) -> dict:
        return self.wait(lambda e: e["event"] == "state" and e["state"] == state, timeout,
                         f"state {state}")

    def command(self, line: str) -> dict:
        """A driver command ("offline", "online"); returns its acknowledgement."""
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        return self.wait(lambda e: e["event"] == "driver" and e["did"] == line, 10, line)

    def close_page(self):
        self.proc.stdin.write(b"close\n")
        self.proc.stdin.flush()
        self.wait(lambda e: e["event"] == "close", 15, "close")


def metric(sc, name: str) -> float:
    status, _, body = sc.http("GET", "/metrics")
    assert status == 200, body
    m = re.search(rf"^{re.escape(name)} (\S+)$", body.decode(), re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def test_page_receives_publishes_and_comes_back_after_a_restart(sidecar_factory, redis, page):
    sc = sidecar_factory(extra_yaml={"inbound": {"stream": "inbound:{org}"},
                                     "shutdown": {"reconnect_after_ms": 500,
                                                  "reconnect_jitter_ms": 1000}})
    run = page(sc.ws_url("/ws/acme"), queue=5, base=200)
    version = run.wait(lambda e: e["event"] == "version")
    assert version["version"] == cmake_version()
    opened = run.wait_state("open")
    assert opened["connectionId"]
    wait_until(lambda: redis.numsub("org:acme") >= 1, 10 * SLOW, "SUBSCRIBE org:acme")
    redis.publish("org:acme", '{"type":"SYNC_SUCCESS","pfaId":"pfa-1"}')
    m = run.wait(lambda e: e["event"] == "message")
    assert m["data"] == {"type": "SYNC_SUCCESS", "pfaId": "pfa-1"} and not m["meta"]["binary"]
    assert run.wait(lambda e: e["event"] == "typed")["payload"]["pfaId"] == "pfa-1"

    sc.send_signal(signal.SIGTERM)
    hint = run.wait(lambda e: e["event"] == "control" and e["type"] == "server_shutdown"
                    )["payload"]["reconnect_after_ms"]
    lost = run.wait_state("reconnecting")
    assert lost["reason"] == "server_shutdown" and lost["delayMs"] == hint, lost
    assert 500 <= hint <= 1500
    # The page sends five notes while disconnected: all wait in the queue.
    queued = run.wait(lambda e: e["event"] == "queued")
    assert queued["now"] == [False] * 5 and queued["queued"] == 5, queued
    assert sc.wait_exit(30) == 0
    sc.start()

    back = run.wait_state("open", 20)
    assert back["connectionId"] != opened["connectionId"]
    assert back["t"] - lost["t"] >= hint - 50, (back["t"] - lost["t"], hint)
    wait_until(lambda: redis.numsub("org:acme") >= 1, 10 * SLOW, "SUBSCRIBE after the restart")
    redis.publish("org:acme", '{"type":"SYNC_SUCCESS","pfaId":"pfa-2"}')
    assert run.wait(lambda e: e["event"] == "message")["data"]["pfaId"] == "pfa-2"
    wait_until(lambda: redis.command("XLEN", "inbound:acme") == 5, 10 * SLOW, "the queued notes")
    seqs = [json.loads(dict(zip(f[::2], f[1::2]))[b"data"])["seq"]
            for _id, f in redis.command("XRANGE", "inbound:acme", "-", "+")]
    assert seqs == [0, 1, 2, 3, 4], seqs
    run.close_page()


def test_page_with_a_refused_token_stops_instead_of_hammering(sidecar_factory, page):
    # The browser only ever sees 1006 before open. After three failed attempts the client asks
    # whether the sidecar answers HTTP at all; it does, so one more attempt, then "closed".
    sc = sidecar_factory(extra_yaml={"auth": {"mode": "jwt", "jwt": {
        "algorithms": ["HS256"], "secret": SECRET}}})
    bad = jwt.encode({"org": "acme", "sub": "alice", "exp": int(time.time()) + 300},
                     "another-secret-of-some-decent-length", algorithm="HS256")
    run = page(sc.ws_url("/ws/acme"), token=bad, base=100)
    closed = run.wait_state("closed", 30)
    assert closed["reason"] == "handshake_refused" and closed["probe"] == "reachable", closed
    name = 'sidecar_connections_refused_total{reason="unauthorized"}'
    assert metric(sc, name) == 4
    assert metric(sc, "sidecar_connections_upgraded_total") == 0
    run.close_page()
    # Nothing was left scheduled: the count is the same once the page is gone.
    assert metric(sc, name) == 4


def refresh_config(warning_s: int) -> dict:
    return {"auth": {"mode": "jwt", "on_expiry": "close", "expiry_warning_s": warning_s,
                     "jwt": {"algorithms": ["HS256"], "secret": SECRET, "leeway_s": 0}}}


def browser_token(sub="alice", exp=None) -> str:
    return jwt.encode({"org": "acme", "sub": sub, "exp": exp or int(time.time()) + 3600}, SECRET,
                      algorithm="HS256")


def test_page_refreshes_its_token_in_band_and_keeps_the_connection(sidecar_factory, redis, page):
    # Discovery from the page's origin too: /ws/config answers it with CORS.
    sc = sidecar_factory(extra_yaml=refresh_config(warning_s=6))
    short_exp, long_exp = int(time.time()) + 9, int(time.time()) + 3600
    run = page(sc.ws_url("/ws/acme"), discovery=1,
               tokens=json.dumps([browser_token(exp=short_exp), browser_token(exp=long_exp)]))
    opened = run.wait_state("open", 20)
    run.wait(lambda e: e["event"] == "control" and e["type"] == "token_expiring", 15)
    refreshed = run.wait(lambda e: e["event"] == "control" and e["type"] == "refreshed", 10)
    assert refreshed["payload"]["expires_at"] == long_exp
    wait_until(lambda: time.time() > short_exp + 1.5, 15 * SLOW, "the old token's exp to pass")
    wait_until(lambda: redis.numsub("org:acme") >= 1, 10 * SLOW, "SUBSCRIBE org:acme")
    redis.publish("org:acme", '{"type":"SYNC_SUCCESS","after":"refresh"}')
    assert run.wait(lambda e: e["event"] == "message")["data"]["after"] == "refresh"
    states = [e["state"] for e in run.seen if e["event"] == "state"]
    assert states == ["connecting", "open"], states
    assert opened["connectionId"]
    run.close_page()


def test_page_with_a_refused_refresh_reconnects_with_a_fresh_token(sidecar_factory, page):
    # getToken's second token names another user: the sidecar refuses that refresh with
    # USER_MISMATCH and the client reconnects at once with it (the handshake accepts bob).
    sc = sidecar_factory(extra_yaml=refresh_config(warning_s=6))
    run = page(sc.ws_url("/ws/acme"), tokens=json.dumps(
        [browser_token(exp=int(time.time()) + 9), browser_token(sub="bob")]))
    first = run.wait(lambda e: e["event"] == "control" and e["type"] == "connected", 20)
    assert first["payload"]["user"] == "alice"
    # The client acts on the error frame before its listeners see it: the state comes first.
    lost = run.wait_state("reconnecting", 15)
    assert lost["reason"] == "token_refresh_failed" and lost["error"] == "USER_MISMATCH", lost
    err = run.wait(lambda e: e["event"] == "control" and e["type"] == "error")["payload"]
    assert err["code"] == "USER_MISMATCH" and err["recoverable"] is True, err
    second = run.wait(lambda e: e["event"] == "control" and e["type"] == "connected", 15)
    assert second["payload"]["user"] == "bob"
    assert second["payload"]["connection_id"] != first["payload"]["connection_id"]
    run.close_page()


HISTORY = [{"channel": "org:{org}", "size": 1000, "ttl_s": 3600, "max_recover": 300}]


def fcall(redis, channel: str, payload: str) -> int:
    return redis.command("FCALL", "sidecar_publish", 1, channel, payload)


def test_page_with_history_loses_nothing_across_a_restart(sidecar_factory, redis, page):
    # Issue 12's "with history on, nothing is lost across the restart", in Chromium: the page
    # resumes with its positions (recover=org:acme@epoch:offset) and gets every message published
    # while the sidecar was down exactly once and in order, then live ones; no onResync.
    sc = sidecar_factory(extra_yaml={"history": HISTORY,
                                     "shutdown": {"reconnect_after_ms": 300,
                                                  "reconnect_jitter_ms": 300}})
    run = page(sc.ws_url("/ws/acme"), history=1, base=200)
    opened = run.wait_state("open")
    assert opened["protocol"] == "sidecar.v1", opened
    first = run.wait(lambda e: e["event"] == "control" and e["type"] == "connected")["payload"]
    wait_until(lambda: redis.numsub("org:acme") >= 1, 10 * SLOW, "SUBSCRIBE org:acme")
    for i in range(3):
        fcall(redis, "org:acme", '{"type":"SYNC_SUCCESS","n":%d}' % i)
    got = [run.wait(lambda e: e["event"] == "message", 10, f"message {i}") for i in range(3)]
    assert [m["data"]["n"] for m in got] == [0, 1, 2], got
    offsets = [m["meta"]["offset"] for m in got]
    assert offsets == list(range(offsets[0], offsets[0] + 3)), offsets
    epoch = got[0]["meta"]["epoch"]
    assert all(m["meta"]["channel"] == "org:acme" and m["meta"]["epoch"] == epoch for m in got)

    sc.send_signal(signal.SIGTERM)
    hint = run.wait(lambda e: e["event"] == "control" and e["type"] == "server_shutdown"
                    )["payload"]["reconnect_after_ms"]
    lost = run.wait_state("reconnecting")
    assert lost["reason"] == "server_shutdown" and lost["delayMs"] == hint, lost
    assert 300 <= hint <= 600, hint  # reconnect_after_ms plus up to reconnect_jitter_ms
    assert sc.wait_exit(30) == 0
    for i in range(3, 8):  # published while the page has no sidecar to talk to
        fcall(redis, "org:acme", '{"type":"SYNC_SUCCESS","n":%d}' % i)
    sc.start()
    up_ms = time.time() * 1000  # the page's "t" is Date.now() on this same machine

    back = run.wait_state("open", 20)
    assert back["connectionId"] != opened["connectionId"] and back["protocol"] == "sidecar.v1"
    # It waited the hint it was given, and came back soon once the sidecar was up again: an
    # attempt made while the sidecar was still down costs at most a short backoff (base 200 ms).
    assert back["t"] - lost["t"] >= hint - 50, (back["t"] - lost["t"], hint)
    assert back["t"] - max(up_ms, lost["t"] + hint) < 3000, (back["t"], up_ms, lost["t"], hint)
    welcome = run.wait(lambda e: e["event"] == "control" and e["type"] == "connected"
                       and e["payload"]["connection_id"] != first["connection_id"], 10,
                       "the second welcome")["payload"]
    assert welcome["channels"]["org:acme"]["recovered"] is True, welcome
    missed = [run.wait(lambda e: e["event"] == "message", 10, f"missed message {i}")
              for i in range(5)]
    assert [m["data"]["n"] for m in missed] == [3, 4, 5, 6, 7], missed
    assert [m["meta"]["offset"] for m in missed] == list(range(offsets[-1] + 1, offsets[-1] + 6))
    assert all(m["meta"]["epoch"] == epoch for m in missed)
    fcall(redis, "org:acme", '{"type":"SYNC_SUCCESS","n":8}')
    live = run.wait(lambda e: e["event"] == "message", 10, "the live message")
    assert live["data"]["n"] == 8 and live["meta"]["offset"] == offsets[-1] + 6, live
    run.close_page()
    # Everything the page saw, read to its "close": each message once, and no resync.
    ns = [e["data"]["n"] for e in run.seen if e["event"] == "message"]
    assert ns == list(range(9)), ns
    assert not [e for e in run.seen if e["event"] == "resync"], run.seen


def test_page_waits_for_online_when_offline_and_reconnects_when_it_fires(sidecar_factory, redis,
                                                                        page):
    # Chromium's DevTools network emulation (Playwright's setOffline) really takes the network
    # away: navigator.onLine turns false, the window gets "offline", and the open WebSocket goes
    # silent although neither end closed it. The client probes with a ping on "offline", gives
    # up when no pong comes, and waits for "online" without spending attempts (its backoff here
    # would be up to 20 s); on "online" it reconnects at once and, with history, gets what was
    # published meanwhile.
    sc = sidecar_factory(extra_yaml={"history": HISTORY})
    run = page(sc.ws_url("/ws/acme"), history=1, base=20000, pong=1000)
    opened = run.wait_state("open")
    wait_until(lambda: redis.numsub("org:acme") >= 1, 10 * SLOW, "SUBSCRIBE org:acme")
    fcall(redis, "org:acme", '{"type":"SYNC_SUCCESS","n":0}')
    first = run.wait(lambda e: e["event"] == "message")
    assert first["data"]["n"] == 0

    run.command("offline")
    net = run.wait(lambda e: e["event"] == "net", 5, "the offline event")
    assert net == {**net, "type": "offline", "online": False}, net
    fcall(redis, "org:acme", '{"type":"SYNC_SUCCESS","n":1}')  # cannot reach the page now
    lost = run.wait_state("reconnecting", 10)
    assert lost["reason"] == "ping_timeout" and lost["waiting"] == "online", lost
    assert lost["attempt"] == 0 and "delayMs" not in lost, lost
    assert lost["t"] - net["t"] >= 1000 - 50, (lost["t"], net["t"])
    # The sidecar still holds the silent connection: nothing closed it.
    assert redis.numsub("org:acme") == 1
    assert not [m for m in run.seen if m["event"] == "message" and m["data"]["n"] == 1]

    run.command("online")
    net = run.wait(lambda e: e["event"] == "net", 5, "the online event")
    assert net == {**net, "type": "online", "online": True}, net
    back = run.wait_state("open", 5)
    assert back["connectionId"] != opened["connectionId"]
    assert back["t"] - net["t"] < 2000, (back["t"], net["t"])
    welcome = run.wait(lambda e: e["event"] == "control" and e["type"] == "connected"
                       and e["payload"]["connection_id"] == back["connectionId"], 5)["payload"]
    assert welcome["channels"]["org:acme"]["recovered"] is True, welcome
    assert run.wait(lambda e: e["event"] == "message", 5, "the missed message")["data"]["n"] == 1
    # Between going offline and "online" the client made no attempt: no "reconnecting" with a
    # delay and no failed attempt, only the one that succeeded once "online" fired.
    states = [(e["state"], e.get("reason")) for e in run.seen if e["event"] == "state"]
    assert states == [("connecting", "start"), ("open", "welcome"),
                      ("reconnecting", "ping_timeout"), ("open", "welcome")], states
    run.close_page()
    ns = [e["data"]["n"] for e in run.seen if e["event"] == "message"]
    assert ns == [0, 1], ns
    assert not [e for e in run.seen if e["event"] == "resync"], run.seen
