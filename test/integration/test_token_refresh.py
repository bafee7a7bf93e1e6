"""In-band token refresh: a client sends {"type":"refresh","token":…} on its open connection and,
when the token passes the same checks as at the handshake and names the same org and user, the
session's expiry moves to the new token's exp ({"type":"refreshed","expires_at":exp}); the
token_expiring warning is due again for the new deadline, and the 4001 close that the old one
would have brought does not happen. A bad refresh gets an error frame with the handshake's code,
the old deadline stands, and the connection stays open.

Clients are Python ``websockets``; tokens are minted by PyJWT. Every wait is on a frame or a
close, bounded; "nothing happened at the old exp" is shown by round trips of published probes
that continue past it. Every token a test sends is checked absent from the sidecar's log."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest
import websockets

from harness import SLOW, connect_ws, recv_json, run, ws_close_code
from security_util import TokenLog, claims, mint, wait_channel

SECRET = "token-refresh-test-secret-of-decent-length-0123456789"
# close_timeout_ms 800 is the shortest timeout, so the sweep that checks expiry runs every
# 200 ms; the warning and the close are due within one sweep of their moment.
SWEEP_S = 0.2
SLACK_S = SWEEP_S + 0.8 * SLOW


@pytest.fixture
def tokens(sidecar_factory):
    """The test's TokenLog; torn down before the sidecars, while their logs still exist."""
    log = TokenLog()
    yield log
    for sc in log.sidecars:
        log.assert_absent(sc.log())


def jwt_sidecar(sidecar_factory, tokens, extra: dict | None = None, **auth):
    cfg = {"auth": {"mode": "jwt", "expiry_warning_s": 2,
                    "jwt": {"secret": SECRET, "algorithms": ["HS256"], "leeway_s": 0}, **auth},
           "websocket": {"close_timeout_ms": 800}}
    cfg.update(extra or {})
    sc = sidecar_factory(extra_yaml=cfg)
    tokens.sidecars.append(sc)
    return sc


def token_for(tokens, exp: int | None, org="acme", sub="alice", key=SECRET, **extra) -> str:
    return tokens.add(mint(claims(org=org, sub=sub, ttl=None, exp=exp, **extra), key))


async def open_session(sc, tokens, exp: int, path="/ws/acme", sub="alice"):
    ws = await connect_ws(sc.ws_url(path),
                          extra_headers={"Authorization":
                                         f"Bearer {token_for(tokens, exp, sub=sub)}"})
    assert ws.welcome["type"] == "connected" and ws.welcome["user"] == sub, ws.welcome
    return ws


async def next_of_type(ws, kind: str, timeout: float = 10.0) -> dict:
    """The next sidecar message of this type; published probes and other types are skipped."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        msg = await recv_json(ws, max(deadline - time.monotonic(), 0.001) / SLOW)
        if msg.get("type") == kind:
            return msg


async def refresh(ws, token) -> dict:
    """Sends a refresh and returns the sidecar's answer: refreshed or error."""
    await ws.send(json.dumps({"type": "refresh", "token": token}))
    while True:
        msg = await recv_json(ws, 10)
        if msg.get("type") in ("refreshed", "error"):
            return msg


async def probe_until(redis, ws, moment: float, timeout: float = 20.0):
    """Round trips of published probes until the wall clock passes ``moment``: each one proves
    the session was open and delivering at that time."""
    deadline = time.monotonic() + timeout * SLOW
    n = 0
    while time.time() < moment:
        assert time.monotonic() < deadline, "the clock did not pass the moment in time"
        n += 1
        redis.publish("org:acme", f'{{"type":"PROBE","n":{n}}}')
        while True:
            msg = await recv_json(ws, 5)
            if msg == {"type": "PROBE", "n": n}:
                break
    return n


def metric(sc, name: str) -> float:
    status, _, body = sc.http("GET", "/metrics")
    assert status == 200, body
    m = re.search(rf"^{re.escape(name)} (\S+)$", body.decode(), re.MULTILINE)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def refreshes(sc, result: str) -> float:
    return metric(sc, f'sidecar_token_refreshes_total{{result="{result}"}}')


# ----------------------------------------------------------------------------- success


