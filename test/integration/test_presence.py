"""Presence (issue 15) with real sidecars on one real Redis and Python `websockets` clients: who is
in a room across sidecars (HGETALL of the room's hash, GET /api/presence), join and leave events
once per user and not per tab, a sidecar killed with SIGKILL leaving no ghosts within the ttl, the
Redis commands a room of 500 costs per renewal, the config checks and the endpoint's refusals."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import jwt

from harness import SLOW, RespConn, connect_ws, run, sidecar_bin, wait_until

SECRET = "presence-test-secret-with-enough-bytes-0123456789"
ADMIN = "presence-admin-token"
TTL_S = 2
KEY = "sidecar:{org:acme}:presence"
EVENTS = "org:acme:presence"


def config(**extra) -> dict:
    cfg = {"auth": {"mode": "jwt", "jwt": {"secret": SECRET}},
           "admin": {"token": ADMIN},
           "presence": [{"channel": "org:{org}", "ttl_s": TTL_S, "events": "org:{org}:presence"}]}
    cfg.update(extra)
    return cfg


def token(user: str, org: str = "acme") -> str:
    return jwt.encode({"org": org, "sub": user, "exp": int(time.time()) + 600}, SECRET,
                      algorithm="HS256")


def url(sc, user: str) -> str:
    return sc.ws_url(f"/ws/acme?token={token(user)}")


def presence(sc, channel: str = "org:acme", auth: str | None = ADMIN):
    headers = {"Authorization": f"Bearer {auth}"} if auth else {}
    status, _, body = sc.http("GET", f"/api/presence?channel={channel}", headers)
    return status, json.loads(body) if body else None


def users_of(sc) -> dict:
    status, doc = presence(sc)
    assert status == 200, doc
    assert doc["channel"] == "org:acme"
    return {u["user"]: u["connections"] for u in doc["users"]}


def hash_of(redis) -> dict:
    flat = redis.command("HGETALL", KEY)
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}


def counts_of(redis) -> dict:
    """The `<sidecar>|<user>` fields of the room's hash, as {(sidecar, user): connections}."""
    out = {}
    for f, v in hash_of(redis).items():
        if "|" in f:
            sid, user = f.split("|", 1)
            out[(sid, user)] = int(v)
    return out


def sidecar_id(ws) -> str:
    # The sidecar id in presence fields is the random prefix of its connection ids.
    return ws.welcome["connection_id"].split("-", 1)[0]


class Events:
    """A SUBSCRIBE to the events channel. `until_marker` reads everything published before a
    marker this test publishes itself, so that "exactly once" is checked without a sleep: events
    are PUBLISHed inside the FCALL that changes the hash, so once the hash shows a change, its
    events are ahead of the marker."""

    def __init__(self, redis):
        self.redis = redis
        self.conn = RespConn(redis.port, timeout=10 * SLOW)
        assert self.conn.command("SUBSCRIBE", EVENTS)[0] == b"subscribe"
        self.n = 0

    def until_marker(self) -> list:
        self.n += 1
        marker = f"marker-{self.n}"
        self.redis.command("PUBLISH", EVENTS, marker)
        out = []
        while True:
            kind, _, payload = self.conn.read_reply()
            assert kind == b"message"
            if payload.decode() == marker:
                return out
            out.append(json.loads(payload))

    def close(self):
        self.conn.close()


def event(kind: str, user: str) -> dict:
    return {"type": "presence", "event": kind, "channel": "org:acme", "user": user}


