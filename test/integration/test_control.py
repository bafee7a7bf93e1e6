"""Control commands and connection channels (issue 15), with two sidecars on one Redis.

Control: `PUBLISH sidecar:control '{"op":...}'` reaches both sidecars and each acts on its own
sessions: disconnect (close code and reason as the client sees them), reconnect (server_shutdown
advice with a jittered delay, then 1001), refresh (token_expiring, which a client answers with a
refresh). Malformed, unsigned or wrongly signed commands act on nobody and are counted by reason.

Connection channels: a client's message reaches the inbound stream with its `conn`; the backend
answers with `PUBLISH conn:<id>` and only that client gets the answer.

"Nobody else was affected" is proven without sleeping: after each command a probe is published on
the broadcast channel, which every client receives. Redis delivers a subscriber connection's
messages in order, so a sidecar has applied the command before it relays the probe; a client that
receives the probe (and nothing before it) was not touched."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import websockets

from harness import SLOW, RespConn, connect_ws, recv_json, run, wait_until, ws_close_code
from resilience_util import log_events, ready_status
from security_util import claims, mint
from test_client_node import drivers  # noqa: F401 - the fixture, shared
from test_redis_acl import BACKOFF, acl_user, sc_url

SECRET = "control-test-jwt-secret-0123456789abcdef"
CTL = "sidecar:control"


def config(**extra) -> dict:
    cfg = {"auth": {"mode": "jwt", "jwt": {"secret": SECRET}},
           "inbound": {"stream": "inbound:{org}"},
           "shutdown": {"reconnect_after_ms": 100, "reconnect_jitter_ms": 200},
           "websocket": {"close_timeout_ms": 800}}
    cfg.update(extra)
    return cfg


def wait_subscribed(redis, sidecars: int):
    """Every sidecar has the control channel and its connection pattern subscribed."""
    wait_until(lambda: redis.numsub(CTL) == sidecars, 10 * SLOW, f"{sidecars} control subscribers")
    wait_until(lambda: redis.command("PUBSUB", "NUMPAT") == sidecars, 10 * SLOW,
               f"{sidecars} connection patterns")


@pytest.fixture
def pair(sidecar_factory, redis):
    a = sidecar_factory(extra_yaml=config())
    b = sidecar_factory(extra_yaml=config())
    wait_subscribed(redis, 2)
    return a, b


def token(org="acme", sub="alice", ttl=300) -> str:
    return mint(claims(org=org, sub=sub, ttl=ttl), SECRET)


async def client(sc, org="acme", user="alice", ttl=300, **kw):
    ws = await connect_ws(sc.ws_url(f"/ws/{org}"),
                          extra_headers={"Authorization": f"Bearer {token(org, user, ttl)}"}, **kw)
    assert ws.welcome["type"] == "connected" and ws.welcome["user"] == user, ws.welcome
    ws.who = (org, user)
    return ws


def metric(sc, name: str) -> float:
    status, _, body = sc.http("GET", "/metrics")
    assert status == 200, body
    m = re.search(rf"^{re.escape(name)} (\S+)$", body.decode(), re.MULTILINE)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def refused(sc, reason: str) -> float:
    return metric(sc, f'sidecar_control_refused_total{{reason="{reason}"}}')


_probe_n = 0


async def probe_all(redis, clients):
    """Publishes one probe on the broadcast channel; every client must get it as its very next
    message (so nothing from a command came first) and still be open."""
    global _probe_n
    _probe_n += 1
    want = {"type": "PROBE", "n": _probe_n}
    redis.publish("sidecar:broadcast", json.dumps(want))
    for ws in clients:
        got = await recv_json(ws, 10)
        if got.get("type") == "message" and got.get("channel") == "sidecar:broadcast":
            got = got.get("data")  # a sidecar.v1 client's envelope
        assert got == want, (ws.who, got)


async def expect_close(ws, code: int, reason: str, first: dict | None = None):
    """The client is closed with this code and reason; with `first`, that message came before."""
    if first is not None:
        msg = await recv_json(ws, 10)
        for k, v in first.items():
            assert msg.get(k) == v, (ws.who, msg)
    try:
        extra = await asyncio.wait_for(ws.recv(), 10 * SLOW)
        raise AssertionError(f"{ws.who} got {extra!r} instead of a close")
    except websockets.ConnectionClosed as e:
        assert e.rcvd is not None and (e.rcvd.code, e.rcvd.reason) == (code, reason), (ws.who, e)


def sessions_acted(sc) -> float:
    return metric(sc, "sidecar_control_sessions_total")


def sign(cmd: str, secret: str) -> str:
    """The signed form: the command's text under "cmd", HMAC-SHA256 of exactly those bytes."""
    sig = hmac.new(secret.encode(), cmd.encode(), hashlib.sha256).hexdigest()
    return json.dumps({"cmd": cmd, "sig": sig})


