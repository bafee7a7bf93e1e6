"""GET /dashboard in a real browser: headless Chromium (browser/dashboard.js, playwright-core, the
harness test_browser.py uses) loads the page from the sidecar itself, with the admin token, while
30 clients are connected and messages flow. What the page shows, read from its elements' ids and
data-value attributes, must match /metrics and /api/websocket/status fetched by the test: within
what a second of traffic can change while messages flow, and exactly once they stop. The page
must run under its own Content-Security-Policy with no violation, no console error and no failed
request, in light and dark schemes; screenshots go to the build directory.

/dashboard is protected exactly as /api/websocket/status is: the same refusal without or with a
wrong admin token, and the same 404 on the main listener when admin.listen is set."""

from __future__ import annotations

import json
import os
import re
import selectors
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import jwt
import pytest

from harness import HOST, SLOW, RespConn, wait_until
from security_util import handshake
from test_browser import CHROMIUM, NODE_DIR, PAGE_DIR, driver_script  # noqa: F401 (a fixture)

ADMIN_TOKEN = "dashboard-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SECRET = "dashboard-test-hs256-secret-of-decent-length"
PROBLEMS = ("console_error", "page_exception", "request_failed", "csp_violation")


def build_dir() -> Path:
    d = os.environ.get("SIDECAR_BUILD_DIR")
    return Path(d) if d else Path(tempfile.gettempdir())


class Dashboard:
    """One dashboard.js process on a dashboard URL; ``cmd()`` sends one command and returns its
    answer. Problems the page reports on the way (console errors, exceptions, failed requests,
    CSP violations) are kept in ``problems``."""

    def __init__(self, script: str, url: str, headers: dict | None = None,
                 color_scheme: str = "light"):
        args = {"url": url, "headers": headers or {}, "color_scheme": color_scheme,
                "timeout_ms": int(90000 * SLOW)}
        self.proc = subprocess.Popen(["node", script, json.dumps(args)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)
        self.buf = b""
        self.problems: list[dict] = []
        self.loaded = self._next(("loaded",), 30)

    def _next(self, wanted, timeout: float) -> dict:
        deadline = time.monotonic() + timeout * SLOW
        while True:
            while b"\n" not in self.buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"dashboard.js said nothing of {wanted} in time")
                if self.sel.select(remaining):
                    chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
                    if not chunk:
                        raise EOFError("dashboard.js ended: " +
                                       self.proc.stderr.read().decode(errors="replace"))
                    self.buf += chunk
            line, self.buf = self.buf.split(b"\n", 1)
            ev = json.loads(line)
            assert ev["event"] != "driver_error", ev
            if ev["event"] in PROBLEMS:
                self.problems.append(ev)
            elif ev["event"] in wanted:
                return ev

    def cmd(self, command: dict, wanted=("done",), timeout: float = 15.0) -> dict:
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        self.proc.stdin.flush()
        return self._next(wanted, timeout)

    def read(self) -> dict:
        return self.cmd({"cmd": "read"}, ("read",))["snapshot"]

    def polls(self, n: int = 1) -> dict:
        """Waits until the page has completed n more polls, then reads it."""
        seq = self.read()["seq"]
        self.cmd({"cmd": "wait_seq", "after": seq + n - 1}, ("seq",), 15)
        return self.read()

    def end(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b'{"cmd":"quit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(15)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(10)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            f.close()
        self.sel.close()


@pytest.fixture
def dashboard(driver_script):  # noqa: F811 (the fixture imported above)
    """``dashboard(url, headers=None, color_scheme="light")``; each is ended at teardown."""
    made: list[Dashboard] = []

    def open_dashboard(url, headers=None, color_scheme="light"):
        d = Dashboard(str(PAGE_DIR / "dashboard.js"), url, headers, color_scheme)
        made.append(d)
        return d

    yield open_dashboard
    for d in made:
        d.end()


# ----------------------------------------------------------------------------- what the sidecar says


def scrape(sc) -> dict:
    """/metrics as {name or name{labels}: value}."""
    status, _, body = sc.http("GET", "/metrics", headers=AUTH)
    assert status == 200, body
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def status_doc(sc, **params) -> dict:
    q = "&".join(f"{k}={v}" for k, v in {"limit": 1000, **params}.items())
    status, _, body = sc.http("GET", f"/api/websocket/status?{q}", headers=AUTH)
    assert status == 200, body
    return json.loads(body)


def buckets(metrics: dict, name: str) -> list[tuple[float, float]]:
    out = []
    for key, v in metrics.items():
        m = re.fullmatch(re.escape(name) + r'_bucket\{le="([^"]+)"\}', key)
        if m:
            out.append((float("inf") if m.group(1) == "+Inf" else float(m.group(1)), v))
    return sorted(out)


def quantile(q: float, bs: list[tuple[float, float]]) -> float | None:
    """Prometheus's histogram_quantile over cumulative buckets, written independently of the
    page's JavaScript."""
    total = bs[-1][1] if bs else 0
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_cum = 0.0, 0.0
    for le, cum in bs:
        if cum >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_cum) / (cum - prev_cum)
        prev_le, prev_cum = le, cum
    return prev_le