def test_presence_across_two_sidecars_once_per_user_and_no_ghosts_after_kill(
        redis, sidecar_factory):
    a = sidecar_factory(extra_yaml=config())
    b = sidecar_factory(extra_yaml=config())
    events = Events(redis)

    async def main():
        alice_a1 = await connect_ws(url(a, "alice"))
        alice_a2 = await connect_ws(url(a, "alice"))
        carol_a = await connect_ws(url(a, "carol"))
        alice_b = await connect_ws(url(b, "alice"))
        bob_b = await connect_ws(url(b, "bob"))
        ida, idb = sidecar_id(alice_a1), sidecar_id(alice_b)
        assert ida != idb

        want = {(ida, "alice"): 2, (ida, "carol"): 1, (idb, "alice"): 1, (idb, "bob"): 1}
        wait_until(lambda: counts_of(redis) == want, 5 * SLOW, "every connection in the hash")
        fields = hash_of(redis)
        # Each sidecar's renewal field: until when (ms, Redis's clock) its fields count.
        now_ms = int(redis.command("TIME")[0]) * 1000
        for sid in (ida, idb):
            assert now_ms - 1000 <= int(fields[sid]) <= now_ms + TTL_S * 1000 + 1000
        assert 0 < redis.command("PTTL", KEY) <= TTL_S * 1000
        for sc in (a, b):
            assert users_of(sc) == {"alice": 3, "bob": 1, "carol": 1}
        got = events.until_marker()
        assert sorted(got, key=lambda e: e["user"]) == [event("join", "alice"),
                                                        event("join", "bob"),
                                                        event("join", "carol")]

        # Alice closes both tabs on A: she is still on B, so no leave.
        await alice_a1.close()
        await alice_a2.close()
        wait_until(lambda: (ida, "alice") not in counts_of(redis), 5 * SLOW, "A's alice gone")
        assert users_of(a) == {"alice": 1, "bob": 1, "carol": 1}
        assert events.until_marker() == []

        # Her last tab closes: one leave.
        await alice_b.close()
        wait_until(lambda: (idb, "alice") not in counts_of(redis), 5 * SLOW, "B's alice gone")
        assert events.until_marker() == [event("leave", "alice")]

        # B dies without a word: within the ttl its users are gone from every read, and A's
        # next renewal deletes its fields and publishes bob's leave.
        b.send_signal(9)
        b.proc.wait(10)
        killed = time.monotonic()
        wait_until(lambda: users_of(a) == {"carol": 1}, (TTL_S + 1) * SLOW, "bob gone from reads")
        assert time.monotonic() - killed <= TTL_S + 1 * SLOW
        wait_until(lambda: not any(f.startswith(idb) for f in hash_of(redis)), 2 * TTL_S * SLOW,
                   "B's fields deleted")
        assert counts_of(redis) == {(ida, "carol"): 1}
        assert events.until_marker() == [event("leave", "bob")]
        await carol_a.close()
        await bob_b.close()
        # The last member here gone: the hash empties and Redis deletes the key.
        wait_until(lambda: redis.command("EXISTS", KEY) == 0, 5 * SLOW, "the key gone")
        assert events.until_marker() == [event("leave", "carol")]

    try:
        run(main())
    finally:
        events.close()


def commandstats(redis) -> dict:
    out = {}
    for line in redis.command("INFO", "commandstats").decode().splitlines():
        if line.startswith("cmdstat_"):
            name, rest = line[len("cmdstat_"):].split(":", 1)
            out[name] = int(rest.split(",")[0].split("=")[1])
    return out


def test_a_room_of_500_costs_a_bounded_number_of_commands(redis, sidecar_factory):
    sc = sidecar_factory(extra_yaml=config())
    members = 500

    async def main():
        redis.command("CONFIG", "RESETSTAT")
        conns = []
        for start in range(0, members, 50):
            conns += await asyncio.gather(*(connect_ws(url(sc, f"user{i}"))
                                            for i in range(start, start + 50)))
        wait_until(lambda: len(users_of(sc)) == members, 10 * SLOW, "every member present")
        # Joining: one FCALL per room per 100 ms tick at most, not one per connection.
        joined = commandstats(redis).get("fcall", 0)
        assert 0 < joined < members / 4, joined

        # Idle: only renewals, one FCALL per room every ttl/3, whatever the members.
        window = 3.0
        redis.command("CONFIG", "RESETSTAT")
        t0 = time.monotonic()
        await asyncio.sleep(window)  # the measured window itself, not a wait for a condition
        stats = commandstats(redis)
        elapsed = time.monotonic() - t0
        renewals = stats.get("fcall", 0)
        assert 1 <= renewals <= elapsed / (TTL_S / 3) + 2, stats
        # Inside the function: the room's index and one HSET (the renewal) per FCALL; nothing
        # reads or writes per member.
        assert stats.get("hset", 0) <= renewals, stats
        assert stats.get("hgetall", 0) == 0 and stats.get("hscan", 0) == 0, stats
        print(f"presence idle: {members} members, {renewals / elapsed:.2f} FCALL/s, "
              f"{sum(stats.values()) / elapsed:.1f} commands/s in all (with PING probes)")
        await asyncio.gather(*(c.close() for c in conns))
        wait_until(lambda: redis.command("EXISTS", KEY) == 0, 10 * SLOW, "the room emptied")

    run(main(), timeout=120)