# ----------------------------------------------------------------------------- hostile first


GARBAGE = {
    "not_json": ["", "disconnect everyone", "[]", "null", '{"op":"disconnect","all":true',
                 b'\xff\xfe{"op":"disconnect","all":true}', '"{\\"op\\":\\"disconnect\\"}"'],
    "unknown_op": ['{"op":"shutdown","all":true}', '{"all":true}', '{"op":7,"all":true}'],
    "no_selector": ['{"op":"disconnect"}', '{"op":"disconnect","all":false}',
                    '{"op":"refresh"}'],
    "bad_code": ['{"op":"disconnect","all":true,"code":1006}',
                 '{"op":"disconnect","all":true,"code":1002}',
                 '{"op":"disconnect","all":true,"code":5000}',
                 '{"op":"disconnect","all":true,"code":"4003"}'],
    "bad_field": ['{"op":"disconnect","org":"acme","usr":"alice"}',
                  '{"op":"disconnect","org":"../acme"}', '{"op":"disconnect","user":""}',
                  '{"op":"reconnect","all":true,"code":4000}',
                  '{"op":"disconnect","all":true,"reason":"' + "r" * 124 + '"}'],
    "oversized": ['{"op":"disconnect","all":true,"pad":"' + "x" * 5000 + '"}'],
}


def test_malformed_commands_affect_nobody_and_are_counted_by_reason(pair, redis):
    a, b = pair

    async def go():
        clients = [await client(a), await client(a, "globex", "bob"), await client(b)]
        for reason, payloads in GARBAGE.items():
            for p in payloads:
                assert redis.publish(CTL, p) == 2
        await probe_all(redis, clients)
        for sc in (a, b):
            for reason, payloads in GARBAGE.items():
                assert refused(sc, reason) == len(payloads), reason
            assert sessions_acted(sc) == 0
            assert metric(sc, 'sidecar_control_commands_total{op="disconnect"}') == 0
        assert a.wait_log(r"control_refused.*reason=bad_field")
        for ws in clients:
            await ws.close()

    run(go())


def test_a_flood_of_garbage_costs_nobody_and_every_command_is_counted(pair, redis):
    a, b = pair

    async def go():
        clients = [await client(a), await client(b)]
        conn = RespConn(redis.port)
        n = 3000
        junk = [["PUBLISH", CTL, f'{{"op":"disconnect","n":{i}' if i % 2 else f"\x00junk{i}"]
                for i in range(n)]
        conn.pipeline(junk)
        conn.close()
        await probe_all(redis, clients)
        for sc in (a, b):
            assert refused(sc, "not_json") == n
            assert sessions_acted(sc) == 0
            # One warning a second, not one per command.
            assert len(re.findall(r"level=warn.*control_refused", sc.log())) < 20
        # The sidecars still act on a good command after the flood.
        redis.publish(CTL, json.dumps({"op": "disconnect", "all": True, "code": 4000,
                                       "reason": "after flood"}))
        for ws in clients:
            await expect_close(ws, 4000, "after flood")

    run(go())


