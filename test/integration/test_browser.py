"""The sidecar as seen by a real browser: headless Chromium (Debian's /usr/bin/chromium, driven by
playwright-core through browser/drive.js) loads browser/page.html from a local http.server and
opens a WebSocket to the sidecar. Only a browser proves these: it sends its own Origin header and
cannot be talked out of it, it checks the subprotocol the server echoes, it attaches cookies by
itself, and it hands binary frames to JavaScript as ArrayBuffers."""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import re
import selectors
import shutil
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import jwt
import pytest

from harness import HOST, SLOW, wait_until

HERE = Path(__file__).resolve().parent
PAGE_DIR = HERE / "browser"
NODE_DIR = HERE / "node"
CHROMIUM = "/usr/bin/chromium"
SECRET = "browser-test-hs256-secret-of-decent-length"
# Every browser run ends well within this; the test's own waits are shorter.
DRIVER_TIMEOUT_MS = int(30000 * SLOW)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def driver_script():
    """drive.js, once chromium and playwright-core are known to be installed."""
    assert shutil.which("node"), "node is not installed: run scripts/bootstrap.sh"
    assert os.access(CHROMIUM, os.X_OK), \
        f"{CHROMIUM} is missing: run scripts/bootstrap.sh (Debian package chromium)"
    if not (NODE_DIR / "node_modules" / "playwright-core").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True,
                       timeout=300, env={**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"})
    return str(PAGE_DIR / "drive.js")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class names it so
        pass


@pytest.fixture(scope="module")
def page_server():
    """http://127.0.0.1:<free port>/ serving browser/, so the page has a real http origin."""
    handler = functools.partial(_QuietHandler, directory=str(PAGE_DIR))
    server = http.server.ThreadingHTTPServer((HOST, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def browser(driver_script, page_server):
    """``browser(ws_url, proto=None, cookies=None)`` starts one Chromium on page.html; every one
    started is ended at teardown."""
    started: list[BrowserRun] = []

    def open_page(ws_url: str, proto: list[str] | None = None, cookies: list | None = None):
        query = {"ws": ws_url, "binary": "arraybuffer"}
        if proto:
            query["proto"] = ",".join(proto)
        url = f"{page_server}/page.html?{urllib.parse.urlencode(query)}"
        run = BrowserRun(driver_script, {"page_url": url, "cookies": cookies or [],
                                         "timeout_ms": DRIVER_TIMEOUT_MS})
        started.append(run)
        return run

    yield open_page
    for run in started:
        run.end()


class BrowserRun:
    """One drive.js process: ``event()`` returns the page's next event as a dict."""

    def __init__(self, script: str, args: dict):
        self.proc = subprocess.Popen(["node", script, json.dumps(args)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)
        self.buf = b""
        self.seen: list[dict] = []

    def event(self, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout * SLOW
        while b"\n" not in self.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no event from the browser; so far {self.seen}")
            if self.sel.select(remaining):
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise EOFError(f"drive.js ended after {self.seen}: "
                                   f"{self.proc.stderr.read().decode(errors='replace')}")
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        ev = json.loads(line)
        self.seen.append(ev)
        assert ev["event"] not in ("driver_error", "page_error", "page_exception", "timeout"), ev
        return ev

    def page_event(self, timeout: float = 15.0) -> dict:
        """The next event the page itself recorded (the driver's "loaded" is skipped)."""
        ev = self.event(timeout)
        return self.event(timeout) if ev["event"] == "loaded" else ev

    def message(self, timeout: float = 10.0) -> dict:
        ev = self.page_event(timeout)
        assert ev["event"] == "message", f"expected a message, got {ev}; so far {self.seen}"
        return ev

    def welcome(self) -> dict:
        opened = self.page_event()
        assert opened["event"] == "open", f"the browser did not connect: {self.seen}"
        ev = self.message()
        assert ev["binary"] is False, ev
        welcome = json.loads(ev["text"])
        assert welcome["type"] == "connected", welcome
        return welcome

    def close_socket(self) -> dict:
        """Has the page close its WebSocket with 1000 and returns the page's close event."""
        self.proc.stdin.write(b"close\n")
        self.proc.stdin.flush()
        ev = self.page_event()
        assert ev["event"] == "close", f"expected close, got {ev}; so far {self.seen}"
        return ev

    def end(self):
        """Ends drive.js (it closes Chromium on SIGTERM) and waits for it, bounded."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            f.close()
        self.sel.close()


# ----------------------------------------------------------------------------- helpers


def mint(secret: str = SECRET, **claims) -> str:
    """An HS256 token for org acme, user alice, valid for five minutes unless overridden."""
    body = {"sub": "alice", "org": "acme", "exp": int(time.time()) + 300, **claims}
    return jwt.encode(body, secret, algorithm="HS256")


def jwt_config(sources: list[str], cookie_name: str = "token") -> dict:
    return {"auth": {"mode": "jwt", "jwt": {"algorithms": ["HS256"], "secret": SECRET},
                     "token_sources": sources, "cookie_name": cookie_name}}


def wait_subscribed(redis, channel: str):
    """The welcome can reach the page before Redis confirms SUBSCRIBE; publish only after it."""
    wait_until(lambda: redis.numsub(channel) >= 1, 10 * SLOW, f"a subscriber on {channel}")


def metric(sc, name: str) -> float:
    status, _, body = sc.http("GET", "/metrics")
    assert status == 200, body
    m = re.search(rf"^{re.escape(name)} (\S+)$", body.decode(), re.MULTILINE)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def assert_refused_in_browser(run):
    """A refused handshake reaches the page as error, then close 1006 (never open)."""
    events = [run.page_event(), run.page_event()]
    assert [e["event"] for e in events] == ["error", "close"], run.seen
    assert events[1]["code"] == 1006 and events[1]["was_clean"] is False, events[1]


# ----------------------------------------------------------------------------- tests


def test_page_from_allowed_origin_receives_welcome_and_published_text(
        sidecar_factory, redis, browser):
    # allow_missing false: admission proves Chromium sent an Origin header, and that it matched.
    sc = sidecar_factory(extra_yaml={"origins": {"allowed": [f"http://{HOST}:*"],
                                                 "allow_missing": False}})
    run = browser(sc.ws_url("/ws/acme"))
    welcome = run.welcome()
    assert welcome["org"] == "acme" and welcome["user"] is None, welcome
    assert welcome["connection_id"], welcome
    wait_subscribed(redis, "org:acme")
    payload = '{"type":"SYNC_SUCCESS","pfaId":"pfa-123","name":"Zoë ✓ 𝄞"}'
    assert redis.publish("org:acme", payload.encode()) >= 1
    ev = run.message()
    assert ev == {"event": "message", "binary": False, "text": payload}
    closed = run.close_socket()
    assert closed["code"] == 1000 and closed["was_clean"] is True, closed


def test_page_from_foreign_origin_is_refused_with_403(sidecar_factory, browser):
    sc = sidecar_factory(extra_yaml={"origins": ["https://app.example.com"]})
    before = metric(sc, 'sidecar_connections_refused_total{reason="forbidden"}')
    run = browser(sc.ws_url("/ws/acme"))
    assert_refused_in_browser(run)
    sc.wait_log(r"event=refused .*status=403 .*code=ORIGIN_NOT_ALLOWED")
    assert metric(sc, 'sidecar_connections_refused_total{reason="forbidden"}') == before + 1
    assert metric(sc, "sidecar_connections_upgraded_total") == 0


def test_jwt_in_subprotocol_is_accepted_and_bearer_is_echoed(sidecar_factory, redis, browser):
    # Only the subprotocol source is on, so admission can only have used the browser's offer.
    sc = sidecar_factory(extra_yaml=jwt_config(["subprotocol"]))
    run = browser(sc.ws_url("/ws/acme"), proto=["bearer", mint(sub="alice")])
    opened = run.page_event()
    # Chromium fails the connection itself unless the server echoes one of the offered protocols.
    assert opened["event"] == "open" and opened["protocol"] == "bearer", run.seen
    welcome = json.loads(run.message()["text"])
    assert welcome["type"] == "connected" and welcome["user"] == "alice", welcome
    wait_subscribed(redis, "org:acme:user:alice")
    assert redis.publish("org:acme:user:alice", b'{"type":"for-alice"}') >= 1
    assert run.message()["text"] == '{"type":"for-alice"}'


def test_jwt_in_subprotocol_with_wrong_signature_is_refused(sidecar_factory, browser):
    sc = sidecar_factory(extra_yaml=jwt_config(["subprotocol"]))
    run = browser(sc.ws_url("/ws/acme"), proto=["bearer", mint(secret="not-the-secret-at-all")])
    assert_refused_in_browser(run)
    sc.wait_log(r"event=refused .*status=401 ")


def test_jwt_in_cookie_set_by_the_browser_is_accepted(sidecar_factory, redis, browser):
    sc = sidecar_factory(extra_yaml=jwt_config(["cookie"], cookie_name="sc_session"))
    token = mint(sub="bob")
    # A cookie for the host: browsers do not scope cookies by port, so the page's fetches and
    # the sidecar's WebSocket on another port both carry it.
    cookies = [{"name": "sc_session", "value": token, "domain": HOST, "path": "/"}]
    run = browser(sc.ws_url("/ws/acme"), cookies=cookies)
    welcome = run.welcome()
    assert welcome["user"] == "bob" and welcome["org"] == "acme", welcome
    wait_subscribed(redis, "org:acme:user:bob")
    assert redis.publish("org:acme:user:bob", b"hello bob") >= 1
    assert run.message()["text"] == "hello bob"


def test_page_without_the_cookie_is_refused_when_only_cookies_count(sidecar_factory, browser):
    sc = sidecar_factory(extra_yaml=jwt_config(["cookie"], cookie_name="sc_session"))
    run = browser(sc.ws_url("/ws/acme"),
                  cookies=[{"name": "other", "value": mint(), "domain": HOST, "path": "/"}])
    assert_refused_in_browser(run)
    sc.wait_log(r"event=refused .*status=401 ")


def test_binary_payload_arrives_as_the_same_bytes_in_an_arraybuffer(sidecar, redis, browser):
    run = browser(sidecar.ws_url("/ws/acme"))
    run.welcome()
    wait_subscribed(redis, "org:acme")
    payload = b"\xff\xfe\x00\x80\xc3" + bytes(range(256)) * 64  # not UTF-8: a binary frame
    assert redis.publish("org:acme", payload) >= 1
    ev = run.message()
    assert ev["binary"] is True and ev["type"] == "ArrayBuffer", ev
    assert base64.b64decode(ev["data_b64"]) == payload