def fcall(redis, sid: str, mode: str, users: dict, ttl_ms: int = 60_000, channel="org:acme"):
    args = [a for u, n in users.items() for a in (u, str(n))]
    return redis.command("FCALL", "sidecar_presence", "1", channel, sid, str(ttl_ms), EVENTS,
                         mode, *args)


def test_function_cost_does_not_grow_with_the_room(redis, sidecar_factory):
    """Driven by hand, as two sidecars would: a renewal or a one-user change in a room of 5,000
    reads no member but the ones it names (no HGETALL, no HSCAN), whatever the room's size."""
    sidecar_factory(extra_yaml=config())  # loads the library
    wait_until(lambda: b"sidecar_presence" in str(redis.command("FUNCTION", "LIST")).encode(),
               10 * SLOW, "the library loaded")
    room = {f"user{i}": 1 for i in range(5000)}
    assert fcall(redis, "aaaa0001", "full", room)[0] == 1
    assert fcall(redis, "bbbb0002", "full", {"user0": 2, "zed": 1})[0] == 1
    assert redis.command("HLEN", KEY) == 5000 + 2 + 2  # fields of both, and their expiries
    for batch in ({}, {"user7": 0}, {"newcomer": 3}):
        redis.command("CONFIG", "RESETSTAT")
        assert fcall(redis, "aaaa0001", "delta", batch)[0] == 1
        stats = commandstats(redis)
        assert stats.get("hgetall", 0) == 0 and stats.get("hscan", 0) == 0, (batch, stats)
        inside = sum(n for name, n in stats.items() if name not in ("fcall", "config|resetstat"))
        assert inside <= 20, (batch, stats)  # vs 5,000 members
    assert redis.command("HGET", KEY, "aaaa0001|user7") is None
    assert redis.command("HGET", KEY, "aaaa0001|newcomer") == b"3"
    assert redis.command("HGET", KEY + ":idx", "aaaa0001") == b"5000"


def test_function_events_exact_across_sidecars_and_a_dead_one(redis, sidecar_factory):
    """join/leave from the function itself: once per user over all live sidecars; a sidecar whose
    time passed is cleaned up by the next update of another, publishing its users' leaves (but
    not of users still present elsewhere); a delta from an expired sidecar is refused."""
    sidecar_factory(extra_yaml=config())
    wait_until(lambda: b"sidecar_presence" in str(redis.command("FUNCTION", "LIST")).encode(),
               10 * SLOW, "the library loaded")
    events = Events(redis)
    try:
        assert fcall(redis, "aaaa0001", "full", {"alice": 1, "bob": 2}, ttl_ms=400) == [1, 2, 0]
        assert fcall(redis, "bbbb0002", "full", {"alice": 1, "carol": 1}) == [1, 1, 0]
        assert sorted(e["user"] for e in events.until_marker()) == ["alice", "bob", "carol"]
        # A second tab and a first tab closing elsewhere: no event.
        assert fcall(redis, "bbbb0002", "delta", {"alice": 2}) == [1, 0, 0]
        assert events.until_marker() == []
        # aaaa0001 stops renewing: once its time passed (Redis's clock), the next update by
        # bbbb0002 (here a plain renewal) deletes its fields and publishes bob's leave only.
        until = int(redis.command("HGET", KEY, "aaaa0001"))

        def redis_ms():
            sec, usec = redis.command("TIME")
            return int(sec) * 1000 + int(usec) // 1000

        wait_until(lambda: redis_ms() > until, 10 * SLOW, "aaaa0001's time passed")
        assert fcall(redis, "aaaa0001", "delta", {"bob": 1}) == [0, 0, 0]  # must send full
        assert fcall(redis, "bbbb0002", "delta", {}) == [1, 0, 1]
        assert events.until_marker() == [event("leave", "bob")]
        assert sorted(counts_of(redis)) == [("bbbb0002", "alice"), ("bbbb0002", "carol")]
        assert redis.command("HKEYS", KEY + ":idx") == [b"bbbb0002"]
        # The dead sidecar comes back with a full batch: bob joins again.
        assert fcall(redis, "aaaa0001", "full", {"bob": 1}) == [1, 1, 0]
        # A full batch replaces every field of its sidecar: carol's go, alice's stay.
        assert fcall(redis, "bbbb0002", "full", {"alice": 1}) == [1, 0, 1]
        assert events.until_marker() == [event("join", "bob"), event("leave", "carol")]
        assert counts_of(redis) == {("aaaa0001", "bob"): 1, ("bbbb0002", "alice"): 1}
        # Last users leave: both keys disappear.
        assert fcall(redis, "aaaa0001", "delta", {"bob": 0}) == [1, 0, 1]
        assert fcall(redis, "bbbb0002", "delta", {"alice": 0}) == [1, 0, 1]
        assert redis.command("EXISTS", KEY, KEY + ":idx") == 0
    finally:
        events.close()