def test_with_a_secret_only_correctly_signed_commands_act(sidecar_factory, redis):
    key = "ctl-hmac-key-for-tests"
    cfg = config(control={"secret_env": "CTL_KEY"})
    a = sidecar_factory(extra_yaml=cfg, env={"CTL_KEY": key})
    b = sidecar_factory(extra_yaml=cfg, env={"CTL_KEY": key})
    wait_subscribed(redis, 2)

    async def go():
        clients = [await client(a), await client(b)]
        cmd = json.dumps({"op": "disconnect", "user": "alice", "code": 4003, "reason": "revoked"})
        redis.publish(CTL, cmd)  # plain: unsigned
        redis.publish(CTL, json.dumps({"cmd": cmd}))  # wrapped without sig: unsigned
        redis.publish(CTL, sign(cmd, "wrong-key"))
        redis.publish(CTL, sign(cmd.replace("4003", "4004"), key)[:-3] + '00"}')
        forged = json.loads(sign(cmd, key))
        forged["cmd"] = cmd.replace("alice", "bob")  # another command under alice's signature
        redis.publish(CTL, json.dumps(forged))
        await probe_all(redis, clients)
        for sc in (a, b):
            assert refused(sc, "unsigned") == 2
            assert refused(sc, "bad_signature") == 3
            assert sessions_acted(sc) == 0
        redis.publish(CTL, sign(cmd, key))
        for ws in clients:
            await expect_close(ws, 4003, "revoked")
        for sc in (a, b):
            assert sessions_acted(sc) == 1
        assert key not in a.log() and key not in b.log()

    run(go())


# ----------------------------------------------------------------------------- the ops


def test_disconnect_by_org_and_user_closes_exactly_those_on_both_sidecars(pair, redis):
    a, b = pair

    async def go():
        alice_a = [await client(a), await client(a)]  # two tabs
        alice_b = [await client(b)]
        others = [await client(a, "acme", "bob"), await client(a, "globex", "alice"),
                  await client(b, "acme", "bob"), await client(b, "globex", "alice")]
        redis.publish(CTL, '{"op":"disconnect","org":"acme","user":"alice","code":4003,'
                           '"reason":"revoked"}')
        for ws in alice_a + alice_b:
            await expect_close(ws, 4003, "revoked")
        await probe_all(redis, others)
        assert sessions_acted(a) == 2 and sessions_acted(b) == 1
        assert metric(a, 'sidecar_control_commands_total{op="disconnect"}') == 1

        # By user alone: alice in every org.
        redis.publish(CTL, '{"op":"disconnect","user":"alice"}')
        for ws in (others[1], others[3]):
            await expect_close(ws, 1008, "disconnected")
        await probe_all(redis, [others[0], others[2]])
        for ws in others:
            await ws.close()

    run(go())


def test_disconnect_by_connection_id_closes_that_one_only(pair, redis):
    a, b = pair

    async def go():
        target = await client(b)
        rest = [await client(b), await client(a)]
        conn_id = target.welcome["connection_id"]
        # An id of the other sidecar's shape, and one that only shares a prefix, select nobody.
        redis.publish(CTL, json.dumps({"op": "disconnect", "conn": conn_id + "0"}))
        redis.publish(CTL, json.dumps({"op": "disconnect", "conn": conn_id[:-1]}))
        await probe_all(redis, [target] + rest)
        redis.publish(CTL, json.dumps({"op": "disconnect", "conn": conn_id, "code": 1000,
                                       "reason": "bye"}))
        await expect_close(target, 1000, "bye")
        await probe_all(redis, rest)
        assert sessions_acted(a) == 0 and sessions_acted(b) == 1
        for ws in rest:
            await ws.close()

    run(go())


