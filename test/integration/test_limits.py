"""Connection and message limits: the N+1th connection is refused (503 at max_connections, 429
per org, user and IP), handshakes per IP per second, the inbound token bucket (burst, then
RATE_LIMITED error frames, then close 1008), and the message size limit (close 1009).

Per-IP limits are told apart with source addresses 127.0.0.1 and 127.0.0.2, both loopback."""

from __future__ import annotations

import json
import select
import time

import jwt
import pytest

from harness import (OP_BINARY, OP_CONT, OP_TEXT, RawWs, connect_ws, encode_frame,
                     read_http_head, run, upgrade_request, wait_until, ws_close_code)
from security_util import (Answer, SubscribeWatch, accepted, assert_not_subscribed, check_refusal,
                           close_all, handshake, next_non_probe, wait_channel)

OTHER_IP = "127.0.0.2"
SECRET = "limits-test-secret-0123456789abcdef"


def admitted_eventually(sc, path: str, headers: dict | None = None, src_ip: str | None = None,
                        timeout: float = 5.0):
    """Retries a handshake until it is admitted: a slot freed by a closed connection comes back
    once the sidecar has seen the close. Returns the RawWs with its welcome read."""
    statuses = []

    def attempt():
        ans = handshake(sc.port, path, headers, src_ip=src_ip)
        if ans.status != 101:
            statuses.append(ans.status)
            return None
        ans.ws.welcome = ans.ws.recv_json()
        return ans.ws

    return wait_until(attempt, timeout, f"admission to {path} (refused with {statuses[-3:]})",
                      interval=0.02)


# ----------------------------------------------------------------------------- connection counts


def test_max_connections_refuses_the_next_with_503(sidecar_factory, redis):
    sc = sidecar_factory(extra_yaml={"limits": {"max_connections": 3}})
    conns = [accepted(sc, redis, f"/ws/c{i}") for i in range(3)]
    body = check_refusal(handshake(sc.port, "/ws/over"), 503, "AT_CAPACITY")
    assert body["message"]
    # A refused attempt holds no slot: still at capacity.
    check_refusal(handshake(sc.port, "/ws/over"), 503)
    # HTTP endpoints are not connections and keep answering.
    assert sc.http("GET", "/health")[0] == 200
    # One leaves; the next is admitted, and it works as the sentinel proving that "over" was
    # never subscribed.
    conns.pop().close()
    s = admitted_eventually(sc, "/ws/sentinel")
    wait_channel(redis, "org:sentinel")
    assert "org:over" not in redis.pubsub_channels()
    check_refusal(handshake(sc.port, "/ws/over"), 503)
    close_all(s, *conns)


def test_max_connections_per_org_refuses_with_429(sidecar_factory, redis):
    sc = sidecar_factory(extra_yaml={"limits": {"max_connections_per_org": 2}})
    a = [accepted(sc, redis, "/ws/acme") for _ in range(2)]
    check_refusal(handshake(sc.port, "/ws/acme"), 429, "ORG_LIMIT")
    check_refusal(handshake(sc.port, "/ws/acme"), 429, "ORG_LIMIT")
    # Other orgs are not affected.
    b = [accepted(sc, redis, "/ws/beta") for _ in range(2)]
    check_refusal(handshake(sc.port, "/ws/beta"), 429)
    # The refusals took no slot: one acme leaves, exactly one comes back in.
    a.pop().close()
    a.append(admitted_eventually(sc, "/ws/acme"))
    check_refusal(handshake(sc.port, "/ws/acme"), 429)
    close_all(*a, *b)


def token(org: str, sub: str) -> str:
    return jwt.encode({"org": org, "sub": sub, "exp": int(time.time()) + 300}, SECRET)


def test_max_connections_per_user_refuses_with_429(sidecar_factory, redis):
    sc = sidecar_factory(extra_yaml={
        "limits": {"max_connections_per_user": 2},
        "auth": {"mode": "jwt", "jwt": {"secret": SECRET}}})
    bearer = lambda org, sub: {"Authorization": f"Bearer {token(org, sub)}"}
    alice = [accepted(sc, redis, "/ws/acme", bearer("acme", "alice")) for _ in range(2)]
    check_refusal(handshake(sc.port, "/ws/acme", bearer("acme", "alice")), 429, "USER_LIMIT")
    # Another user of the same org is not affected.
    bob = accepted(sc, redis, "/ws/acme", bearer("acme", "bob"))
    alice.pop().close()
    alice.append(admitted_eventually(sc, "/ws/acme", bearer("acme", "alice")))
    check_refusal(handshake(sc.port, "/ws/acme", bearer("acme", "alice")), 429)
    close_all(*alice, bob)