def test_refresh_moves_expiry_and_no_4001_at_the_old_exp(sidecar_factory, redis, tokens):
    sc = jwt_sidecar(sidecar_factory, tokens)

    async def go():
        old_exp = int(time.time()) + 3
        ws = await open_session(sc, tokens, old_exp)
        warning = await next_of_type(ws, "token_expiring")
        assert warning == {"type": "token_expiring", "expires_at": old_exp}
        new_exp = int(time.time()) + 3600
        answer = await refresh(ws, token_for(tokens, new_exp))
        assert answer == {"type": "refreshed", "expires_at": new_exp}, answer
        assert new_exp > old_exp
        wait_channel(redis, "org:acme")
        # Past the old exp by more than a sweep and its slack, the session still delivers.
        assert await probe_until(redis, ws, old_exp + SLACK_S + 0.5) >= 1
        assert ws.open, ws.close_code
        await ws.close()

    run(go())
    assert refreshes(sc, "ok") == 1


def test_after_a_refresh_the_warning_comes_again_and_4001_at_the_new_exp(sidecar_factory,
                                                                          redis, tokens):
    sc = jwt_sidecar(sidecar_factory, tokens)

    async def go():
        old_exp = int(time.time()) + 3
        ws = await open_session(sc, tokens, old_exp)
        assert await next_of_type(ws, "token_expiring") == {"type": "token_expiring",
                                                            "expires_at": old_exp}
        new_exp = old_exp + 4
        assert await refresh(ws, token_for(tokens, new_exp)) == {"type": "refreshed",
                                                                 "expires_at": new_exp}
        # Everything up to the close is collected, then judged: the second warning names the
        # new exp and comes before it; the close is 4001 at the new exp, not the old one.
        seen = []
        deadline = time.monotonic() + 20 * SLOW
        while True:
            try:
                msg = await asyncio.wait_for(ws.recv(), max(deadline - time.monotonic(), 0.01))
            except websockets.ConnectionClosed as e:
                closed_at, code = time.time(), (e.rcvd.code if e.rcvd else 1006)
                break
            seen.append((time.time(), json.loads(msg)))
        warnings = [(t, m) for t, m in seen if m.get("type") == "token_expiring"]
        assert [m for _, m in warnings] == [{"type": "token_expiring", "expires_at": new_exp}], seen
        warned_at = warnings[0][0]
        assert new_exp - 2 - 0.05 <= warned_at <= new_exp - 2 + SLACK_S, warned_at - new_exp
        assert code == 4001, code
        assert new_exp - 0.05 <= closed_at <= new_exp + SLACK_S, \
            f"closed {closed_at - new_exp:+.2f} s from the new exp"

    run(go(), timeout=60)


def test_a_token_without_exp_removes_the_deadline(sidecar_factory, redis, tokens):
    sc = jwt_sidecar(sidecar_factory, tokens)

    async def go():
        old_exp = int(time.time()) + 3
        ws = await open_session(sc, tokens, old_exp)
        assert await refresh(ws, token_for(tokens, None)) == {"type": "refreshed",
                                                             "expires_at": None}
        wait_channel(redis, "org:acme")
        await probe_until(redis, ws, old_exp + SLACK_S + 0.5)
        assert ws.open
        await ws.close()

    run(go())


# ----------------------------------------------------------------------------- refusals


def test_refused_refreshes_answer_errors_and_the_old_deadline_stands(sidecar_factory, redis,
                                                                     tokens):
    """Each bad refresh gets the code the handshake would give the same token; none closes the
    session or moves its deadline: it still ends with 4001 at the old exp."""
    sc = jwt_sidecar(sidecar_factory, tokens)
    later = int(time.time()) + 3600
    good = token_for(tokens, later)
    h, p, s = good.split(".")
    huge = token_for(tokens, later, pad="x" * 9000)  # over auth.jwt.max_token_bytes (8192)
    assert 8192 < len(huge) < 65536  # but within limits.max_message_bytes
    cases = [
        ("wrong org", {"type": "refresh", "token": token_for(tokens, later, org="globex")},
         "FORBIDDEN_ORG", "forbidden_org"),
        ("wrong user", {"type": "refresh", "token": token_for(tokens, later, sub="mallory")},
         "USER_MISMATCH", "user_mismatch"),
        ("no user", {"type": "refresh", "token": token_for(tokens, later, sub=None)},
         "USER_MISMATCH", "user_mismatch"),
        ("expired", {"type": "refresh", "token": token_for(tokens, int(time.time()) - 10)},
         "UNAUTHORIZED", "unauthorized"),
        ("bad signature", {"type": "refresh",
                           "token": token_for(tokens, later, key=SECRET + "-not")},
         "UNAUTHORIZED", "unauthorized"),
        ("tampered", {"type": "refresh", "token": tokens.add(f"{h}.{p}x.{s}")},
         "UNAUTHORIZED", "unauthorized"),
        ("garbage", {"type": "refresh", "token": "not-a-token-at-all-0123456789"},
         "UNAUTHORIZED", "unauthorized"),
        ("missing token", {"type": "refresh"}, "UNAUTHORIZED", "unauthorized"),
        ("token not a string", {"type": "refresh", "token": ["a", "b"]},
         "UNAUTHORIZED", "unauthorized"),
        ("huge token", {"type": "refresh", "token": huge}, "UNAUTHORIZED", "unauthorized"),
        ("bad user id", {"type": "refresh", "token": token_for(tokens, later, sub="a user")},
         "BAD_USER", "bad_user"),
    ]
    messages = {}

    async def go():
        old_exp = int(time.time()) + 4
        ws = await open_session(sc, tokens, old_exp)
        for what, msg, code, _ in cases:
            await ws.send(json.dumps(msg))
            answer = await next_of_type(ws, "error")
            assert answer["code"] == code, (what, answer)
            assert answer["recoverable"] is True, (what, answer)
            messages[what] = answer["message"]
        assert ws.open
        # The old deadline stands: 4001 at the old exp.
        code = await ws_close_code(ws, timeout=15)
        assert code == 4001, code
        assert time.time() >= old_exp - 0.05

    run(go(), timeout=60)
    assert messages["expired"] == "invalid token: expired"
    assert messages["bad signature"] == "invalid token: bad signature"
    assert messages["huge token"] == "invalid token: token too long"
    assert messages["missing token"] == "a token is required"
    assert messages["wrong org"] == "the token does not grant this org"
    assert refreshes(sc, "ok") == 0
    for result in ("forbidden_org", "user_mismatch", "unauthorized", "bad_user"):
        assert refreshes(sc, result) == sum(1 for c in cases if c[3] == result), result
    assert re.search(r"event=refresh_refused .*code=USER_MISMATCH", sc.log())