def test_reconnect_advises_a_jittered_delay_then_closes_1001(pair, redis):
    a, b = pair

    async def go():
        acme = [await client(sc) for sc in (a, b, a, b, a, b, a, b)]
        globex = [await client(a, "globex"), await client(b, "globex")]
        redis.publish(CTL, json.dumps({"op": "reconnect", "org": "acme", "after_ms": 5000,
                                       "jitter_ms": 3000}))
        delays = []
        for ws in acme:
            msg = await recv_json(ws, 10)
            assert msg["type"] == "server_shutdown" and msg["reason"] == "reconnect", msg
            assert 5000 <= msg["reconnect_after_ms"] <= 8000, msg
            delays.append(msg["reconnect_after_ms"])
            await expect_close(ws, 1001, "reconnect")
        # Eight draws from 3001 values: all equal would mean no jitter.
        assert len(set(delays)) > 1, delays
        await probe_all(redis, globex)
        # Without after_ms/jitter_ms the shutdown settings apply (100 + 0..200).
        instance_a = globex[0].welcome["connection_id"].split("-")[0]
        redis.publish(CTL, json.dumps({"op": "reconnect", "sidecar": instance_a}))
        msg = await recv_json(globex[0], 10)
        assert msg["type"] == "server_shutdown" and 100 <= msg["reconnect_after_ms"] <= 300, msg
        await expect_close(globex[0], 1001, "reconnect")
        await probe_all(redis, [globex[1]])
        await globex[1].close()

    run(go())


def test_refresh_asks_for_a_token_and_the_client_refreshes(pair, redis):
    a, b = pair

    async def go():
        alice = [await client(a, ttl=300), await client(b, ttl=300)]
        bob = await client(b, "acme", "bob")
        exp = int(time.time()) + 300
        redis.publish(CTL, '{"op":"refresh","user":"alice"}')
        for ws in alice:
            msg = await recv_json(ws, 10)
            assert msg["type"] == "token_expiring" and msg["reason"] == "refresh", msg
            assert abs(msg["expires_at"] - exp) <= 5, msg
            # What the JS client does on token_expiring: get a token, send a refresh.
            await ws.send(json.dumps({"type": "refresh", "token": token(ttl=900)}))
            answer = await recv_json(ws, 10)
            assert answer["type"] == "refreshed" and answer["expires_at"] > exp + 500, answer
        await probe_all(redis, alice + [bob])
        assert metric(a, 'sidecar_control_commands_total{op="refresh"}') == 1
        for ws in alice + [bob]:
            await ws.close()

    run(go())


def test_control_survives_the_subscriber_link_being_killed(pair, redis):
    a, b = pair

    async def go():
        clients = [await client(a), await client(b)]
        killed = redis.command("CLIENT", "KILL", "TYPE", "pubsub")
        assert killed >= 2, killed
        # Both sidecars subscribe the channel and the pattern again on their new connections.
        wait_subscribed(redis, 2)
        await probe_all(redis, clients)  # the broadcast room is back too
        redis.publish(CTL, '{"op":"disconnect","all":true,"code":4009,"reason":"after kill"}')
        for ws in clients:
            await expect_close(ws, 4009, "after kill")

    run(go())


def test_control_channel_off_subscribes_nothing(sidecar_factory, redis):
    sc = sidecar_factory(extra_yaml=config(control={"channel": ""},
                                           channels={"connection": ""}))

    async def go():
        ws = await client(sc)
        assert redis.numsub(CTL) == 0
        assert redis.command("PUBSUB", "NUMPAT") == 0
        await probe_all(redis, [ws])
        await ws.close()

    run(go())


# ----------------------------------------------------------------------------- one connection