def test_max_connections_per_ip_refuses_with_429(sidecar_factory, redis):
    sc = sidecar_factory(extra_yaml={"limits": {"max_connections_per_ip": 2}})
    mine = [accepted(sc, redis, f"/ws/ip{i}") for i in range(2)]
    watch = SubscribeWatch(redis)
    check_refusal(handshake(sc.port, "/ws/ipover"), 429, "IP_LIMIT")
    # Another address is counted on its own; it also serves as the sentinel proving that the
    # refused request subscribed nothing (MONITOR sees every SUBSCRIBE in between).
    assert_not_subscribed(redis, sc.port, "ipover", lambda o: {}, src_ip=OTHER_IP, watch=watch)
    watch.close()
    theirs = accepted(sc, redis, "/ws/other", src_ip=OTHER_IP)
    assert theirs.welcome["org"] == "other"
    mine.pop().close()
    mine.append(admitted_eventually(sc, "/ws/ip9"))
    check_refusal(handshake(sc.port, "/ws/ipover"), 429)
    close_all(*mine, theirs)


def handshake_burst(sc, paths: list[str]) -> list[Answer]:
    """Connects one socket per path first, then sends every upgrade request in one pass and
    reads the answers: the sidecar sees the requests within a millisecond or so of each other,
    however slow the machine was at connecting. 101 answers carry an open RawWs."""
    socks = [sc.raw_connect() for _ in paths]
    answers = []
    try:
        for s, path in zip(socks, paths):
            s.sendall(upgrade_request(path))
        for s in socks:
            status, head, rest = read_http_head(s)
            if status == 101:
                ws = RawWs(s, rest)
                ws.status, ws.headers = status, head
                answers.append(Answer(status, head, b"", ws))
                continue
            n = int(head.get("content-length", "0"))
            while len(rest) < n:
                chunk = s.recv(65536)
                if not chunk:
                    break
                rest += chunk
            s.close()
            answers.append(Answer(status, head, rest[:n]))
    except BaseException:
        for s in socks:
            s.close()
        raise
    return answers


def test_handshakes_per_ip_per_second_refuses_with_429(sidecar_factory, redis):
    # admission.cpp: each address has a one-second window that opens at its first upgrade
    # request after the previous window ended, and every request in it counts, refused ones
    # too; over `rate` in a window is 429. This sidecar has seen no upgrade yet (its /health
    # probes are not upgrades), so the burst opens a window, and all of it lands in that window:
    # no retry, no skip, the same answer on a slow machine.
    rate, burst = 3, 7
    sc = sidecar_factory(extra_yaml={"limits": {"handshakes_per_ip_per_s": rate}})
    watch = SubscribeWatch(redis)
    answers = handshake_burst(sc, [f"/ws/h{i}" for i in range(burst)])
    statuses = [a.status for a in answers]
    # Requests on separate sockets may be read in any order: which ones win is not fixed, how
    # many is.
    assert sorted(statuses) == [101] * rate + [429] * (burst - rate), statuses
    admitted = [a for a in answers if a.status == 101]
    for a in admitted:
        assert a.ws.recv_json()["type"] == "connected"
    for a in answers:
        if a.status != 101:
            check_refusal(a, 429, "TOO_MANY_HANDSHAKES")
    refused_orgs = [f"h{i}" for i, a in enumerate(answers) if a.status == 429]
    # Another address has its own budget and proves the refused orgs were never subscribed.
    assert_not_subscribed(redis, sc.port, refused_orgs, lambda o: {}, src_ip=OTHER_IP,
                          watch=watch)
    watch.close()
    close_all(*(a.ws for a in admitted))
    # A later window admits again.
    close_all(admitted_eventually(sc, "/ws/later"))


# ----------------------------------------------------------------------------- inbound rate


def rate_sidecar(sidecar_factory, rate, burst, violations):
    return sidecar_factory(extra_yaml={"limits": {
        "inbound_rate": rate, "inbound_burst": burst,
        "inbound_violations_before_close": violations}})


def test_burst_then_rate_limited_errors_then_close_1008(sidecar_factory, redis):
    burst, violations = 5, 3
    # A refill rate so low that no token comes back during the test.
    sc = rate_sidecar(sidecar_factory, 0.001, burst, violations)
    ws = accepted(sc, redis, "/ws/acme")
    ping = b'{"type":"ping"}'
    ws.send(b"".join(encode_frame(OP_TEXT, ping) for _ in range(burst + violations + 1)))
    replies = []
    while True:
        f = ws.recv_message(timeout=5)
        assert f is not None, f"TCP ended without a close frame after {replies}"
        if f.opcode == 0x8:
            code = f.close_code()
            break
        replies.append(json.loads(f.payload))
    pongs = [r for r in replies if r["type"] == "pong"]
    errors = [r for r in replies if r["type"] == "error"]
    assert replies[:burst] == pongs and len(pongs) == burst, replies
    for e in errors:
        assert e == {"type": "error", "code": "RATE_LIMITED", "message": e["message"],
                     "recoverable": True}, e
    # config/sidecar.yaml: inbound_violations_before_close is the number of "RATE_LIMITED error
    # replies a connection may earn before it is closed with 1008".
    assert len(errors) == violations, replies
    assert code == 1008, code
    close_all(ws)