def value(snap: dict, id_: str) -> float | None:
    v = snap["values"][id_]["value"]
    return None if v == "" else float(v) if v not in ("up", "down") else v


# ----------------------------------------------------------------------------- traffic


def mint(org: str, sub: str) -> str:
    return jwt.encode({"org": org, "sub": sub, "exp": int(time.time()) + 600}, SECRET,
                      algorithm="HS256")


def connect(sc, org: str, sub: str):
    ans = handshake(sc.port, f"/ws/{org}", {"Authorization": f"Bearer {mint(org, sub)}"})
    assert ans.status == 101, ans
    assert ans.ws.recv_json()["type"] == "connected"
    return ans.ws


class Publisher(threading.Thread):
    """PUBLISHes small messages to org:acme and org:beta at about ``rate`` per second until
    stopped. The pacing is the load this test generates, not a wait for anything."""

    def __init__(self, port: int, rate: float = 100.0):
        super().__init__(daemon=True)
        self.conn = RespConn(port)
        self.rate = rate
        self.stop_flag = threading.Event()
        self.sent = 0

    def run(self):
        start = time.monotonic()
        while not self.stop_flag.is_set():
            org = "acme" if self.sent % 3 else "beta"
            self.conn.command("PUBLISH", f"org:{org}", '{"type":"TICK","n":%d}' % self.sent)
            self.sent += 1
            ahead = start + self.sent / self.rate - time.monotonic()
            if ahead > 0:
                self.stop_flag.wait(ahead)

    def stop(self):
        self.stop_flag.set()
        self.join(10)
        self.conn.close()


# ----------------------------------------------------------------------------- tests