def test_request_response_through_the_inbound_stream_and_conn_channel(pair, redis):
    a, b = pair

    async def go():
        asker = await client(a)
        same_side = await client(a)  # same org, user and sidecar
        other_side = await client(b)
        v1 = await client(a, subprotocols=["sidecar.v1"])
        await asker.send('{"type":"question","q":42}')
        # The backend reads the stream and answers the connection that asked.
        reply = json.loads(redis.cli("-2", "--json", "XREAD", "COUNT", "1", "BLOCK", "5000",
                                     "STREAMS", "inbound:acme", "0"))
        fields = reply[0][1][0][1]  # [[stream, [[id, [field, value, ...]]]]]
        entry = dict(zip(fields[::2], fields[1::2]))
        assert entry["conn"] == asker.welcome["connection_id"], entry
        assert json.loads(entry["data"]) == {"type": "question", "q": 42}
        answer = '{"type":"answer","a":"forty-two"}'
        # Only sidecar a's pattern matches: exactly one Redis subscriber receives it.
        assert redis.publish(f"conn:{entry['conn']}", answer) == 1
        assert await asyncio.wait_for(asker.recv(), 10 * SLOW) == answer
        await probe_all(redis, [asker, same_side, other_side, v1])
        # Binary stays binary; a sidecar.v1 client gets the envelope, without a position.
        assert redis.publish(f"conn:{entry['conn']}", b"\x00\xff") == 1
        assert await asyncio.wait_for(asker.recv(), 10 * SLOW) == b"\x00\xff"
        redis.publish(f"conn:{v1.welcome['connection_id']}", answer)
        env = await recv_json(v1, 10)
        assert env == {"type": "message", "channel": f"conn:{v1.welcome['connection_id']}",
                       "data": {"type": "answer", "a": "forty-two"}}, env
        await probe_all(redis, [asker, same_side, other_side, v1])
        assert metric(a, 'sidecar_connection_messages_total{result="delivered"}') == 3
        # A connection that is gone, and ids this sidecar never gave, reach nobody.
        gone = asker.welcome["connection_id"]
        await asker.close()
        wait_until(lambda: metric(a, "sidecar_connections_open") == 2, 10 * SLOW, "close")
        for ch in (f"conn:{gone}", f"conn:{gone}999999", f"conn:{gone.split('-')[0]}-x",
                   f"conn:{gone.split('-')[0]}-"):
            assert redis.publish(ch, answer) == 1
        await probe_all(redis, [same_side, other_side, v1])
        wait_until(lambda: metric(a, 'sidecar_connection_messages_total{result="unrouted"}') == 4,
                   5 * SLOW, "unrouted count")
        for ws in (same_side, other_side, v1):
            await ws.close()

    run(go())


