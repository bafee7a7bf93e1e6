"""More channels per client (issue 15): {"type":"subscribe","channel":…} and "unsubscribe", only
where `subscriptions.allow` (templates bound by the connection's org, user and token claims) or
the token's channel-list claim allows it. Hostile names first: other orgs, traversal-like names,
wildcards, pattern characters, injection attempts; each is refused with an error frame, never
reaches Redis as a SUBSCRIBE, and the connection stays usable.

Clients are Python ``websockets``; tokens are minted by PyJWT; publications go through a real
redis-server. Every wait is on a frame, bounded."""

from __future__ import annotations

import json
import os
import subprocess
import time

import websockets

from client_util import NODE_DIR, ClientDriver, ensure_node_modules
from harness import SLOW, connect_ws, recv_json, run
from security_util import claims, mint, wait_channel

SECRET = "subscriptions-test-secret-of-decent-length-0123456789"
ALLOW = ["org:{org}:doc:*", "org:{org}:team:{claim.team}", "org:{org}:user:{user}:inbox"]


def sub_sidecar(sidecar_factory, allow=None, claim="channels", max_per_connection=4, extra=None):
    cfg = {"auth": {"mode": "jwt", "jwt": {"secret": SECRET, "algorithms": ["HS256"]}},
           "subscriptions": {"allow": ALLOW if allow is None else allow, "claim": claim,
                             "max_per_connection": max_per_connection},
           # Subscribe requests spend the inbound rate budget like any message; the hostile
           # test sends dozens in a row.
           "limits": {"inbound_rate": 1000, "inbound_burst": 1000}}
    cfg.update(extra or {})
    return sidecar_factory(extra_yaml=cfg)


def token(org="acme", sub="alice", **extra) -> str:
    return mint(claims(org=org, sub=sub, **extra), SECRET)


async def connect(sc, tok, path="/ws/acme", **kw):
    ws = await connect_ws(sc.ws_url(path), extra_headers={"Authorization": f"Bearer {tok}"}, **kw)
    assert ws.welcome["type"] == "connected", ws.welcome
    return ws


async def ask(ws, kind: str, channel, **extra) -> dict:
    """Sends a subscribe/unsubscribe and returns the answer about it (skipping anything else)."""
    await ws.send(json.dumps({"type": kind, "channel": channel, **extra}))
    deadline = time.monotonic() + 10 * SLOW
    while True:
        msg = await recv_json(ws, max(deadline - time.monotonic(), 0.001) / SLOW)
        if msg.get("type") in ("subscribed", "unsubscribed", "error"):
            return msg


async def still_usable(ws):
    await ws.send(json.dumps({"type": "ping"}))
    while (await recv_json(ws, 5)).get("type") != "pong":
        pass


