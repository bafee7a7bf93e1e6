"""Hostile bytes in every request field the sidecar stores or reflects.

A stranger controls every byte of its request: header values (llhttp accepts any byte there but
CR and LF), the path, the query, and, with a signed token, the claims' strings. Whatever the
sidecar keeps of them later goes into JSON (the welcome, error frames, the status endpoint) and
into log lines. Issue 9: one upgrade with a User-Agent of ``\\xff\\xfe`` and one GET of
/api/websocket/status made nlohmann's ``dump()`` throw inside a ``noexcept`` function, and
``std::terminate`` dropped every client.

Each case below sends one field with one byte pattern, as an upgrade and as a plain request to an
endpoint, then polls every endpoint and checks that:
- the process lives and /health answers;
- every JSON body (answers, refusals, the welcome) parses as strict UTF-8 JSON;
- /metrics is UTF-8 Prometheus text;
- the status endpoint names only real IP addresses and cuts user agents to 256 bytes;
- every line of the log parses in the configured format (logfmt or JSON), so nobody can end a
  line early or forge one.
Real clients refuse to send such headers, so the requests are raw bytes on a socket. A Python
``websockets`` client in the same room shows that the others are unharmed: it still receives a
PUBLISH after all the hostile traffic.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import re
import socket
import urllib.parse

import pytest

from harness import (HOST, OP_TEXT, RawWs, RedisServer, Sidecar, connect_ws, new_ws_key,
                     read_http_head, recv_message, run, wait_until)
from security_util import claims, hand_token, mint

SECRET = "hostile-input-test-secret-with-enough-bytes-0123456789"

PATTERNS = {
    "ff_fe": b"\xff\xfe",
    "overlong": b"\xc0\xaf",
    "lone_surrogate": b"\xed\xa0\x80",
    "cut_multibyte": b"ab\xe2\x82",
    "nul": b"a\x00b",
    "control": b"\x01\x1b[31mred\x7f",
    "bare_lf": b"x\nlevel=error event=injected",
    "quotes": b'say "hi" \\ \\" level=error event=injected \\',
    "separators": "a\u2028b\u2029c\u0085d".encode(),
    "long": "\u20ac".encode() * 1500,  # 4500 bytes; a 256-byte cut falls inside a character
}

# Fields that carry the token themselves: with auth on, no good token is sent beside them.
TOKEN_FIELDS = {"authorization", "cookie", "protocol", "query"}
CLAIM_FIELDS = ["claim_sub", "claim_sub_other_org", "claim_org", "claim_raw"]
HEADER_FIELDS = ["user_agent", "x_forwarded_for", "origin", "cookie", "protocol", "authorization",
                 "host", "path", "path_percent", "query"]


def pct(b: bytes) -> bytes:
    return urllib.parse.quote_from_bytes(b, safe="").encode()


def claim_text(pat: bytes) -> str:
    """The pattern as a claim string: invalid bytes become lone surrogates, which JSON can only
    carry as \\udcXX escapes (PyJWT writes them; the sidecar must refuse them cleanly)."""
    return pat.decode("utf-8", "surrogateescape")


def good_token(org: str = "acme", sub: str = "alice") -> str:
    return mint(claims(org=org, sub=sub), SECRET)


def hostile_request(field: str, pat: bytes, auth: bool, upgrade: bool = True,
                    path: bytes = b"/ws/acme") -> bytes:
    """One request with ``pat`` in ``field``; everything else is what a good client sends."""
    headers: list[tuple[bytes, bytes]] = [(b"Host", b"127.0.0.1")]
    if upgrade:
        headers += [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
                    (b"Sec-WebSocket-Key", new_ws_key().encode()),
                    (b"Sec-WebSocket-Version", b"13")]
    if auth and field not in TOKEN_FIELDS and not field.startswith("claim_"):
        headers.append((b"Authorization", b"Bearer " + good_token().encode()))

    def set_header(name: bytes, value: bytes):
        for i, (k, _) in enumerate(headers):
            if k.lower() == name.lower():
                headers[i] = (name, value)
                return
        headers.append((name, value))

    if field == "user_agent":
        set_header(b"User-Agent", pat)
    elif field == "x_forwarded_for":
        # A valid address first, so that a parser reading up to a NUL would take it.
        set_header(b"X-Forwarded-For", b"198.51.100.7" + pat)
    elif field == "origin":
        set_header(b"Origin", b"https://app.example.com" + pat)
    elif field == "cookie":
        set_header(b"Cookie", b"token=" + pat + b"; other=" + pat)
    elif field == "protocol":
        set_header(b"Sec-WebSocket-Protocol", b"bearer, " + pat)
    elif field == "authorization":
        set_header(b"Authorization", b"Bearer " + pat)
    elif field == "host":
        set_header(b"Host", pat)
    elif field == "path":
        path = path.rsplit(b"/", 1)[0] + b"/" + pat if upgrade else path + pat
    elif field == "path_percent":
        path = path.rsplit(b"/", 1)[0] + b"/" + pct(pat) if upgrade else path + pct(pat)
    elif field == "query":
        path += b"?x=" + pat + b"&token=" + pct(pat) + b"&org=" + pct(pat) + b"&limit=" + pat
    elif field == "claim_sub":
        tok = mint(claims(org="acme", sub=claim_text(pat)), SECRET)
        set_header(b"Authorization", b"Bearer " + tok.encode())
    elif field == "claim_sub_other_org":
        # Refused for the org: the sidecar logs the user it refused.
        tok = mint(claims(org="other", sub=claim_text(pat)), SECRET)
        set_header(b"Authorization", b"Bearer " + tok.encode())
    elif field == "claim_org":
        # One good org beside the hostile one: admitted, and the welcome must still parse.
        tok = mint(claims(org=[claim_text(pat), "acme"]), SECRET)
        set_header(b"Authorization", b"Bearer " + tok.encode())
    elif field == "claim_raw":
        # The raw bytes inside a JSON string in the payload, signed: not JSON text the sidecar
        # may accept, but it must refuse it with a clean answer.
        payload = b'{"org":"acme","sub":"' + pat + b'","exp":4102444800}'
        seg = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
        tok = hand_token({"alg": "HS256", "typ": "JWT"}, seg, key=SECRET.encode())
        set_header(b"Authorization", b"Bearer " + tok.encode())
    else:
        raise AssertionError(f"unknown field {field}")
    lines = [b"GET " + path + b" HTTP/1.1"] + [k + b": " + v for k, v in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


# ----------------------------------------------------------------------------- checks


def strict_json(body: bytes, what: str):
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise AssertionError(f"{what}: not UTF-8 JSON ({e}): {body[:300]!r}") from None


# logfmt as log.cpp writes it: bare values have no space, quote, '=', backslash or control byte;
# quoted values are JSON-escaped strings.
_LOGFMT_VALUE = r'(?:"(?:[^"\\\x00-\x1f\x7f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"|[^ "=\\\x00-\x1f\x7f]+)'
_LOGFMT_LINE = re.compile(
    rf"time=[0-9T:.Z-]+ level=(?:debug|info|warn|error) event=[a-z_]+"
    rf"(?: [a-z_][a-z0-9_.]*={_LOGFMT_VALUE})*")
_PROM_LINE = re.compile(r'(?:# (?:HELP|TYPE) [a-z_]+ .*|[a-z_]+(?:\{[a-z_]+="[^"\\\n]*"\})? \S+)')


def check_log(sc: Sidecar, fmt: str):
    """Every line of the log is one whole record in the configured format."""
    raw = open(sc.log_path, "rb").read()
    assert raw.endswith(b"\n") or not raw, "the log ends in the middle of a line"
    for n, line in enumerate(raw.split(b"\n")[:-1], 1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise AssertionError(f"log line {n} is not UTF-8 ({e}): {line[:300]!r}") from None
        if fmt == "json":
            rec = strict_json(line, f"log line {n}")
            assert isinstance(rec, dict) and {"time", "level", "event"} <= rec.keys(), rec
            assert rec["event"] != "injected", f"log line {n} was forged: {text[:300]}"
        else:
            assert _LOGFMT_LINE.fullmatch(text), f"log line {n} is not logfmt: {text[:300]!r}"
            assert not text.split(" ", 3)[2] == "event=injected", f"log line {n} was forged"


def check_endpoints(sc: Sidecar, pat: bytes):
    """Every endpoint answers, with bodies that parse; the status endpoint's stored strings are
    bounded and IP addresses are addresses."""
    paths = ["/health", "/ready", "/ws/config", "/metrics", "/api/websocket/status",
             "/api/websocket/status?org=acme", "/api/websocket/status?limit=1&offset=0",
             "/api/websocket/status?offset=1&limit=1000",
             "/api/websocket/status?org=" + pct(pat).decode()]
    for path in paths:
        status, headers, body = sc.http("GET", path)
        assert status in (200, 503) if path == "/ready" else status == 200, (path, status, body)
        if path == "/metrics":
            text = body.decode("utf-8")
            for line in text.splitlines():
                assert _PROM_LINE.fullmatch(line), f"/metrics line {line!r}"
            continue
        doc = strict_json(body, path)
        if path.startswith("/api/websocket/status"):
            for c in doc["connections"]:
                ipaddress.ip_address(c["clientInfo"]["ip"])
                assert len(c["clientInfo"]["userAgent"].encode()) <= 256, c
                assert c["user"] is None or re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", c["user"]), c
    assert sc.running(), "the sidecar died"


def send_and_check(port: int, request: bytes, what: str) -> RawWs | None:
    """Sends a raw request and checks its answer: a 101 with a welcome that parses, or an HTTP
    answer whose body is JSON. Returns the open connection after a 101."""
    sock = socket.create_connection((HOST, port), timeout=5)
    try:
        sock.sendall(request)
        status, headers, rest = read_http_head(sock)
        if status == 101:
            ws = RawWs(sock, rest)
            f = ws.recv_message()
            assert f is not None and f.opcode == OP_TEXT, f"{what}: no welcome, got {f}"
            welcome = strict_json(f.payload, f"{what}: welcome")
            assert welcome["type"] == "connected" and welcome["org"] == "acme", welcome
            sock = None
            return ws
        # Not an upgrade: read the rest of the answer by its Content-Length.
        n = int(headers.get("content-length", "0"))
        body = rest
        while len(body) < n:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        assert len(body) == n, f"{what}: short body {body!r}"
        if headers.get("content-type", "").startswith("application/json"):
            strict_json(body, f"{what}: {status} body")
        return None
    finally:
        if sock is not None:
            sock.close()


def hostile_traffic(sc: Sidecar, field: str, pat: bytes, auth: bool) -> list[RawWs]:
    """Sends ``pat`` in ``field`` as an upgrade and as plain requests to two endpoints; returns
    the connections that were admitted (still open)."""
    opened = []
    ws = send_and_check(sc.port, hostile_request(field, pat, auth), f"upgrade {field}")
    if ws is not None:
        opened.append(ws)
    if not field.startswith("claim_"):
        for endpoint in (b"/health", b"/api/websocket/status"):
            send_and_check(sc.port, hostile_request(field, pat, auth, upgrade=False, path=endpoint),
                           f"GET {endpoint.decode()} with {field}")
    return opened


# ----------------------------------------------------------------------------- configurations


CONFIGS = {
    # Text logs, no auth; a trusted proxy on loopback so that X-Forwarded-For is read.
    "plain": ({"trusted_proxies": ["127.0.0.1"]}, "text"),
    # JSON logs, JWT auth from all four sources, an Origin allowlist.
    "auth": ({"trusted_proxies": ["127.0.0.1"], "origins": ["https://app.example.com"],
              "auth": {"mode": "jwt", "jwt": {"secret": SECRET, "algorithms": ["HS256"]}}},
             "json"),
}


def make_sidecar(redis_url: str, name: str) -> Sidecar:
    extra, fmt = CONFIGS[name]
    extra = dict(extra, log={"level": "debug", "format": fmt})
    return Sidecar(redis_url, extra_yaml=extra)


def cases(name: str):
    fields = HEADER_FIELDS + (CLAIM_FIELDS if name == "auth" else [])
    return [(f, p) for f in fields for p in PATTERNS]


@pytest.fixture(scope="module")
def module_sidecars():
    """One Redis and one sidecar per configuration for the whole module: the cases share them,
    so each case also proves that the ones before it left the process whole."""
    redis = RedisServer().start()
    made = {}
    try:
        for name in CONFIGS:
            made[name] = make_sidecar(redis.url, name).start()
        yield made
    finally:
        reports = []
        for sc in made.values():
            sc.stop()
            report = sc.sanitizer_report() or sc.exit_problem()
            if report:
                reports.append(report)
            sc.cleanup()
        redis.stop()
        if reports:
            pytest.fail("the sidecar crashed, exited badly or a sanitizer reported a problem:\n"
                        + "\n".join(reports), pytrace=False)


# ----------------------------------------------------------------------------- tests


def test_a_user_agent_that_is_not_utf8_does_not_abort_the_status_endpoint(sidecar_factory):
    """Issue 9, defect 1, exactly as reported."""
    sc = sidecar_factory()
    sock = socket.create_connection((HOST, sc.port), timeout=5)
    try:
        sock.sendall(hostile_request("user_agent", b"\xff\xfe", auth=False))
        assert read_http_head(sock)[0] == 101
        status, _, body = sc.http("GET", "/api/websocket/status")
        assert status == 200
        doc = strict_json(body, "status")
        assert [c["clientInfo"]["userAgent"] for c in doc["connections"]] == ["\ufffd\ufffd"]
        assert sc.running()
        assert sc.http("GET", "/health")[0] == 200
    finally:
        sock.close()


# Token claims exist only where auth is on, so those fields are tried in the "auth" config only.
@pytest.mark.parametrize("config,field,pattern",
                         [(name, f, p) for name in CONFIGS for f, p in cases(name)])
def test_hostile_bytes_in_a_field(module_sidecars, config, field, pattern):
    sc = module_sidecars[config]
    assert sc.running(), "the sidecar died in an earlier case"
    opened = hostile_traffic(sc, field, PATTERNS[pattern], config == "auth")
    try:
        check_endpoints(sc, PATTERNS[pattern])
        assert sc.http("GET", "/health")[0] == 200
        check_log(sc, CONFIGS[config][1])
    finally:
        for ws in opened:
            ws.close()


def test_the_status_endpoint_cuts_a_long_user_agent_on_a_character_boundary(sidecar_factory):
    sc = sidecar_factory()
    ws = send_and_check(sc.port, hostile_request("user_agent", "\u20ac".encode() * 200, False),
                        "long user agent")
    try:
        doc = strict_json(sc.http("GET", "/api/websocket/status")[2], "status")
        # 85 whole euro signs are 255 bytes; the 86th would pass 256.
        assert [c["clientInfo"]["userAgent"] for c in doc["connections"]] == ["\u20ac" * 85]
    finally:
        ws.close()


@pytest.mark.parametrize("config", CONFIGS)
def test_a_client_in_the_room_is_unharmed_by_all_hostile_traffic(redis, config):
    """A real client joins first; every hostile case runs; the client still gets a PUBLISH."""
    sc = make_sidecar(redis.url, config).start()
    try:
        async def scenario():
            url = sc.ws_url("/ws/acme")
            if config == "auth":
                url += "?token=" + good_token(sub="bystander")
            conn = await connect_ws(url)
            assert conn.welcome["type"] == "connected"
            opened = []
            for field, pattern in cases(config):
                opened += await asyncio.to_thread(hostile_traffic, sc, field, PATTERNS[pattern],
                                                  config == "auth")
            await asyncio.to_thread(check_endpoints, sc, b"")
            wait_until(lambda: redis.numsub("org:acme") == 1, 10, "org:acme subscribed")
            redis.publish("org:acme", '{"type":"after_hostile"}')
            while True:
                msg = await recv_message(conn, 10)
                if msg == '{"type":"after_hostile"}':
                    break
            await conn.close()
            for ws in opened:
                ws.close()

        run(scenario(), timeout=300)
        assert sc.running()
        check_log(sc, CONFIGS[config][1])
        # Nothing above needed the last line of defence: no exception was caught anywhere.
        assert "internal_error" not in sc.log()
        metrics = sc.http("GET", "/metrics")[2].decode()
        assert re.search(r"^sidecar_internal_errors_total 0$", metrics, re.M), metrics
    finally:
        sc.stop()
        report = sc.sanitizer_report()
        sc.cleanup()
        if report:
            pytest.fail("sanitizer reported a problem:\n" + report, pytrace=False)


@pytest.mark.parametrize("exp", [1e300, 2**63 - 1, 2**64 + 5, 4102444800.5],
                         ids=["1e300", "int64_max", "past_uint64", "fraction"])
def test_a_far_future_exp_claim_is_a_long_life_not_an_overflow(sidecar_factory, redis, exp):
    """A signed token may still carry an exp no clock reaches. Converting it to seconds must not
    overflow (undefined behaviour, which made a token that never expires look expired), nor may
    the expiry check done on every sweep."""
    sc = sidecar_factory(extra_yaml={
        "auth": {"mode": "jwt", "jwt": {"secret": SECRET, "algorithms": ["HS256"]}},
        "websocket": {"close_timeout_ms": 100}, "log": {"summary_interval_s": 1}})
    tok = mint(claims(org="acme", ttl=None, exp=exp), SECRET)
    req = hostile_request("user_agent", b"ok", auth=False)
    req = req.replace(b"\r\n\r\n", b"\r\nAuthorization: Bearer " + tok.encode() + b"\r\n\r\n")
    ws = send_and_check(sc.port, req, "far-future exp")
    assert ws is not None, "the token was refused"
    try:
        # The sweep checks the expiry several times a second; a summary line means at least one
        # full second of sweeps has passed since the welcome.
        start = sc.log().count("event=summary")
        wait_until(lambda: sc.log().count("event=summary") > start, 10, "a summary line")
        wait_until(lambda: redis.numsub("org:acme") == 1, 10, "org:acme subscribed")
        redis.publish("org:acme", "still-here")
        f = ws.recv_message(5)
        assert f is not None and f.opcode == OP_TEXT and f.payload == b"still-here", f
    finally:
        ws.close()