def test_the_readme_shell_signing_example_works(sidecar_factory, redis):
    """README, Control commands: the openssl dgst + redis-cli lines, run as written."""
    key = "readme-example-secret"
    sc = sidecar_factory(extra_yaml=config(control={"secret_env": "SIDECAR_CONTROL_SECRET"}),
                         env={"SIDECAR_CONTROL_SECRET": key})
    wait_subscribed(redis, 1)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("CMD='{\"op\":\"disconnect\"", 1)[1].split("```", 1)[0]
    script = "CMD='{\"op\":\"disconnect\"" + block

    async def go():
        ws = await client(sc)
        env = {"PATH": os.environ["PATH"], "SIDECAR_CONTROL_SECRET": key}
        script_here = script.replace("redis-cli ", f"redis-cli -p {redis.port} ")
        done = subprocess.run(["bash", "-c", script_here], env=env, capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0 and done.stdout.strip() == "1", (done.stdout, done.stderr)
        await expect_close(ws, 4003, "revoked")
        assert refused(sc, "bad_signature") == 0 and refused(sc, "not_json") == 0

    run(go())


def test_a_refused_control_subscription_is_retried_and_visible_not_silent(sidecar_factory, redis):
    """An ACL without the control channel or the connection pattern: both refusals are logged
    with what they cost, counted, shown in /ready's "degraded", retried on the backoff, and once
    granted the channel and the pattern work."""
    acl_user(redis, "org:*", "sidecar:broadcast")
    sc = sidecar_factory(redis_url=sc_url(redis), extra_yaml=config(redis=BACKOFF))

    async def go():
        ws = await client(sc)
        instance = ws.welcome["connection_id"].split("-")[0]
        wait_until(lambda: len(log_events(sc, "redis_subscribe_refused")) >= 2, 5 * SLOW,
                   "both refusals logged")
        actions = {r["channel"]: r["action"] for r in log_events(sc, "redis_subscribe_refused")}
        assert "control commands" in actions[CTL], actions
        assert "connection channels" in actions[f"conn:{instance}-*"], actions
        wait_until(lambda: metric(sc, "sidecar_redis_channels_refused") == 2, 5 * SLOW, "gauge")
        status, body = ready_status(sc)
        assert status == 200 and "2 channels" in body.get("degraded", ""), (status, body)
        assert redis.publish(CTL, '{"op":"disconnect","all":true}') == 0
        # Granted: the next retries subscribe both (a pattern is granted by its exact text).
        assert redis.command("ACL", "SETUSER", "sc", f"&{CTL}", f"&conn:{instance}-*") == b"OK"
        wait_subscribed(redis, 1)
        wait_until(lambda: ready_status(sc)[1].get("degraded") is None, 5 * SLOW, "not degraded")
        assert redis.publish(f"conn:{ws.welcome['connection_id']}", "hello you") == 1
        assert await asyncio.wait_for(ws.recv(), 10 * SLOW) == "hello you"
        redis.publish(CTL, '{"op":"disconnect","all":true,"code":4000,"reason":"granted"}')
        await expect_close(ws, 4000, "granted")

    run(go())


def test_the_js_client_refreshes_on_refresh_and_waits_the_advice_on_reconnect(
        sidecar_factory, redis, drivers):
    """client/sidecar-client.js in Node: a refresh command makes it fetch a token and refresh in
    band on the same connection; a reconnect command makes it wait exactly the advised delay and
    come back on a new connection."""
    sc = sidecar_factory(extra_yaml=config())
    wait_subscribed(redis, 1)
    long_exp = int(time.time()) + 3600
    d = drivers({"tokens": [token(ttl=600), mint(claims(ttl=None, exp=long_exp), SECRET)],
                 "options": {"url": sc.ws_url("/ws/acme"), "refresh": "in-band"}})
    first = d.wait_state("open")
    redis.publish(CTL, '{"op":"refresh","org":"acme","user":"alice"}')
    asked = d.wait(lambda e: e["event"] == "control" and e["type"] == "token_expiring", 10)
    assert asked["payload"]["reason"] == "refresh", asked
    refreshed = d.wait(lambda e: e["event"] == "control" and e["type"] == "refreshed", 10)
    assert refreshed["payload"]["expires_at"] == long_exp, refreshed
    assert [e["state"] for e in d.of("state")] == ["connecting", "open"]

    redis.publish(CTL, json.dumps({"op": "reconnect", "conn": first["connectionId"],
                                   "after_ms": 700, "jitter_ms": 0}))
    lost = d.wait_state("reconnecting", reason="server_shutdown")
    assert lost["delayMs"] == 700 and lost["code"] == 1001, lost
    again = d.wait_state("open")
    assert again["connectionId"] != first["connectionId"]
    assert again["t"] - lost["t"] >= 700 - 20, (lost, again)


def test_a_room_named_like_the_control_channel_never_sees_commands_nor_unsubscribes_it(
        sidecar_factory, redis):
    """A route whose channel is the bare org lets a client name the room "sidecar:control". The
    commands still go to the control side only, and the client leaving does not unsubscribe it."""
    sc = sidecar_factory(extra_yaml=config(routes=[{"path": "/ws/{org}", "channel": "{org}"}]))
    wait_subscribed(redis, 1)

    async def go():
        nosy = await client(sc, org=CTL)
        victim = await client(sc, org="acme")
        redis.publish(CTL, '{"op":"refresh","org":"acme"}')
        msg = await recv_json(victim, 10)
        assert msg["type"] == "token_expiring" and msg["reason"] == "refresh", msg
        await probe_all(redis, [nosy, victim])  # nosy's next message is the probe, not the command
        await nosy.close()
        wait_until(lambda: metric(sc, "sidecar_connections_open") == 1, 10 * SLOW, "nosy gone")
        assert redis.numsub(CTL) == 1
        redis.publish(CTL, '{"op":"disconnect","org":"acme","code":4000,"reason":"still here"}')
        await expect_close(victim, 4000, "still here")

    run(go())