def test_a_refusal_is_the_same_as_the_handshakes_for_the_same_token(sidecar_factory, redis,
                                                                    tokens):
    """The handshake's JSON refusal and the refresh's error frame carry the same code and
    message for one bad token."""
    from security_util import handshake
    sc = jwt_sidecar(sidecar_factory, tokens)
    bad = token_for(tokens, int(time.time()) + 3600, key=SECRET + "-other")
    ans = handshake(sc.port, "/ws/acme", {"Authorization": f"Bearer {bad}"})
    assert ans.status == 401, ans
    body = ans.json()

    async def go():
        ws = await open_session(sc, tokens, int(time.time()) + 3600)
        answer = await refresh(ws, bad)
        assert (answer["code"], answer["message"]) == (body["error"], body["message"])
        await ws.close()

    run(go())


def test_refresh_with_auth_off_is_auth_disabled_and_not_forwarded(sidecar_factory, redis,
                                                                  tokens):
    sc = sidecar_factory(extra_yaml={"inbound": {"stream": "inbound:{org}"}})
    tokens.sidecars.append(sc)
    t = token_for(tokens, int(time.time()) + 3600)

    async def go():
        ws = await connect_ws(sc.ws_url("/ws/acme"))
        answer = await refresh(ws, t)
        assert answer["type"] == "error" and answer["code"] == "AUTH_DISABLED", answer
        assert answer["recoverable"] is True
        # The connection stays open and other messages still reach the backend's stream.
        await ws.send('{"type":"hello"}')
        await ws.send('{"type":"ping"}')
        assert (await next_of_type(ws, "pong"))["type"] == "pong"
        await ws.close()

    run(go())
    entries = redis.command("XRANGE", "inbound:acme", "-", "+")
    data = [dict(zip(e[1][::2], e[1][1::2]))[b"data"] for e in entries]
    assert data == [b'{"type":"hello"}'], data
    assert refreshes(sc, "auth_disabled") == 1


def test_refreshes_are_rate_limited_like_other_messages(sidecar_factory, redis, tokens):
    sc = jwt_sidecar(sidecar_factory, tokens,
                     extra={"limits": {"inbound_rate": 1, "inbound_burst": 3}})
    t = token_for(tokens, int(time.time()) + 3600)

    async def go():
        ws = await open_session(sc, tokens, int(time.time()) + 3600)
        for _ in range(5):
            await ws.send(json.dumps({"type": "refresh", "token": t}))
        answers = [await refresh_answer(ws) for _ in range(5)]
        kinds = [a.get("code", a["type"]) for a in answers]
        assert kinds.count("refreshed") >= 3 and "RATE_LIMITED" in kinds, kinds
        assert ws.open
        await ws.close()

    async def refresh_answer(ws):
        while True:
            msg = await recv_json(ws, 10)
            if msg.get("type") in ("refreshed", "error"):
                return msg

    run(go())
    assert metric(sc, "sidecar_inbound_rate_limited_total") >= 1