def test_dashboard_numbers_match_status_and_metrics(sidecar_factory, redis, dashboard):
    sc = sidecar_factory(extra_yaml={
        "admin": {"token": ADMIN_TOKEN},
        "auth": {"mode": "jwt", "jwt": {"algorithms": ["HS256"], "secret": SECRET}},
        "limits": {"max_outbound_bytes": 65536},
    })
    # Refusals of three kinds, so that the table has non-zero rows to match.
    assert sc.http("GET", "/nowhere")[0] == 404
    assert handshake(sc.port, "/ws/acme").status == 401
    assert handshake(sc.port, "/ws/bad!org").status == 400
    # One slow consumer: it never reads while 8 MiB are published to its room.
    slow = connect(sc, "slow", "sloth")
    wait_until(lambda: redis.numsub("org:slow") >= 1, 10 * SLOW, "SUBSCRIBE org:slow")
    big = b"x" * 65000
    for _ in range(256):
        redis.publish("org:slow", big)
    wait_until(lambda: scrape(sc)["sidecar_slow_consumer_closes_total"] == 1, 20 * SLOW,
               "the slow consumer to be closed")
    slow.close()
    # 30 clients: 25 on a page, so the table has a second one.
    clients = [connect(sc, "acme", "alice") for _ in range(10)]
    clients += [connect(sc, "acme", "bob") for _ in range(10)]
    clients += [connect(sc, "beta", "carol") for _ in range(10)]
    wait_until(lambda: redis.numsub("org:beta") >= 1, 10 * SLOW, "SUBSCRIBE org:beta")

    pub = Publisher(redis.port)
    pub.start()
    try:
        d = dashboard(f"http://{HOST}:{sc.port}/dashboard", headers=AUTH)
        assert d.loaded["status"] == 200, d.loaded
        csp = d.loaded["headers"]["content-security-policy"]
        assert "default-src 'none'" in csp and "unsafe" not in csp, csp

        # While messages flow: the page's totals trail the sidecar's by at most what a few
        # seconds of traffic adds, and its rate is the publisher's, give or take a poll.
        snap = wait_until(lambda: (lambda s: s if (value(s, "msg-rate") or 0) > 0 else None)(
            d.polls()), 15 * SLOW, "a message rate on the page")
        before, t0 = scrape(sc), time.monotonic()
        snap = d.polls(2)  # the second of them began after `before` was scraped
        after, t1 = scrape(sc), time.monotonic()
        real_rate = (after["sidecar_redis_messages_total"] -
                     before["sidecar_redis_messages_total"]) / (t1 - t0)
        shown_total = float(snap["values"]["msg-rate"]["total"])
        assert before["sidecar_redis_messages_total"] <= shown_total \
            <= after["sidecar_redis_messages_total"], (shown_total, before, after)
        assert 0.4 * real_rate <= value(snap, "msg-rate") <= 2.5 * real_rate, \
            (value(snap, "msg-rate"), real_rate)
        assert value(snap, "frame-rate") > value(snap, "msg-rate")  # each goes to 10+ clients
        assert value(snap, "bytes-rate") > 0
        assert value(snap, "p99") is not None and value(snap, "p99") > 0
        assert value(snap, "connections") == 30
        for chart in ("chart-msg-rate", "chart-connections", "chart-bytes-rate"):
            c = snap["canvases"][chart]  # more ink than the baseline alone: a drawn series
            assert c["inked"] > 3 * c["width"], (chart, c)
        # The screenshot shows traffic (docs/dashboard.png is one of these).
        shot = build_dir() / "dashboard.png"
        d.cmd({"cmd": "screenshot", "path": str(shot)}, timeout=30)
        assert shot.stat().st_size > 10000
    finally:
        pub.stop()

    # Once the traffic stops and the page has polled twice more, everything matches exactly.
    # Redis delivers to the sidecar in PUBLISH order, so once a last publication reaches a
    # client, every earlier one has reached the sidecar.
    redis.publish("org:acme", "LAST")
    while clients[0].recv_message(10 * SLOW).payload != b"LAST":
        pass
    d.polls(2)
    snap = d.read()
    metrics, st = scrape(sc), status_doc(sc)
    summary = st["summary"]
    assert value(snap, "connections") == summary["activeConnections"] == \
        metrics["sidecar_connections_open"] == 30
    assert value(snap, "rooms") == summary["rooms"] == metrics["sidecar_rooms"]
    assert value(snap, "redis-subscriptions") == metrics["sidecar_redis_subscriptions"]
    assert value(snap, "redis-state") == "up" and summary["redisConnected"] is True
    assert value(snap, "redis-reconnects") == metrics["sidecar_redis_reconnects_total"]
    assert value(snap, "slow-closes") == metrics["sidecar_slow_consumer_closes_total"] == \
        summary["slowConsumerCloses"] == 1
    assert value(snap, "msg-rate") == 0 and value(snap, "frame-rate") == 0
    for id_, name in [("total-messages", "sidecar_redis_messages_total"),
                      ("total-frames", "sidecar_frames_delivered_total"),
                      ("total-upgraded", "sidecar_connections_upgraded_total"),
                      ("total-inbound", "sidecar_inbound_messages_total"),
                      ("total-internal", "sidecar_internal_errors_total")]:
        assert value(snap, id_) == metrics[name], (id_, value(snap, id_), metrics[name])
    assert value(snap, "total-messages") == summary["totalMessages"]
    refusals = {k[len('sidecar_connections_refused_total{reason="'):-2]: v
                for k, v in metrics.items() if k.startswith("sidecar_connections_refused_total{")}
    assert snap["refusals"] == refusals
    assert refusals["not_found"] == 1 and refusals["unauthorized"] == 1 \
        and refusals["bad_request"] == 1
    # The latency since start is the histogram's own estimate; the page computes it in
    # JavaScript and this test in Python, from the same buckets.
    bs = buckets(metrics, "sidecar_fanout_latency_seconds")
    for id_, q in (("p50-all", 0.5), ("p99-all", 0.99)):
        assert value(snap, id_) == pytest.approx(quantile(q, bs), rel=1e-9), id_
    assert value(snap, "queued-bytes") == metrics["sidecar_queued_bytes"]

    # The connection table: the first page of 25 of 30, every row as the status endpoint has it.
    conns = {c["id"]: c for c in st["connections"]}
    assert snap["page"]["matched"] == "30" and len(snap["rows"]) == 25, snap["page"]
    now_ms = time.time() * 1000
    for row in snap["rows"]:
        c = conns[row["id"]]
        assert (row["org"], row["user"], row["ip"]) == (c["org"], c["user"],
                                                         c["clientInfo"]["ip"]), (row, c)
        assert int(row["sent"]) == c["messagesSent"] > 0
        assert int(row["queued"]) == c["queuedBytes"]
        assert "queuedFrames" in c
        age = (now_ms - _iso_ms(c["connectedAt"])) / 1000
        assert abs(int(row["connected-for"]) - age) <= 3 * SLOW, (row, age)
    d.cmd({"cmd": "click", "selector": "#next"})
    snap = wait_until(lambda: (lambda s: s if s["page"]["offset"] == "25" else None)(d.polls()),
                      10 * SLOW, "the second page")
    assert len(snap["rows"]) == 5
    # The filter goes to the sidecar (?q=) and pages from the start.
    d.cmd({"cmd": "fill", "selector": "#filter", "value": "bob"})
    snap = wait_until(lambda: (lambda s: s if s["page"]["matched"] == "10" else None)(d.polls()),
                      10 * SLOW, "the filtered table")
    assert snap["page"]["offset"] == "0" and {r["user"] for r in snap["rows"]} == {"bob"}
    assert status_doc(sc, q="bob")["page"]["matched"] == 10
    d.cmd({"cmd": "fill", "selector": "#filter", "value": ""})
    wait_until(lambda: d.polls()["page"]["matched"] == "30", 10 * SLOW, "the filter cleared")

    assert d.problems == [], d.problems

    # The dark scheme is its own palette, and it runs under the same policy without a problem.
    dark = dashboard(f"http://{HOST}:{sc.port}/dashboard", headers=AUTH, color_scheme="dark")
    dark_snap = dark.polls()
    assert dark_snap["background"] != snap["background"], (dark_snap["background"],
                                                           snap["background"])
    dark.cmd({"cmd": "screenshot", "path": str(build_dir() / "dashboard-dark.png")}, timeout=30)
    assert dark.problems == [], dark.problems
    for ws in clients:
        ws.close()