def test_presence_endpoint_auth_and_bad_requests(redis, sidecar_factory):
    sc = sidecar_factory(extra_yaml=config())
    assert presence(sc, auth=None)[0] == 401
    assert presence(sc, auth="wrong-token")[0] == 401
    assert presence(sc, channel="") == (400, {
        "error": "BAD_REQUEST",
        "message": "channel must be 1-512 printable characters without spaces or braces, like "
                   "/api/presence?channel=org:acme"})
    assert sc.http("GET", "/api/presence", {"Authorization": f"Bearer {ADMIN}"})[0] == 400
    assert presence(sc, channel="org:%7Bacme%7D")[0] == 400
    assert presence(sc, channel="org:a%20b")[0] == 400
    status, doc = presence(sc, channel="feed:acme")
    assert status == 404 and doc["error"] == "NOT_FOUND", doc
    assert sc.http("POST", "/api/presence?channel=org:acme",
                   {"Authorization": f"Bearer {ADMIN}"})[0] == 405
    assert presence(sc) == (200, {"channel": "org:acme", "users": []})

    # Without presence configured every channel is 404, with a JSON body.
    plain = sidecar_factory(extra_yaml={"admin": {"token": ADMIN}})
    status, doc = presence(plain)
    assert status == 404 and doc["error"] == "NOT_FOUND", doc


def test_presence_metrics_count_writes(redis, sidecar_factory):
    sc = sidecar_factory(extra_yaml=config())

    async def main():
        c = await connect_ws(url(sc, "alice"))
        wait_until(lambda: users_of(sc) == {"alice": 1}, 5 * SLOW, "alice present")
        _, _, body = sc.http("GET", "/metrics", {"Authorization": f"Bearer {ADMIN}"})
        text = body.decode()
        assert "sidecar_presence_rooms 1" in text
        writes = [l for l in text.splitlines() if l.startswith("sidecar_presence_writes_total ")]
        assert writes and float(writes[0].split()[1]) >= 1
        assert "sidecar_presence_write_failures_total 0" in text
        assert "sidecar_presence_events_total 1" in text
        await c.close()

    run(main())


def check_config(tmp_path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "presence.yaml"
    path.write_text(text)
    return subprocess.run([sidecar_bin(), "--check-config", str(path)], capture_output=True,
                          text=True, timeout=30, check=False)


def test_bad_presence_config_is_rejected_with_key_and_reason(tmp_path):
    path = tmp_path / "presence.yaml"
    r = check_config(tmp_path, "presence:\n"
                               "  - channel: \"org:{org}\"\n"
                               "    ttl_s: 0\n")
    assert r.returncode != 0
    assert f"{path}:3: presence[0].ttl_s: must be 1..86400, got 0" in r.stderr, r.stderr
    # With every value in range, the rules across keys are checked.
    r = check_config(tmp_path, "presence:\n"
                               "  - channel: \"org:{org}\"\n"
                               "  - channel: \"team:{org}\"\n"
                               "    events: \"team:{user}:presence\"\n"
                               "  - channel: \"org:{org}\"\n")
    assert r.returncode != 0
    assert (f'{path}:4: presence[1].events: "team:{{user}}:presence" uses a placeholder that '
            f'channel "team:{{org}}" does not have') in r.stderr, r.stderr
    assert f'{path}:5: presence[2].channel: "org:{{org}}" is listed twice' in r.stderr, r.stderr
    r = check_config(tmp_path, "presence:\n"
                               "  - {channel: \"org:{org}\", ttl_s: 30, events: \"\"}\n")
    assert r.returncode == 0, r.stderr