def test_bucket_refills_at_the_configured_rate(sidecar_factory, redis):
    # Token bucket (session.cpp): `rate` tokens a second, at most `burst` held. Empty it, then
    # ask every 10 ms for about two seconds and count the pongs. The counts are bounded both
    # ways by the clock this test reads around the sidecar's own: a refill too slow or too fast
    # fails, and a slow machine only widens the interval the bounds are computed from.
    rate, burst = 20.0, 10
    sc = rate_sidecar(sidecar_factory, rate, burst, 1000000)
    ws = accepted(sc, redis, "/ws/acme")
    ping = encode_frame(OP_TEXT, b'{"type":"ping"}')
    t_drain_sent = time.monotonic()
    ws.send(ping * (burst + 1))
    got = [json.loads(next_non_probe(ws)) for _ in range(burst + 1)]
    t_drained = time.monotonic()
    assert [g["type"] for g in got] == ["pong"] * burst + ["error"], got
    assert got[-1]["code"] == "RATE_LIMITED"

    pongs = errors = 0
    t_last_sent = t_drained
    while True:
        # Pace: at 20/s a token comes every 50 ms, so asking every ~10 ms wastes none (the
        # bucket could hold ten) and costs a few hundred RATE_LIMITED replies at most.
        select.select([], [], [], 0.01)
        t_last_sent = time.monotonic()
        ws.send(ping)
        reply = json.loads(next_non_probe(ws))
        if reply["type"] == "pong":
            pongs += 1
        else:
            assert reply["code"] == "RATE_LIMITED", reply
            errors += 1
        if time.monotonic() - t_drained >= 2.0:
            break
    t_end = time.monotonic()
    # The sidecar emptied the bucket between t_drain_sent and t_drained, and handled the last
    # ping between t_last_sent and t_end: tokens made in between are rate * that interval, less
    # than one was left over at the start, and at most `burst` may still be unspent at the end.
    # 10 ms of slack either way for the sidecar's millisecond loop clock.
    most = int(rate * (t_end - t_drain_sent + 0.01)) + 1
    least = int(rate * (t_last_sent - t_drained - 0.01)) - burst
    print(f"pongs={pongs} errors={errors} bounds=[{least}, {most}]")
    assert least <= pongs <= most, (pongs, least, most)
    close_all(ws)


# ----------------------------------------------------------------------------- message size


def size_sidecar(sidecar_factory):
    return sidecar_factory(extra_yaml={"limits": {"max_message_bytes": 1024}})


def padded_ping(n: int) -> bytes:
    head = b'{"type":"ping","pad":"'
    msg = head + b"x" * (n - len(head) - 2) + b'"}'
    assert len(msg) == n
    return msg


def test_message_at_the_limit_is_accepted(sidecar_factory, redis):
    sc = size_sidecar(sidecar_factory)
    ws = accepted(sc, redis, "/ws/acme")
    ws.send_frame(OP_TEXT, padded_ping(1024))
    assert json.loads(next_non_probe(ws))["type"] == "pong"
    # Fragmented, still within the limit in total.
    ws.send_frame(OP_TEXT, padded_ping(1024)[:500], fin=False)
    ws.send_frame(OP_CONT, padded_ping(1024)[500:])
    assert json.loads(next_non_probe(ws))["type"] == "pong"
    close_all(ws)


@pytest.mark.parametrize("how", ["text", "binary", "fragments"])
def test_message_over_the_limit_closes_1009(sidecar_factory, redis, how):
    sc = size_sidecar(sidecar_factory)
    ws = accepted(sc, redis, "/ws/acme")
    big = padded_ping(1025)
    if how == "text":
        ws.send_frame(OP_TEXT, big)
    elif how == "binary":
        ws.send_frame(OP_BINARY, b"\x00" * 4096)
    else:
        ws.send_frame(OP_TEXT, big[:600], fin=False)
        ws.send_frame(OP_CONT, big[600:])
    assert ws.recv_close(timeout=5) == 1009
    close_all(ws)
    # The room is released once the only member is gone.
    wait_channel(redis, "org:acme", present=False)


def test_websockets_client_sending_too_much_is_closed_1009(sidecar_factory, redis):
    sc = size_sidecar(sidecar_factory)

    async def main():
        c = await connect_ws(sc.ws_url())
        await c.send(json.dumps({"type": "ping", "pad": "y" * 2000}))
        return await ws_close_code(c)

    assert run(main()) == 1009
