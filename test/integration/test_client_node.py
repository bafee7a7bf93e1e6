"""client/sidecar-client.js in Node (with the `ws` package) against the real sidecar and a private
redis-server: delivery and dispatch, discovery, reconnects after a SIGTERM spread over the window
the sidecar advertises, full-jitter backoff after a crash, the offline queue reaching the inbound
stream in order, refused handshakes that stop instead of hammering, a frozen sidecar found by the
client's own ping, and a token that expires or is about to. Every wait is bounded and event-driven.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import time

import jwt
import pytest

from client_util import CLIENT_DIR, NODE_DIR, ClientDriver, cmake_version
from harness import SLOW, free_port, wait_until
from ops_util import http_on

SECRET = "client-test-hs256-secret-of-decent-length"


@pytest.fixture
def drivers():
    """``drivers(config)`` starts a ClientDriver; every one started is ended at teardown."""
    made: list[ClientDriver] = []

    def start(config: dict) -> ClientDriver:
        d = ClientDriver(config)
        made.append(d)
        return d

    yield start
    for d in made:
        d.close()


def token(org="acme", sub="alice", ttl=3600, exp=None, secret=SECRET) -> str:
    return jwt.encode({"org": org, "sub": sub, "exp": exp if exp is not None
                       else int(time.time()) + ttl}, secret, algorithm="HS256")


def jwt_config(**auth) -> dict:
    return {"auth": {"mode": "jwt", "jwt": {"secret": SECRET, "algorithms": ["HS256"]}, **auth}}


def refused(sc, reason: str) -> int:
    """sidecar_connections_refused_total{reason=...} from /metrics."""
    status, _, body = sc.http("GET", "/metrics")
    assert status == 200
    m = re.search(r'^sidecar_connections_refused_total\{reason="%s"\} (\S+)$' % reason,
                  body.decode(), re.MULTILINE)
    return int(float(m.group(1))) if m else 0


def upgraded(sc) -> int:
    status, _, body = sc.http("GET", "/metrics")
    m = re.search(r"^sidecar_connections_upgraded_total (\S+)$", body.decode(), re.MULTILINE)
    return int(float(m.group(1)))


# ----------------------------------------------------------------------------- version


def test_client_version_is_the_sidecars():
    want = cmake_version()
    pkg = json.loads((CLIENT_DIR / "package.json").read_text())
    assert pkg["version"] == want, f"client/package.json says {pkg['version']}, CMake {want}"
    out = subprocess.run(
        ["node", "--input-type=module", "-e",
         f"import {{ SidecarClient, VERSION }} from '{CLIENT_DIR / 'sidecar-client.js'}';"
         "console.log(JSON.stringify([SidecarClient.version, VERSION]))"],
        capture_output=True, check=True, timeout=30)
    assert json.loads(out.stdout) == [want, want]
    dts = (CLIENT_DIR / "sidecar-client.d.ts").read_text()
    assert f'export declare const VERSION: "{want}";' in dts


# ----------------------------------------------------------------------------- GET /client.js


def sidecar_version() -> str:
    out = subprocess.run([os.environ["SIDECAR_BIN"], "--version"], capture_output=True,
                         check=True, timeout=10, text=True).stdout
    m = re.fullmatch(r"sidecar (\S+)\n", out)
    assert m, out
    return m.group(1)


def test_sidecar_serves_the_client_module_byte_for_byte(sidecar, tmp_path):
    status, headers, body = sidecar.http("GET", "/client.js")
    assert status == 200
    assert body == (CLIENT_DIR / "sidecar-client.js").read_bytes()
    assert headers["content-type"] == "text/javascript; charset=utf-8"
    assert headers["access-control-allow-origin"] == "*"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "public, max-age=300"
    etag = headers["etag"]
    assert re.fullmatch(r'"[A-Za-z0-9_-]+"', etag), etag
    # The module it serves is the binary's version, as Node sees it when importing those bytes.
    (tmp_path / "client.mjs").write_bytes(body)
    out = subprocess.run(
        ["node", "--input-type=module", "-e",
         f"import {{ VERSION }} from '{tmp_path / 'client.mjs'}'; console.log(VERSION)"],
        capture_output=True, check=True, timeout=30, text=True)
    assert out.stdout.strip() == sidecar_version() == cmake_version()

    # HEAD: the same head, no body. If-None-Match with its ETag: 304, no body.
    status, head_headers, head_body = sidecar.http("HEAD", "/client.js")
    assert status == 200 and head_body == b""
    assert head_headers["content-length"] == str(len(body))
    assert head_headers["etag"] == etag
    status, h304, b304 = sidecar.http("GET", "/client.js", {"If-None-Match": f'"x", W/{etag}'})
    assert status == 304 and b304 == b"" and h304["etag"] == etag
    assert sidecar.http("GET", "/client.js", {"If-None-Match": '"stale"'})[0] == 200

    status, headers, body = sidecar.http("GET", "/client.d.ts")
    assert status == 200 and body == (CLIENT_DIR / "sidecar-client.d.ts").read_bytes()
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["access-control-allow-origin"] == "*"


def test_client_module_is_public_on_the_main_listener_only(sidecar_factory):
    admin_port = free_port()
    sc = sidecar_factory(extra_yaml={"admin": {"listen": f"127.0.0.1:{admin_port}",
                                               "token": "adm"}})
    wait_until(lambda: http_on(admin_port, "GET", "/health")[0] == 200, 5, "admin listener")
    # No admin token on the main listener, although admin.token is set: pages import it.
    for path in ("/client.js", "/client.d.ts"):
        assert sc.http("GET", path)[0] == 200, path
        # The admin listener is for operators' tools; pages load the client where they connect.
        status, _, body = http_on(admin_port, "GET", path, {"Authorization": "Bearer adm"})
        assert status == 404 and json.loads(body)["error"] == "NOT_FOUND", (path, body)
    # Without admin.listen, admin.token does not cover it either.
    single = sidecar_factory(extra_yaml={"admin": {"token": "adm"}})
    assert single.http("GET", "/client.js")[0] == 200


# ----------------------------------------------------------------------------- delivery


def test_receives_publishes_and_dispatches_on_type(sidecar, redis, drivers):
    d = drivers({"options": {"url": sidecar.ws_url("/ws/acme")}})
    d.wait_state("connecting")
    opened = d.wait_state("open")
    welcome = d.wait(lambda e: e["event"] == "control" and e["type"] == "connected")["payload"]
    assert opened["connectionId"] == welcome["connection_id"] and welcome["org"] == "acme"
    assert opened["protocol"] == "" and d.version == cmake_version()

    wait_until(lambda: redis.numsub("org:acme") >= 1, 10, "SUBSCRIBE org:acme")
    redis.publish("org:acme", '{"type":"SYNC_SUCCESS","pfaId":"pfa-1","name":"Zoë ✓"}')
    redis.publish("org:acme", "not json at all")
    redis.publish("org:acme", b"\xff\x00\x80")
    m = d.wait_message()
    assert m["data"] == {"type": "SYNC_SUCCESS", "pfaId": "pfa-1", "name": "Zoë ✓"}
    assert m["meta"]["binary"] is False
    typed = d.wait(lambda e: e["event"] == "typed")
    assert typed["payload"]["pfaId"] == "pfa-1"
    assert d.wait_message()["data"] == "not json at all"
    m = d.wait_message()
    assert m["meta"]["binary"] is True and base64.b64decode(m["data"]["b64"]) == b"\xff\x00\x80"
    # The sidecar's own messages are not application messages.
    assert not [e for e in d.of("message") if isinstance(e["data"], dict)
                and e["data"].get("type") == "connected"]


def test_discovery_finds_the_route_and_lets_the_client_import_ws(sidecar_factory, redis, drivers,
                                                                tmp_path):
    # An app that installed the client next to `ws`: the client finds `ws` by itself (Node 20
    # has no global WebSocket), resolved from the app's node_modules as a bundler or Node would.
    app = tmp_path / "app"
    (app / "node_modules").mkdir(parents=True)
    (app / "node_modules" / "ws").symlink_to(NODE_DIR / "node_modules" / "ws")
    (app / "package.json").write_text('{"type": "module"}')
    shutil.copy(CLIENT_DIR / "sidecar-client.js", app / "sidecar-client.js")
    sc = sidecar_factory(extra_yaml={"routes": [{"path": "/api/ws/sync/{org}",
                                                 "channel": "org:{org}"}]})
    status, _, body = sc.http("GET", "/ws/config")
    assert status == 200 and json.loads(body)["websocket_config"]["endpoints"]["websocket"] \
        == "/api/ws/sync/{org}"
    d = drivers({"ws": "import", "client_path": str(app / "sidecar-client.js"), "options": {
        "discoveryUrl": f"http://127.0.0.1:{sc.port}/ws/config", "org": "acme"}})
    d.wait_state("open")
    wait_until(lambda: redis.numsub("org:acme") >= 1, 10, "SUBSCRIBE org:acme")
    redis.publish("org:acme", '{"type":"SYNC_SUCCESS","via":"discovery"}')
    assert d.wait_message()["data"]["via"] == "discovery"


# ----------------------------------------------------------------------------- reconnects


def test_sigterm_restart_fifty_clients_return_spread_over_the_advertised_window(
        sidecar_factory, redis, drivers):
    after_ms, jitter_ms, n = 1000, 3000, 50
    sc = sidecar_factory(extra_yaml={"shutdown": {"reconnect_after_ms": after_ms,
                                                  "reconnect_jitter_ms": jitter_ms}})
    d = drivers({"count": n, "options": {"url": sc.ws_url("/ws/acme"), "backoffBaseMs": 200,
                                         "backoffCapMs": 2000}})
    for i in range(n):
        d.wait_state("open", i, 20)
    wait_until(lambda: redis.numsub("org:acme") >= 1, 10, "SUBSCRIBE org:acme")

    t_term = time.time() * 1000
    sc.send_signal(signal.SIGTERM)
    hints = {}
    for _ in range(n):
        ev = d.wait(lambda e: e["event"] == "control" and e["type"] == "server_shutdown"
                    and e["i"] not in hints, 20, "server_shutdown")
        hints[ev["i"]] = ev["payload"]["reconnect_after_ms"]
    assert sc.wait_exit(30) == 0
    sc.start()  # same port: the harness keeps it unless it was taken meanwhile
    t_back = time.time() * 1000

    reopened = {}
    for _ in range(n):
        ev = d.wait(lambda e: e["event"] == "state" and e["state"] == "open"
                    and e["i"] not in reopened and e["t"] > t_term, 30, "a reconnect")
        reopened[ev["i"]] = ev["t"]
    lost = {e["i"]: e for e in d.of("state", state="reconnecting") if e["t"] > t_term
            and e["reason"] == "server_shutdown"}
    assert len(lost) == n, "every client must have taken the server_shutdown path"

    delays = []
    for i in range(n):
        hint = hints[i]
        assert after_ms <= hint <= after_ms + jitter_ms, hint
        assert lost[i]["delayMs"] == hint, lost[i]
        # The client waited the hint (from its close, which follows the hint), then connected;
        # one backoff step (< 200 ms) more when the sidecar was not back yet.
        delay = reopened[i] - t_term
        slack = 200 + (t_back - t_term - hint if t_back - t_term > hint else 0) + 1000 * SLOW
        assert hint - 50 <= delay <= hint + slack, (i, hint, delay)
        delays.append(delay)
    # Spread: not one herd. Uniform over 3 s has a stdev near 870 ms; 50 clients in one instant
    # would have a stdev of a few ms.
    assert statistics.pstdev(delays) > 400, sorted(delays)
    assert len({int(x // 250) for x in delays}) >= 8, sorted(delays)
    assert max(delays) - min(delays) > 1500, sorted(delays)


def test_crash_reconnects_use_full_jitter_backoff(sidecar_factory, redis, drivers):
    n, base = 50, 4000
    sc = sidecar_factory()
    d = drivers({"count": n, "options": {"url": sc.ws_url("/ws/acme"), "backoffBaseMs": base,
                                         "backoffCapMs": 60000}})
    for i in range(n):
        d.wait_state("open", i, 20)
    t_kill = time.time() * 1000
    sc.send_signal(signal.SIGKILL)
    sc.proc.wait(10)
    firsts = {}
    for _ in range(n):
        ev = d.wait(lambda e: e["event"] == "state" and e["state"] == "reconnecting"
                    and e["i"] not in firsts and e["t"] >= t_kill, 20, "reconnecting")
        firsts[ev["i"]] = ev
    sc.start()
    for i in range(n):
        d.wait_state("open", i, 30 + base / 1000)
    delays = [e["delayMs"] for e in firsts.values()]
    assert all(e["reason"] == "connection_lost" and e["code"] == 1006 for e in firsts.values())
    # First retry after an open connection: random(0, base). Full jitter spreads them over the
    # whole interval, not around base.
    assert all(0 <= x < base for x in delays), delays
    assert min(delays) < base * 0.25 and max(delays) > base * 0.75, sorted(delays)
    assert len({int(x // (base / 8)) for x in delays}) >= 6, sorted(delays)


# ----------------------------------------------------------------------------- offline queue


def test_offline_queue_reaches_the_inbound_stream_in_order(sidecar_factory, redis, drivers):
    sc = sidecar_factory(extra_yaml={"inbound": {"stream": "inbound:{org}"},
                                     "shutdown": {"reconnect_after_ms": 0,
                                                  "reconnect_jitter_ms": 0}})
    d = drivers({"options": {"url": sc.ws_url("/ws/acme"), "queueLimit": 25,
                             "queueOverflow": "drop-oldest", "backoffBaseMs": 100,
                             "backoffCapMs": 500}})
    d.wait_state("open")
    assert d.send({"type": "note", "seq": -1})["now"] is True
    wait_until(lambda: redis.command("XLEN", "inbound:acme") == 1, 10, "the live message")

    sc.send_signal(signal.SIGTERM)
    d.wait_state("reconnecting", reason="server_shutdown")
    assert sc.wait_exit(30) == 0
    for seq in range(30):
        rep = d.send({"type": "note", "seq": seq})
        assert rep["event"] == "sent" and rep["now"] is False, rep
    # Queue of 25, drop-oldest: seq 0..4 are dropped, and each drop is reported.
    dropped = [e["message"]["seq"] for e in d.of("dropped")]
    assert dropped == [0, 1, 2, 3, 4], dropped
    assert all(e["reason"] == "queue_full" for e in d.of("dropped"))

    sc.start()
    d.wait_state("open", timeout=30)
    # 25 messages exceed the sidecar's burst of 20: the client paces them at its rate, so none is
    # refused with RATE_LIMITED and all arrive, in order.
    wait_until(lambda: redis.command("XLEN", "inbound:acme") == 26, 20 * SLOW, "25 queued")
    entries = redis.command("XRANGE", "inbound:acme", "-", "+")
    seqs = []
    for _id, fields in entries:
        f = dict(zip(fields[::2], fields[1::2]))
        seqs.append(json.loads(f[b"data"])["seq"])
    assert seqs == [-1] + list(range(5, 30)), seqs
    assert not [e for e in d.of("control") if e["type"] == "error"], d.of("control")


def test_queue_overflow_policies(sidecar_factory, drivers):
    sc = sidecar_factory()
    port = sc.port
    sc.send_signal(signal.SIGKILL)
    sc.proc.wait(10)
    url = f"ws://127.0.0.1:{port}/ws/acme"
    newest = drivers({"options": {"url": url, "queueLimit": 2, "queueOverflow": "drop-newest"}})
    for seq in range(4):
        newest.send({"seq": seq})
    assert [e["message"]["seq"] for e in newest.of("dropped")] == [2, 3]
    err = drivers({"options": {"url": url, "queueLimit": 2, "queueOverflow": "error"}})
    reps = [err.send({"seq": seq}) for seq in range(3)]
    assert [r["event"] for r in reps] == ["sent", "sent", "send_error"]
    assert reps[2]["code"] == "QUEUE_FULL"
    assert [e["message"]["seq"] for e in err.of("dropped")] == [2]


# ----------------------------------------------------------------------------- refusals


def test_401_at_the_handshake_stops_without_hammering(sidecar_factory, drivers):
    sc = sidecar_factory(extra_yaml=jwt_config())
    bad = token(secret="some-other-secret-of-decent-length-xx")
    d = drivers({"options": {"url": sc.ws_url("/ws/acme"), "token": bad, "backoffBaseMs": 50}})
    closed = d.wait_state("closed", timeout=20)
    assert closed["reason"] == "unauthorized" and closed["status"] == 401, closed
    assert closed["error"] == "UNAUTHORIZED", closed
    assert refused(sc, "unauthorized") == 1
    # closed is final: no timer is left, so the count cannot grow. A getToken() that keeps
    # handing out bad tokens earns one retry with a fresh token, then the same stop.
    d2 = drivers({"tokens": [bad], "options": {"url": sc.ws_url("/ws/acme"),
                                               "backoffBaseMs": 50}})
    closed = d2.wait_state("closed", timeout=20)
    assert closed["reason"] == "unauthorized", closed
    assert len(d2.of("get_token")) == 2
    assert refused(sc, "unauthorized") == 3
    assert [e["reason"] for e in d2.of("state", state="reconnecting")] == ["unauthorized"]
    assert upgraded(sc) == 0


def test_403_forbidden_org_stops(sidecar_factory, drivers):
    sc = sidecar_factory(extra_yaml=jwt_config())
    d = drivers({"options": {"url": sc.ws_url("/ws/acme"), "token": token(org="other")}})
    closed = d.wait_state("closed", timeout=20)
    assert closed["reason"] == "forbidden" and closed["error"] == "FORBIDDEN_ORG", closed
    assert refused(sc, "forbidden") == 1


def test_token_goes_as_the_bearer_subprotocol_not_in_the_url(sidecar_factory, redis, drivers):
    sc = sidecar_factory(extra_yaml=jwt_config(token_sources=["subprotocol"]))
    tok = token()
    d = drivers({"options": {"url": sc.ws_url("/ws/acme"), "token": tok}})
    opened = d.wait_state("open")
    assert opened["protocol"] == "bearer"
    welcome = d.wait(lambda e: e["event"] == "control" and e["type"] == "connected")["payload"]
    assert welcome["user"] == "alice"
    # tokenInQuery puts it in ?token= (here the sidecar only reads the subprotocol: 401).
    q = drivers({"options": {"url": sc.ws_url("/ws/acme"), "token": tok, "tokenInQuery": True}})
    assert q.wait_state("closed", timeout=20)["reason"] == "unauthorized"


# ----------------------------------------------------------------------------- liveness


def test_frozen_sidecar_is_found_by_the_clients_ping(sidecar_factory, drivers):
    hb = 1000
    sc = sidecar_factory(extra_yaml={"websocket": {"heartbeat_ms": hb}})
    d = drivers({"options": {"url": sc.ws_url("/ws/acme"), "backoffBaseMs": 100,
                             "backoffCapMs": 500, "connectTimeoutMs": 2000}})
    d.wait_state("open")
    # A pong proves the ping round trip works before the freeze.
    d.wait(lambda e: e["event"] == "control" and e["type"] == "pong", 5 * SLOW, "a pong")
    t_stop = time.time() * 1000
    sc.send_signal(signal.SIGSTOP)
    try:
        lost = d.wait(lambda e: e["event"] == "state" and e["state"] == "reconnecting"
                      and e["t"] > t_stop, 10, "reconnecting after the freeze")
        assert lost["reason"] == "ping_timeout", lost
        # Deadline: at most one interval without frames, then a pong timeout of max(1 s,
        # interval / 2), each checked on a tick of a quarter of the shorter one.
        assert lost["t"] - t_stop <= hb + 1000 + 500 + 500 * SLOW, lost["t"] - t_stop
    finally:
        sc.send_signal(signal.SIGCONT)
    d.wait_state("open", timeout=20)


# ----------------------------------------------------------------------------- token expiry


def test_in_band_refresh_keeps_the_connection_past_the_old_expiry(sidecar_factory, redis,
                                                                   drivers):
    # The old token lives 8 s and is warned about 5 s ahead: a Node that takes seconds to start
    # on a busy machine still connects with it, and is warned at once if it was that slow.
    sc = sidecar_factory(extra_yaml=jwt_config(expiry_warning_s=5, on_expiry="close",
                                               jwt={"secret": SECRET, "algorithms": ["HS256"],
                                                    "leeway_s": 0}))
    short_exp = int(time.time()) + 8
    long_exp = int(time.time()) + 3600
    d = drivers({"tokens": [token(exp=short_exp), token(exp=long_exp)],
                 "options": {"url": sc.ws_url("/ws/acme"), "refresh": "in-band"}})
    first = d.wait_state("open")
    d.wait(lambda e: e["event"] == "control" and e["type"] == "token_expiring", 10)
    refreshed = d.wait(lambda e: e["event"] == "control" and e["type"] == "refreshed", 10)
    assert refreshed["payload"]["expires_at"] == long_exp
    # Past the old exp (plus the expiry sweep), the same connection still delivers.
    wait_until(lambda: time.time() > short_exp + 1.5, 10, "the old token's exp to pass")
    wait_until(lambda: redis.numsub("org:acme") >= 1, 10, "SUBSCRIBE org:acme")
    redis.publish("org:acme", '{"type":"SYNC_SUCCESS","after":"refresh"}')
    assert d.wait_message()["data"]["after"] == "refresh"
    states = [e["state"] for e in d.of("state")]
    assert states == ["connecting", "open"], states
    assert d.of("state", state="open")[0]["connectionId"] == first["connectionId"]


def test_errors_that_answer_other_messages_do_not_fail_a_pending_refresh(sidecar_factory,
                                                                           redis, drivers):
    # No inbound stream: every application message is answered UNSUPPORTED. Three go out just
    # ahead of the refresh, so their errors arrive while it is pending; only a refresh refusal
    # code may fail it.
    sc = sidecar_factory(extra_yaml=jwt_config(expiry_warning_s=5, on_expiry="close"))
    d = drivers({"tokens": [token(ttl=8), token()], "notes_on_token_expiring": 3,
                 "options": {"url": sc.ws_url("/ws/acme")}})
    d.wait_state("open")
    d.wait(lambda e: e["event"] == "control" and e["type"] == "token_expiring", 10)
    d.wait(lambda e: e["event"] == "control" and e["type"] == "refreshed", 10)
    codes = [e["payload"]["code"] for e in d.of("control", type="error")]
    assert codes == ["UNSUPPORTED"] * 3, codes
    assert [e["state"] for e in d.of("state")] == ["connecting", "open"]


def test_refused_refresh_falls_back_to_a_reconnect_with_a_fresh_token(sidecar_factory, redis,
                                                                      drivers):
    # The in-band refresh names another user, which the sidecar refuses with USER_MISMATCH; the
    # client then reconnects at once with the token getToken() gave, and says why.
    sc = sidecar_factory(extra_yaml=jwt_config(expiry_warning_s=3, on_expiry="close"))
    short = token(ttl=4)
    other = token(sub="bob")
    d = drivers({"tokens": [short, other], "options": {"url": sc.ws_url("/ws/acme")}})
    first = d.wait_state("open")
    d.wait(lambda e: e["event"] == "control" and e["type"] == "token_expiring", 10)
    err = d.wait(lambda e: e["event"] == "control" and e["type"] == "error", 10)["payload"]
    assert err["code"] == "USER_MISMATCH" and err["recoverable"] is True, err
    lost = d.wait_state("reconnecting")
    assert lost["reason"] == "token_refresh_failed" and lost["delayMs"] == 0, lost
    assert lost["error"] == "USER_MISMATCH" and lost["detail"] == err["message"], lost
    second = d.wait_state("open")
    assert second["connectionId"] != first["connectionId"]
    welcome = d.wait(lambda e: e["event"] == "control" and e["type"] == "connected"
                     and e["payload"]["connection_id"] == second["connectionId"])["payload"]
    assert welcome["user"] == "bob"
    assert not [e for e in d.of("state") if e["state"] == "closed"]


def test_4001_reconnects_with_a_fresh_token_and_a_fixed_token_stops(sidecar_factory, drivers):
    sc = sidecar_factory(extra_yaml=jwt_config(expiry_warning_s=1, on_expiry="close",
                                               jwt={"secret": SECRET, "algorithms": ["HS256"],
                                                    "leeway_s": 0}))
    # getToken: a short token, then it fails at the warning (so no refresh happens), then a
    # long token for the reconnect after 4001.
    d = drivers({"tokens": [token(ttl=3), None, token()],
                 "options": {"url": sc.ws_url("/ws/acme")}})
    d.wait_state("open")
    lost = d.wait_state("reconnecting", timeout=10)
    assert lost["reason"] == "token_expired" and lost["code"] == 4001, lost
    d.wait_state("open", timeout=10)
    # A fixed token cannot be renewed: 4001 ends the client.
    fixed = drivers({"options": {"url": sc.ws_url("/ws/acme"), "token": token(ttl=2)}})
    fixed.wait_state("open")
    closed = fixed.wait_state("closed", timeout=10)
    assert closed["reason"] == "token_expired" and closed["code"] == 4001, closed