async def next_payload(ws, timeout=5.0) -> dict:
    """The next relayed publication (a JSON object the test published, carrying "n")."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        msg = await recv_json(ws, max(deadline - time.monotonic(), 0.001) / SLOW)
        if "n" in msg or msg.get("type") == "message":
            return msg


def test_hostile_channel_names_are_refused_and_never_subscribed(sidecar_factory, redis):
    sc = sub_sidecar(sidecar_factory)
    refused = {
        "BAD_CHANNEL": ["", "*", "org:acme:*", "org:acme:doc:*", "org:acme:doc:?",
                        "org:acme:doc:[1]", "org:acme:doc:../../beta", "org:acme:doc:1/../x",
                        "org::acme", "org:acme:doc:", "org:acme:doc:1\r\nFLUSHALL",
                        "org:acme:doc:1 2", "org:acme:doc:\u00e9", "x" * 201, 5, None,
                        ["org:acme:doc:1"], {"c": 1}],
        "FORBIDDEN_CHANNEL": ["org:beta:doc:1", "org:beta:team:red", "org:acme:team:blue",
                              "org:acme:doc:1:comments", "org:acme:doc", "org:acme:user:bob:inbox",
                              "sidecar:control", "news:sports",
                              "org:acme:team:red:x", "ORG:acme:doc:1"],
        "ALREADY_SUBSCRIBED": ["org:acme", "org:acme:user:alice", "sidecar:broadcast"],
    }

    async def main():
        ws = await connect(sc, token(team="red"))
        for code, names in refused.items():
            for name in names:
                answer = await ask(ws, "subscribe", name)
                assert answer["type"] == "error" and answer["code"] == code, (name, answer)
                assert answer["recoverable"] is True
        # Unsubscribing from what the route joined, or from anything never subscribed, is refused.
        for name in ("org:acme", "org:acme:doc:9"):
            answer = await ask(ws, "unsubscribe", name)
            assert answer["code"] == "NOT_SUBSCRIBED", (name, answer)
        await still_usable(ws)
        await ws.close()

    run(main(), 60 * SLOW)
    subscribed = redis.pubsub_channels()
    assert not any(c.startswith("org:beta") or "doc" in c or "team" in c for c in subscribed), \
        subscribed
    status, _, body = sc.http("GET", "/metrics")
    assert status == 200
    m = body.decode()
    forbidden = len(refused["FORBIDDEN_CHANNEL"])
    assert f'sidecar_subscriptions_total{{result="forbidden_channel"}} {forbidden}' in m
    assert 'sidecar_subscriptions_total{result="subscribed"} 0' in m


def test_granted_channels_deliver_only_to_subscribers_until_unsubscribed(sidecar_factory, redis):
    sc = sub_sidecar(sidecar_factory)

    async def main():
        alice = await connect(sc, token(team="red"))
        bob = await connect(sc, token(sub="bob", team="blue"))
        for name in ("org:acme:doc:42", "org:acme:team:red", "org:acme:user:alice:inbox"):
            assert await ask(alice, "subscribe", name) == {"type": "subscribed", "channel": name}
            wait_channel(redis, name)
        assert (await ask(bob, "subscribe", "org:acme:doc:42"))["type"] == "subscribed"
        redis.publish("org:acme:doc:42", json.dumps({"n": 1}))
        assert await next_payload(alice) == {"n": 1}
        assert await next_payload(bob) == {"n": 1}
        redis.publish("org:acme:team:red", json.dumps({"n": 2}))
        redis.publish("org:acme:user:alice:inbox", json.dumps({"n": 3}))
        redis.publish("org:acme", json.dumps({"n": 4}))  # the org room: both
        assert await next_payload(alice) == {"n": 2}
        assert await next_payload(alice) == {"n": 3}
        assert await next_payload(alice) == {"n": 4}
        assert await next_payload(bob) == {"n": 4}  # bob never saw red team's or alice's inbox
        assert await ask(alice, "unsubscribe", "org:acme:doc:42") == \
            {"type": "unsubscribed", "channel": "org:acme:doc:42"}
        redis.publish("org:acme:doc:42", json.dumps({"n": 5}))
        redis.publish("org:acme", json.dumps({"n": 6}))
        assert await next_payload(alice) == {"n": 6}  # 5 never came
        assert await next_payload(bob) == {"n": 5}
        await bob.close()
        wait_channel(redis, "org:acme:doc:42", present=False)  # the last member left
        await alice.close()

    run(main(), 60 * SLOW)


def test_limit_claim_list_and_disabled(sidecar_factory, redis):
    sc = sub_sidecar(sidecar_factory, max_per_connection=2)
    off = sidecar_factory(extra_yaml={"auth": {"mode": "jwt", "jwt": {"secret": SECRET,
                                                                      "algorithms": ["HS256"]}}})

    async def main():
        ws = await connect(sc, token(channels=["news:sports", "bad name", "news:*"]))
        assert (await ask(ws, "subscribe", "news:sports"))["type"] == "subscribed"
        assert (await ask(ws, "subscribe", "news:*"))["code"] == "BAD_CHANNEL"
        assert (await ask(ws, "subscribe", "news:weather"))["code"] == "FORBIDDEN_CHANNEL"
        assert (await ask(ws, "subscribe", "org:acme:doc:1"))["type"] == "subscribed"
        answer = await ask(ws, "subscribe", "org:acme:doc:2")
        assert answer["code"] == "TOO_MANY_CHANNELS" and answer["channel"] == "org:acme:doc:2"
        assert (await ask(ws, "unsubscribe", "org:acme:doc:1"))["type"] == "unsubscribed"
        assert (await ask(ws, "subscribe", "org:acme:doc:2"))["type"] == "subscribed"
        redis.publish("news:sports", json.dumps({"n": 1}))
        assert await next_payload(ws) == {"n": 1}
        await ws.close()
        plain = await connect(off, token())
        answer = await ask(plain, "subscribe", "org:acme:doc:1")
        assert answer["code"] == "SUBSCRIPTIONS_DISABLED", answer
        await plain.close()

    run(main(), 60 * SLOW)


def test_a_refreshed_token_that_drops_a_grant_unsubscribes_it(sidecar_factory, redis):
    sc = sub_sidecar(sidecar_factory)

    async def main():
        ws = await connect(sc, token(team="red"))
        assert (await ask(ws, "subscribe", "org:acme:team:red"))["type"] == "subscribed"
        assert (await ask(ws, "subscribe", "org:acme:doc:1"))["type"] == "subscribed"
        await ws.send(json.dumps({"type": "refresh", "token": token(team="blue")}))
        got = []
        while len(got) < 2:
            msg = await recv_json(ws, 5)
            if msg["type"] in ("unsubscribed", "refreshed"):
                got.append(msg)
        assert {"type": "unsubscribed", "channel": "org:acme:team:red", "reason": "revoked"} in got
        wait_channel(redis, "org:acme:team:red", present=False)
        redis.publish("org:acme:team:red", json.dumps({"n": 1}))
        redis.publish("org:acme:doc:1", json.dumps({"n": 2}))  # still granted
        assert await next_payload(ws) == {"n": 2}
        assert (await ask(ws, "subscribe", "org:acme:team:blue"))["type"] == "subscribed"
        await ws.close()

    run(main(), 60 * SLOW)


def test_history_channel_subscribe_gives_position_and_resumes(sidecar_factory, redis):
    sc = sub_sidecar(sidecar_factory, extra={"history": [
        {"channel": "news:sports", "size": 100, "ttl_s": 600, "max_recover": 50}]})

    def fcall(n):
        return int(redis.command("FCALL", "sidecar_publish", "1", "news:sports",
                                 json.dumps({"n": n})))

    async def main():
        tok = token(channels=["news:sports"])
        ws = await connect(sc, tok, subprotocols=["sidecar.v1"])
        first = await ask(ws, "subscribe", "news:sports")
        assert first["type"] == "subscribed" and first["channel"] == "news:sports", first
        pos = first["channels"]["news:sports"]
        assert pos["recovered"] is False
        wait_channel(redis, "news:sports")
        offset = fcall(1)
        msg = await next_payload(ws)
        assert msg["channel"] == "news:sports" and msg["offset"] == offset, msg
        epoch = msg["epoch"]
        await ws.close()
        wait_channel(redis, "news:sports", present=False)
        missed = [fcall(n) for n in (2, 3, 4)]
        ws = await connect(sc, tok, subprotocols=["sidecar.v1"])
        again = await ask(ws, "subscribe", "news:sports",
                          recover={"epoch": epoch, "offset": offset})
        assert again["channels"]["news:sports"] == \
            {"epoch": epoch, "offset": offset, "recovered": True}, again
        got = [await next_payload(ws) for _ in missed]
        assert [(m["offset"], m["data"]["n"]) for m in got] == list(zip(missed, (2, 3, 4)))
        live = fcall(5)
        assert (await next_payload(ws))["offset"] == live
        # A position the stream never had: nothing replayed, a resync instead.
        await ws.close()
        ws = await connect(sc, tok, subprotocols=["sidecar.v1"])
        far = await ask(ws, "subscribe", "news:sports", recover={"epoch": epoch, "offset": 999})
        assert far["channels"]["news:sports"]["recovered"] is False
        resync = await recv_json(ws, 5)
        assert resync["type"] == "resync" and resync["reason"] == "bad_position", resync
        await ws.close()

    run(main(), 60 * SLOW)


def test_a_subscribe_sent_before_the_welcome_is_answered_after_it(sidecar_factory, redis):
    # The org room has history, so the welcome waits for its read; the subscribe the client
    # sends at once must not overtake it.
    sc = sub_sidecar(sidecar_factory, extra={"history": [
        {"channel": "org:{org}", "size": 100, "ttl_s": 600, "max_recover": 50},
        {"channel": "news:sports", "size": 100, "ttl_s": 600, "max_recover": 50}]})

    async def main():
        # Redis holds every command for a moment, so the room's read (and the welcome) wait
        # while the client's messages arrive.
        assert redis.command("CLIENT", "PAUSE", "400", "ALL") in (b"OK", "OK")
        ws = await websockets.connect(
            sc.ws_url("/ws/acme"), subprotocols=["sidecar.v1"], compression=None,
            extra_headers={"Authorization": f"Bearer {token(channels=['news:sports'])}"})
        await ws.send(json.dumps({"type": "subscribe", "channel": "news:sports"}))
        await ws.send(json.dumps({"type": "subscribe", "channel": "org:beta:doc:1"}))
        await ws.send(json.dumps({"type": "ping"}))
        got = [(await recv_json(ws, 10)) for _ in range(4)]
        kinds = [m["type"] for m in got]
        # The welcome first; the subscribe answers in the order asked (a pong may come between).
        assert kinds[0] == "connected" and "org:acme" in got[0]["channels"], got
        assert sorted(kinds[1:]) == ["error", "pong", "subscribed"], got
        assert kinds.index("subscribed") < kinds.index("error"), got
        sub = got[kinds.index("subscribed")]
        assert sub["channels"]["news:sports"]["recovered"] is False
        assert got[kinds.index("error")]["code"] == "FORBIDDEN_CHANNEL"
        await ws.close()

    run(main(), 30 * SLOW)


def test_node_ws_client_subscribes_too(sidecar_factory, redis, tmp_path):
    """A client we did not write: Node's ws subscribes, receives, is refused another org."""
    sc = sub_sidecar(sidecar_factory)
    tok = token(team="red")

    ensure_node_modules()
    script = tmp_path / "sub.js"
    script.write_text(NODE_SCRIPT)
    proc = subprocess.Popen(["node", str(script), sc.ws_url("/ws/acme"), tok],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NODE_PATH": str(NODE_DIR / "node_modules")})
    line = proc.stdout.readline()  # "ready" once subscribed
    assert line.strip() == "ready", (line, proc.stderr.read() if proc.poll() is not None else "")
    redis.publish("org:acme:doc:7", json.dumps({"n": 7}))
    out, err = proc.communicate(timeout=20 * SLOW)
    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {
        "refused": "FORBIDDEN_CHANNEL", "got": {"n": 7}}


def test_client_module_subscribes_and_subscribes_again_after_a_reconnect(sidecar_factory, redis):
    """client/sidecar-client.js in Node with `ws`: subscribe() answers with `subscribed`, a
    refusal drops the channel from subscriptions(), the subscriptions are sent again on the next
    connection (here after a control `reconnect`), and unsubscribe() stops delivery."""
    sc = sub_sidecar(sidecar_factory)
    d = ClientDriver({"options": {"url": sc.ws_url("/ws/acme"), "token": token(team="red"),
                                  "backoffBaseMs": 50}})

    def control(kind: str, channel: str, n: int = 1) -> dict:
        return d.wait(lambda e: e["event"] == "control" and e["type"] == kind and
                      e["payload"].get("channel") == channel and
                      len([x for x in d.of("control", type=kind)
                           if x["payload"].get("channel") == channel]) >= n,
                      10, f"{kind} {channel} #{n}")

    def subscriptions() -> list:
        before = len(d.of("subscriptions"))
        d.command(cmd="subscriptions", i=0)
        return d.wait(lambda e: e["event"] == "subscriptions" and
                      len(d.of("subscriptions")) > before, 10, "subscriptions")["channels"]

    def payload(n: int) -> None:
        d.wait(lambda e: e["event"] == "message" and e["data"] == {"n": n}, 10, f"n={n}")

    try:
        first = d.wait_state("open")["connectionId"]
        for ch in ("org:acme:doc:42", "org:beta:doc:1", "org:acme:team:red"):
            d.command(cmd="subscribe", i=0, channel=ch)
        control("subscribed", "org:acme:doc:42")
        control("subscribed", "org:acme:team:red")
        assert control("error", "org:beta:doc:1")["payload"]["code"] == "FORBIDDEN_CHANNEL"
        assert sorted(subscriptions()) == ["org:acme:doc:42", "org:acme:team:red"]
        redis.publish("org:acme:doc:42", json.dumps({"n": 1}))
        payload(1)

        redis.publish("sidecar:control", json.dumps({"op": "reconnect", "all": True,
                                                     "after_ms": 0, "jitter_ms": 0}))
        assert d.wait_state("open", timeout=10)["connectionId"] != first
        control("subscribed", "org:acme:doc:42", n=2)
        control("subscribed", "org:acme:team:red", n=2)
        assert not [e for e in d.of("control", type="subscribed")
                    if e["payload"]["channel"] == "org:beta:doc:1"]
        redis.publish("org:acme:team:red", json.dumps({"n": 2}))
        payload(2)

        d.command(cmd="unsubscribe", i=0, channel="org:acme:doc:42")
        control("unsubscribed", "org:acme:doc:42")
        assert subscriptions() == ["org:acme:team:red"]
        redis.publish("org:acme:doc:42", json.dumps({"n": 3}))
        redis.publish("org:acme", json.dumps({"n": 4}))
        payload(4)
        assert not [e for e in d.of("message") if e["data"] == {"n": 3}]
    finally:
        d.close()


NODE_SCRIPT = r"""
const WebSocket = require('ws');
const [url, token] = process.argv.slice(2);
const ws = new WebSocket(url, {headers: {Authorization: 'Bearer ' + token}});
const out = {};
const timer = setTimeout(() => { console.error('timeout'); process.exit(2); }, 15000);
ws.on('message', (data) => {
  const m = JSON.parse(data.toString());
  if (m.type === 'connected') {
    ws.send(JSON.stringify({type: 'subscribe', channel: 'org:beta:doc:7'}));
  } else if (m.type === 'error') {
    out.refused = m.code;
    ws.send(JSON.stringify({type: 'subscribe', channel: 'org:acme:doc:7'}));
  } else if (m.type === 'subscribed') {
    console.log('ready');
  } else if (m.n !== undefined) {
    out.got = m;
    console.log(JSON.stringify(out));
    clearTimeout(timer);
    ws.close();
  }
});
ws.on('close', () => process.exit(out.got ? 0 : 3));
"""