def _iso_ms(text: str) -> float:
    from datetime import datetime, timezone
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=timezone.utc).timestamp() * 1000


def test_a_browser_without_the_admin_token_gets_the_status_endpoints_401(sidecar_factory,
                                                                          dashboard):
    sc = sidecar_factory(extra_yaml={"admin": {"token": ADMIN_TOKEN}})
    d = dashboard(f"http://{HOST}:{sc.port}/dashboard")
    assert d.loaded["status"] == 401
    assert d.loaded["headers"]["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("headers", [None, {"Authorization": "Bearer wrong"},
                                     {"Authorization": ADMIN_TOKEN}])
def test_dashboard_is_refused_exactly_as_the_status_endpoint(sidecar_factory, headers):
    sc = sidecar_factory(extra_yaml={"admin": {"token": ADMIN_TOKEN}})
    want = sc.http("GET", "/api/websocket/status", headers=headers)
    got = sc.http("GET", "/dashboard", headers=headers)
    assert want[0] == 401
    assert (got[0], got[1].get("www-authenticate"), got[2]) == \
        (want[0], want[1].get("www-authenticate"), want[2])
    ok = sc.http("GET", "/dashboard", headers=AUTH)
    assert ok[0] == 200 and ok[1]["content-type"] == "text/html; charset=utf-8"


def test_dashboard_lives_on_the_admin_listener_when_there_is_one(sidecar_factory, dashboard):
    from harness import free_port
    admin_port = free_port()
    sc = sidecar_factory(extra_yaml={"admin": {"listen": f"{HOST}:{admin_port}"}})
    want = sc.http("GET", "/api/websocket/status")
    got = sc.http("GET", "/dashboard")
    assert want[0] == 404
    assert (got[0], got[2]) == (want[0], want[2])
    # On the admin listener it needs no token, so a browser reaches it directly.
    d = dashboard(f"http://{HOST}:{admin_port}/dashboard")
    assert d.loaded["status"] == 200
    snap = d.polls()
    assert snap["error"] == "" and value(snap, "connections") == 0
    assert value(snap, "redis-state") == "up"
    assert d.problems == [], d.problems
