"""History and resume (issue 11), black-box: what a client of the sidecar notices.

A real redis-server, the real binary, Python ``websockets`` clients that ask for the subprotocol
``sidecar.v1`` (or not, for verbatim delivery), and publishers that call ``FCALL sidecar_publish``
over raw RESP, as ``redis-cli`` would. These tests are written from the issue's contract, not from
the code that implements it:

- each publication reaches a v1 client as ``{"type":"message","channel","epoch","offset","data"}``
  (``data_b64`` for a payload that is not UTF-8), and a verbatim client as the payload's bytes;
- the welcome names each history channel's epoch and offset and whether it was recovered;
- ``recover=CHANNEL@EPOCH:OFFSET`` replays what was missed exactly once, in order, or nothing at
  all and a ``resync`` with the reason (trimmed, epoch_changed, too_many, bad_position); a
  malformed value is refused with 400;
- a Redis with an append-only file keeps its epoch across kill -9; a subscriber link that is cut
  loses nothing in a room with history and says ``redis_reconnected`` in a room without;
- the counters on /metrics move with each of these.

The helpers at the top (``HistoryClient``, ``connect_v1``, ``Publisher``, ``metric``) are shared
with ``test_history_deploy.py`` and ``test_history_random.py``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import threading
import time
from urllib.parse import quote

import websockets

from harness import SLOW, RedisServer, RespConn, connect_ws, read_http_response, run, \
    upgrade_request, wait_until
from resilience_util import ready_status

V1 = "sidecar.v1"
EPOCH_RE = re.compile(r"^[0-9a-z]{1,32}$")
# Short Redis backoff so that recovery after a fault is quick.
BACKOFF = {"reconnect_initial_ms": 50, "reconnect_max_ms": 300}


# ----------------------------------------------------------------------------- shared helpers


def history_yaml(size: int = 1000, max_recover: int = 50, ttl_s: int = 3600,
                 channel: str = "org:{org}", broadcast: str = "", extra: dict | None = None):
    """A config with history on ``channel``; the broadcast room is off unless named, so that the
    only room a client of /ws/{org} is in is org:{org}."""
    cfg = {"history": [{"channel": channel, "size": size, "ttl_s": ttl_s,
                        "max_recover": max_recover}],
           "channels": {"broadcast": broadcast},
           "redis": dict(BACKOFF)}
    for k, v in (extra or {}).items():
        cfg[k] = v
    return cfg


def library_loaded(redis_port: int) -> bool:
    """Whether the sidecar has loaded its Redis Function library into this Redis."""
    try:
        c = RespConn(redis_port, timeout=2.0)
    except OSError:
        return False
    try:
        return bool(c.command("FUNCTION", "LIST", "LIBRARYNAME", "sidecar"))
    except (OSError, ConnectionError):
        return False
    finally:
        c.close()


def wait_library(redis_port: int, timeout: float = 10.0):
    wait_until(lambda: library_loaded(redis_port), timeout * SLOW,
               "the sidecar's Redis Function library in Redis")


def start_history_sidecar(sidecar_factory, redis, **kw):
    """A sidecar with ``history_yaml(**kw)`` whose library is loaded and which is ready."""
    sc = sidecar_factory(extra_yaml=history_yaml(**kw))
    wait_library(redis.port)
    return sc


def epoch_of(redis_port: int, channel: str) -> str:
    c = RespConn(redis_port)
    try:
        e = c.command("HGET", f"sidecar:{{{channel}}}:m", "epoch")
    finally:
        c.close()
    return e.decode() if e is not None else ""


def payload_of(n: int) -> bytes:
    return b'{"n":%d}' % n


class Publisher:
    """FCALL sidecar_publish over its own RESP connection; returns positions."""

    def __init__(self, redis_port: int):
        self.conn = RespConn(redis_port, timeout=10.0)

    def fcall(self, channel: str, payload) -> int:
        return self.conn.command("FCALL", "sidecar_publish", 1, channel, payload)

    def many(self, channel: str, payloads) -> list[int]:
        """Pipelined, in order."""
        return self.conn.pipeline(("FCALL", "sidecar_publish", 1, channel, p) for p in payloads)

    def numbered(self, channel: str, first: int, last: int) -> list[int]:
        """Publishes ``{"n":first}`` .. ``{"n":last}``; asserts each lands at offset n."""
        got = self.many(channel, (payload_of(n) for n in range(first, last + 1)))
        assert got == list(range(first, last + 1)), f"positions {got[:5]}.. for {first}..{last}"
        return got

    def command(self, *args):
        return self.conn.command(*args)

    def close(self):
        self.conn.close()


class PacedPublisher(threading.Thread):
    """FCALLs ``{"n":i}`` for i in 1..count on ``channel``, one every ``interval`` seconds (paced
    from the start, not slept between), on a thread; ``published`` counts replies received."""

    def __init__(self, redis_port: int, channel: str, count: int, interval: float):
        super().__init__(daemon=True)
        self.pub = Publisher(redis_port)
        self.channel, self.count, self.interval = channel, count, interval
        self.published = 0
        self.error: BaseException | None = None

    def run(self):
        try:
            start = time.monotonic()
            for i in range(1, self.count + 1):
                delay = start + (i - 1) * self.interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing the stream, not waiting for an outcome
                pos = self.pub.fcall(self.channel, payload_of(i))
                assert pos == i, f"FCALL {i} landed at {pos}"
                self.published = i
        except BaseException as e:  # reported by finish()
            self.error = e
        finally:
            self.pub.close()

    def finish(self, timeout: float = 30.0):
        self.join(timeout * SLOW)
        assert not self.is_alive(), "the publisher did not finish"
        if self.error:
            raise self.error


def recover_query(positions) -> str:
    """``?recover=...&recover=...`` for ``(channel, epoch, offset)`` triples, percent-encoded."""
    if not positions:
        return ""
    return "?" + "&".join("recover=" + quote(f"{c}@{e}:{o}", safe="") for c, e, o in positions)


class HistoryClient:
    """A ``websockets`` connection whose every message is recorded in order by a reader task.

    ``events`` holds decoded messages: a dict for a JSON text frame, else ``str`` or ``bytes``
    as received. ``raw`` holds each message as received. Waits are bounded and wake on every
    new message.
    """

    def __init__(self, conn, name: str = ""):
        self.conn = conn
        self.name = name
        self.welcome = conn.welcome
        self.events: list = []
        self.raw: list = []
        self.close_code: int | None = None
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self):
        try:
            async for msg in self.conn:
                self.raw.append(msg)
                self.events.append(decode(msg))
                self._changed.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            rcvd = self.conn.close_rcvd
            self.close_code = rcvd.code if rcvd is not None else 1006
            self._changed.set()

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    async def wait(self, pred, timeout: float = 10.0, what: str = "a condition"):
        """Waits until ``pred(self)`` is truthy and returns it; fails on timeout or when the
        connection ended first."""
        deadline = time.monotonic() + timeout * SLOW
        while True:
            value = pred(self)
            if value:
                return value
            if self.closed:
                raise AssertionError(f"{self.name}: closed ({self.close_code}) while waiting for "
                                     f"{what}; {self.summary()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: timed out after {timeout * SLOW:.1f}s waiting "
                                   f"for {what}; {self.summary()}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def wait_closed(self, timeout: float = 10.0) -> int:
        await asyncio.wait_for(asyncio.shield(self._task), timeout * SLOW)
        return self.close_code

    def envelopes(self, channel: str = "org:acme") -> list[dict]:
        return [e for e in self.events if isinstance(e, dict) and e.get("type") == "message"
                and e.get("channel") == channel]

    def offsets(self, channel: str = "org:acme") -> list[int]:
        return [e.get("offset") for e in self.envelopes(channel)]

    def resyncs(self, channel: str | None = None) -> list[dict]:
        return [e for e in self.events if isinstance(e, dict) and e.get("type") == "resync"
                and (channel is None or e.get("channel") == channel)]

    def last_offset(self, channel: str = "org:acme") -> int:
        offs = self.offsets(channel)
        return offs[-1] if offs else -1

    def has_offset(self, n: int, channel: str = "org:acme") -> bool:
        return self.last_offset(channel) >= n

    def summary(self) -> str:
        offs = [o for o in self.offsets() if isinstance(o, int)]
        span = f"{offs[0]}..{offs[-1]} ({len(offs)})" if offs else "none"
        others = [e for e in self.events if not (isinstance(e, dict) and e.get("type") ==
                                                 "message")]
        return f"welcome={self.welcome} org:acme offsets {span}; other events {others[:10]}"

    async def drop(self):
        """Vanishes without a close handshake (a network blip), then waits for the reader."""
        self.conn.transport.abort()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), 5 * SLOW)
        except asyncio.TimeoutError:
            pass

    async def close(self):
        if not self.closed:
            await self.conn.close()
        await asyncio.wait_for(asyncio.shield(self._task), 5 * SLOW)


def decode(msg):
    if isinstance(msg, str):
        try:
            return json.loads(msg)
        except ValueError:
            return msg
    return msg


async def connect_v1(sc, path: str = "/ws/acme", recover=(), name: str = "v1",
                     subprotocols=(V1,)) -> HistoryClient:
    """A ``sidecar.v1`` client (the server must agree to the subprotocol) that resumes from
    ``recover``, a list of ``(channel, epoch, offset)``."""
    conn = await connect_ws(sc.ws_url(path + recover_query(recover)),
                            subprotocols=list(subprotocols))
    assert conn.subprotocol == V1, f"the server chose subprotocol {conn.subprotocol!r}"
    assert conn.welcome["type"] == "connected", conn.welcome
    return HistoryClient(conn, name)


async def connect_verbatim(sc, path: str = "/ws/acme", name: str = "verbatim") -> HistoryClient:
    conn = await connect_ws(sc.ws_url(path))
    assert conn.subprotocol is None
    return HistoryClient(conn, name)


def channel_state(client: HistoryClient, channel: str = "org:acme") -> dict:
    """The welcome's entry for ``channel``: ``{"epoch","offset","recovered"}``."""
    chans = client.welcome.get("channels")
    assert isinstance(chans, dict) and channel in chans, \
        f"welcome has no channels.{channel}: {client.welcome}"
    st = chans[channel]
    assert isinstance(st.get("epoch"), str) and EPOCH_RE.match(st["epoch"]), st
    assert isinstance(st.get("offset"), int) and st["offset"] >= 0, st
    assert isinstance(st.get("recovered"), bool), st
    # Other keys are allowed by the contract; the tests compare these three.
    return {k: st[k] for k in ("epoch", "offset", "recovered")}


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text as ``{"name{labels}": value}`` (labels as printed)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out


def metrics(sc) -> dict[str, float]:
    status, _, body = sc.http("GET", "/metrics")
    assert status == 200, f"/metrics answered {status}"
    return parse_metrics(body.decode())


_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric(samples: dict[str, float], name: str, **labels) -> float:
    """The sum of every sample of ``name`` whose labels include ``labels``; 0 when none."""
    total = 0.0
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        have = dict(_LABEL.findall(rest))
        if all(have.get(k) == v for k, v in labels.items()):
            total += value
    return total


def metric_names(samples: dict[str, float]) -> set[str]:
    return {k.partition("{")[0] for k in samples}


async def wait_subscribed(redis, channel: str = "org:acme", n: int = 1):
    await asyncio.to_thread(wait_until, lambda: redis.numsub(channel) >= n, 10 * SLOW,
                            f"SUBSCRIBE {channel}")


def assert_numbered(envs: list[dict], first: int, last: int, epoch: str | None = None):
    """Envelopes are exactly offsets first..last in order, each carrying ``{"n": offset}``."""
    offs = [e.get("offset") for e in envs]
    assert offs == list(range(first, last + 1)), \
        f"expected offsets {first}..{last} once each in order, got {compress(offs)}"
    for e in envs:
        assert e.get("data") == {"n": e["offset"]}, e
        if epoch is not None:
            assert e.get("epoch") == epoch, e


def compress(offs: list) -> str:
    """1,2,3,5,5,6 -> "1..3, 5, 5..6": readable failure messages for long offset lists."""
    out, i = [], 0
    while i < len(offs):
        j = i
        while j + 1 < len(offs) and isinstance(offs[j], int) and offs[j + 1] == offs[j] + 1:
            j += 1
        out.append(f"{offs[i]}" if i == j else f"{offs[i]}..{offs[j]}")
        i = j + 1
    return ", ".join(out)


# ----------------------------------------------------------------------------- envelopes


def test_v1_gets_one_envelope_per_publication_and_verbatim_gets_the_bytes(sidecar_factory, redis):
    sc = start_history_sidecar(sidecar_factory, redis)
    pub = Publisher(redis.port)
    json_payloads = [
        '{"type":"SYNC_SUCCESS","pfaId":"pfa-1","v":[1,2.5,null,true,{"x":"Zoë ✓ 𝄞"}]}'.encode(),
        b"42", b'"a JSON string"', b"[]"]
    text_payloads = [b"hello, not JSON", b'{"broken": ', "ünïcode ✓".encode(), b""]
    binary_payloads = [b"\xff\x00\x80 not UTF-8", bytes(range(256))]
    fcalled = json_payloads + text_payloads + binary_payloads
    published = [b'{"plain":true}', b"plain text", b"\xfe\xff"]

    async def main():
        v = await connect_v1(sc)
        raw = await connect_verbatim(sc)
        await wait_subscribed(redis)
        for i, p in enumerate(fcalled, 1):
            assert pub.fcall("org:acme", p) == i
        for p in published:
            assert redis.publish("org:acme", p) == 1
        total = len(fcalled) + len(published)
        await v.wait(lambda c: len(c.events) >= total, 10, f"{total} envelopes")
        await raw.wait(lambda c: len(c.raw) >= total, 10, f"{total} verbatim messages")
        epoch = epoch_of(redis.port, "org:acme")
        assert EPOCH_RE.match(epoch), epoch

        assert all(isinstance(m, str) for m in v.raw), "every envelope is a text frame"
        envs = v.events
        assert len(envs) == total, envs
        for i, (p, e) in enumerate(zip(fcalled, envs), 1):
            assert e["type"] == "message" and e["channel"] == "org:acme", e
            assert e["epoch"] == epoch and e["offset"] == i, e
            check_data(e, p)
        for p, e in zip(published, envs[len(fcalled):]):
            assert e["type"] == "message" and e["channel"] == "org:acme", e
            assert "epoch" not in e and "offset" not in e, f"a plain PUBLISH has no position: {e}"
            check_data(e, p)

        # Verbatim: the payload's bytes, text when UTF-8 and binary otherwise, no header.
        for p, m in zip(fcalled + published, raw.raw):
            if isinstance(m, str):
                assert m.encode() == p, (p, m)
            else:
                assert m == p, (p, m)
                assert not is_utf8(p), f"a UTF-8 payload came as a binary frame: {p!r}"
        await v.close()
        await raw.close()

    run(main(), 40)
    pub.close()


def is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def check_data(env: dict, payload: bytes):
    """``data`` is the payload's JSON value when it is JSON, else its text; ``data_b64`` when it
    is not UTF-8."""
    if not is_utf8(payload):
        assert "data" not in env, env
        assert base64.b64decode(env["data_b64"], validate=True) == payload, env
        return
    assert "data_b64" not in env, env
    text = payload.decode()
    try:
        value = json.loads(text)
    except ValueError:
        assert env["data"] == text, (payload, env)
    else:
        assert env["data"] == value and type(env["data"]) is type(value), (payload, env)


def test_welcome_names_the_channel_epoch_and_offset(sidecar_factory, redis):
    sc = start_history_sidecar(sidecar_factory, redis)
    pub = Publisher(redis.port)

    async def main():
        first = await connect_v1(sc, name="first")
        st = channel_state(first)
        assert st["offset"] == 0 and st["recovered"] is False, st
        assert first.welcome["org"] == "acme" and first.welcome["connection_id"], first.welcome
        await wait_subscribed(redis)
        pub.numbered("org:acme", 1, 3)
        await first.wait(lambda c: c.has_offset(3), 10, "offset 3")
        # The epoch the welcome named before anything was published is the epoch of what came.
        assert_numbered(first.envelopes(), 1, 3, st["epoch"])
        assert epoch_of(redis.port, "org:acme") == st["epoch"]

        second = await connect_v1(sc, name="second")
        assert channel_state(second) == {"epoch": st["epoch"], "offset": 3, "recovered": False}
        pub.numbered("org:acme", 4, 4)
        await second.wait(lambda c: c.has_offset(4), 10, "offset 4")
        assert_numbered(second.envelopes(), 4, 4, st["epoch"])
        await first.close()
        await second.close()

    run(main(), 30)
    pub.close()


def test_a_publication_right_after_the_welcome_is_never_lost(sidecar_factory, redis):
    """Each client joins a new room and the backend publishes the moment the welcome arrives,
    before the sidecar could have finished subscribing: the welcome's position promises every
    later publication, so that one must come."""
    sc = start_history_sidecar(sidecar_factory, redis)
    pub = Publisher(redis.port)

    async def main():
        for i in range(8):
            org = f"fresh{i}"
            c = await connect_v1(sc, f"/ws/{org}", name=org)
            st = channel_state(c, f"org:{org}")
            assert pub.fcall(f"org:{org}", payload_of(st["offset"] + 1)) == st["offset"] + 1
            await c.wait(lambda cl: cl.envelopes(f"org:{org}") or cl.resyncs(), 10,
                         "the publication after the welcome")
            assert not c.resyncs(), c.events
            assert_numbered(c.envelopes(f"org:{org}"), st["offset"] + 1, st["offset"] + 1,
                            st["epoch"])
            await c.close()

    run(main(), 60)
    pub.close()


# ----------------------------------------------------------------------------- resume


def test_resume_after_a_drop_replays_the_gap_exactly_once_in_order(sidecar_factory, redis):
    sc = start_history_sidecar(sidecar_factory, redis, max_recover=50)
    pub = Publisher(redis.port)

    async def main():
        c1 = await connect_v1(sc, name="before")
        epoch = channel_state(c1)["epoch"]
        await wait_subscribed(redis)
        pub.numbered("org:acme", 1, 5)
        await c1.wait(lambda c: c.has_offset(5), 10, "offset 5")
        await c1.drop()
        pub.numbered("org:acme", 6, 25)

        c2 = await connect_v1(sc, recover=[("org:acme", epoch, 5)], name="resumed")
        st = channel_state(c2)
        assert st["recovered"] is True and st["epoch"] == epoch, st
        assert 5 <= st["offset"] <= 25, st
        await c2.wait(lambda c: c.has_offset(25), 10, "the replay up to 25")
        pub.numbered("org:acme", 26, 30)
        await c2.wait(lambda c: c.has_offset(30), 10, "live messages up to 30")
        assert_numbered(c2.envelopes(), 6, 30, epoch)
        assert not c2.resyncs(), c2.resyncs()
        await c2.close()

    run(main(), 40)
    pub.close()


def test_resumes_during_a_steady_publish_stream_miss_nothing_and_repeat_nothing(
        sidecar_factory, redis):
    """Live publications keep coming while each resume's read is in flight: they are held and
    merged by position, so the connections together see 1..N once each, in order."""
    count = 600
    sc = start_history_sidecar(sidecar_factory, redis, max_recover=300)

    async def main():
        c = await connect_v1(sc, name="conn0")
        epoch = channel_state(c)["epoch"]
        await wait_subscribed(redis)
        stream = PacedPublisher(redis.port, "org:acme", count, 0.002)
        stream.start()
        seen: list[dict] = []
        for k in range(1, 6):  # five drops, each at a different point of the stream
            target = k * count // 7
            await c.wait(lambda cl: cl.has_offset(target), 15, f"offset {target}")
            await c.drop()
            seen += c.envelopes()
            assert not c.resyncs(), c.resyncs()
            last = seen[-1]["offset"]
            c = await connect_v1(sc, recover=[("org:acme", epoch, last)], name=f"conn{k}")
            assert channel_state(c)["recovered"] is True, c.welcome
        await asyncio.to_thread(stream.finish)
        await c.wait(lambda cl: cl.has_offset(count), 15, f"offset {count}")
        assert not c.resyncs(), c.resyncs()
        seen += c.envelopes()
        assert_numbered(seen, 1, count, epoch)
        await c.close()

    run(main(), 60)


def test_resume_at_the_top_replays_nothing_and_stays_live(sidecar_factory, redis):
    sc = start_history_sidecar(sidecar_factory, redis)
    pub = Publisher(redis.port)

    async def main():
        c1 = await connect_v1(sc, name="before")
        epoch = channel_state(c1)["epoch"]
        await wait_subscribed(redis)
        pub.numbered("org:acme", 1, 4)
        await c1.wait(lambda c: c.has_offset(4), 10, "offset 4")
        await c1.drop()

        c2 = await connect_v1(sc, recover=[("org:acme", epoch, 4)], name="at top")
        assert channel_state(c2) == {"epoch": epoch, "offset": 4, "recovered": True}
        pub.numbered("org:acme", 5, 6)
        await c2.wait(lambda c: c.has_offset(6), 10, "offset 6")
        assert_numbered(c2.envelopes(), 5, 6, epoch)
        assert c2.events == c2.envelopes(), "nothing but the two live envelopes"
        await c2.close()

    run(main(), 30)
    pub.close()


async def expect_resync(c: HistoryClient, reason: str, epoch: str, top: int,
                        pub: Publisher, channel: str = "org:acme"):
    """The client was not recovered: the welcome says so, a resync names ``reason`` and, if it
    carries a position, the stream's ``(epoch, top)``; nothing is replayed, and the next
    publication arrives live at ``top + 1``."""
    st = channel_state(c, channel)
    assert st["recovered"] is False, st
    assert st["epoch"] == epoch, (st, epoch)
    await c.wait(lambda cl: cl.resyncs(channel), 10, f"a resync ({reason})")
    rs = c.resyncs(channel)
    assert len(rs) == 1, rs
    assert rs[0]["reason"] == reason, rs[0]
    if "epoch" in rs[0] or "offset" in rs[0]:
        assert (rs[0].get("epoch"), rs[0].get("offset")) == (epoch, top), rs[0]
    assert pub.fcall(channel, payload_of(top + 1)) == top + 1
    await c.wait(lambda cl: cl.envelopes(channel), 10, f"the live offset {top + 1}")
    assert_numbered(c.envelopes(channel), top + 1, top + 1, epoch)
    # The resync comes before anything that follows it.
    kinds = [e.get("type") for e in c.events if isinstance(e, dict)]
    assert kinds == ["resync", "message"], c.events


def test_resume_past_trimmed_entries_resyncs_and_replays_nothing(sidecar_factory, redis):
    """MAXLEN ~ keeps at least ``size`` entries and ``max_recover`` may not exceed ``size``, so
    the stream's own trimming shows as too_many; entries are gone from under a position that is
    within ``max_recover`` when someone trims the stream (XTRIM, as an operator or a memory
    policy would). The first kept entry is the boundary: a position just before it recovers."""
    sc = start_history_sidecar(sidecar_factory, redis, max_recover=50)
    pub = Publisher(redis.port)

    async def main():
        c = await connect_v1(sc, name="probe")
        epoch = channel_state(c)["epoch"]
        await c.close()
        pub.numbered("org:acme", 1, 30)
        assert pub.command("XTRIM", "sidecar:{org:acme}:s", "MAXLEN", "10") == 20  # keeps 21..30

        behind = await connect_v1(sc, recover=[("org:acme", epoch, 19)], name="trimmed")
        await expect_resync(behind, "trimmed", epoch, 30, pub)
        await behind.close()

        edge = await connect_v1(sc, recover=[("org:acme", epoch, 20)], name="edge")
        assert channel_state(edge)["recovered"] is True, edge.welcome
        await edge.wait(lambda cl: cl.has_offset(31), 10, "21..31")
        assert_numbered(edge.envelopes(), 21, 31, epoch)
        assert not edge.resyncs()
        await edge.close()

    run(main(), 30)
    pub.close()


def test_resume_after_the_history_was_deleted_resyncs_with_epoch_changed(sidecar_factory, redis):
    sc = start_history_sidecar(sidecar_factory, redis)
    pub = Publisher(redis.port)

    async def main():
        pub.numbered("org:acme", 1, 5)
        old = epoch_of(redis.port, "org:acme")
        assert pub.command("DEL", "sidecar:{org:acme}:s", "sidecar:{org:acme}:m") == 2
        pub.numbered("org:acme", 1, 3)  # a new stream from 1, in a new epoch
        new = epoch_of(redis.port, "org:acme")
        assert new != old
        # Position 3 exists in the new epoch too: only the epoch can tell them apart.
        c = await connect_v1(sc, recover=[("org:acme", old, 3)], name="old epoch")
        await expect_resync(c, "epoch_changed", new, 3, pub)
        await c.close()

    run(main(), 30)
    pub.close()


def test_redis_restart_without_persistence_is_a_new_epoch(sidecar_factory, redis):
    """The Redis restarts empty: a client that was connected is told to resync before anything
    of the new epoch, and one that comes back with its old position is told epoch_changed."""
    sc = start_history_sidecar(sidecar_factory, redis)
    pub = Publisher(redis.port)

    async def main():
        stay = await connect_v1(sc, name="stayed")
        old = channel_state(stay)["epoch"]
        gone = await connect_v1(sc, name="dropped")
        await wait_subscribed(redis, n=1)
        pub.numbered("org:acme", 1, 5)
        for c in (stay, gone):
            await c.wait(lambda cl: cl.has_offset(5), 10, "offset 5")
        await gone.drop()

        await asyncio.to_thread(redis.restart)
        await asyncio.to_thread(wait_library, redis.port)
        await asyncio.to_thread(wait_until, lambda: ready_status(sc)[0] == 200, 10 * SLOW,
                                "/ready 200")
        await wait_subscribed(redis)
        pub2 = Publisher(redis.port)
        try:
            assert pub2.fcall("org:acme", payload_of(1)) == 1
            new = epoch_of(redis.port, "org:acme")
            assert new and new != old

            # The client that stayed: right after 1..5 of the old epoch comes one resync, then
            # the new epoch from the resync's position on (0, or 1 when it was read after the
            # publication).
            await stay.wait(lambda cl: cl.resyncs("org:acme"), 10, "a resync after the restart")
            assert_numbered(stay.envelopes()[:5], 1, 5, old)
            rs = stay.events[5]
            assert rs.get("type") == "resync" and rs.get("reason") == "epoch_changed", stay.events
            assert rs.get("epoch", new) == new and rs.get("offset", 0) in (0, 1), rs
            if rs.get("offset", 0) == 0:
                await stay.wait(lambda cl: len(cl.events) >= 7, 10, "offset 1 of the new epoch")
                assert stay.events[6] == {"type": "message", "channel": "org:acme",
                                          "epoch": new, "offset": 1, "data": {"n": 1}}, stay.events

            back = await connect_v1(sc, recover=[("org:acme", old, 5)], name="came back")
            await expect_resync(back, "epoch_changed", new, 1, pub2)
            await stay.wait(lambda cl: cl.has_offset(2), 10, "offset 2 of the new epoch")
            assert len(stay.resyncs()) == 1, stay.resyncs()
            await back.close()
            await stay.close()
        finally:
            pub2.close()

    run(main(), 60)
    pub.close()


def test_resume_too_far_behind_resyncs_with_too_many(sidecar_factory, redis):
    sc = start_history_sidecar(sidecar_factory, redis, max_recover=50)
    pub = Publisher(redis.port)

    async def main():
        c = await connect_v1(sc, name="probe")
        epoch = channel_state(c)["epoch"]
        await c.close()
        pub.numbered("org:acme", 1, 60)
        far = await connect_v1(sc, recover=[("org:acme", epoch, 9)], name="51 behind")
        await expect_resync(far, "too_many", epoch, 60, pub)
        await far.close()
        # Exactly max_recover behind is still recovered, all of it.
        edge = await connect_v1(sc, recover=[("org:acme", epoch, 11)], name="50 behind")
        assert channel_state(edge)["recovered"] is True, edge.welcome
        await edge.wait(lambda cl: cl.has_offset(61), 10, "12..61")
        assert_numbered(edge.envelopes(), 12, 61, epoch)
        await edge.close()

    run(main(), 30)
    pub.close()


def test_resume_from_beyond_the_top_resyncs_with_bad_position(sidecar_factory, redis):
    sc = start_history_sidecar(sidecar_factory, redis)
    pub = Publisher(redis.port)

    async def main():
        pub.numbered("org:acme", 1, 3)
        epoch = epoch_of(redis.port, "org:acme")
        c = await connect_v1(sc, recover=[("org:acme", epoch, 9)], name="ahead")
        await expect_resync(c, "bad_position", epoch, 3, pub)
        await c.close()

    run(main(), 30)
    pub.close()


def test_recover_is_repeatable_one_position_per_channel(sidecar_factory, redis):
    """A session in two rooms with history (its org and the broadcast channel) resumes both
    with two ``recover`` parameters, each from its own position."""
    cfg = history_yaml(broadcast="sidecar:broadcast")
    cfg["history"].append({"channel": "sidecar:broadcast", "size": 100, "ttl_s": 600,
                           "max_recover": 50})
    sc = sidecar_factory(extra_yaml=cfg)
    wait_library(redis.port)
    pub = Publisher(redis.port)

    async def main():
        c = await connect_v1(sc, name="two rooms")
        ea = channel_state(c, "org:acme")["epoch"]
        eb = channel_state(c, "sidecar:broadcast")["epoch"]
        await wait_subscribed(redis, "org:acme")
        await wait_subscribed(redis, "sidecar:broadcast")
        pub.numbered("org:acme", 1, 3)
        pub.numbered("sidecar:broadcast", 1, 2)
        await c.wait(lambda cl: cl.has_offset(3) and cl.has_offset(2, "sidecar:broadcast"), 10,
                     "both rooms' messages")
        await c.drop()
        pub.numbered("org:acme", 4, 7)
        pub.numbered("sidecar:broadcast", 3, 4)
        r = await connect_v1(sc, recover=[("org:acme", ea, 3), ("sidecar:broadcast", eb, 2)],
                             name="resumed")
        assert channel_state(r, "org:acme")["recovered"] is True, r.welcome
        assert channel_state(r, "sidecar:broadcast")["recovered"] is True, r.welcome
        await r.wait(lambda cl: cl.has_offset(7) and cl.has_offset(4, "sidecar:broadcast"), 10,
                     "both replays")
        assert_numbered(r.envelopes("org:acme"), 4, 7, ea)
        assert_numbered(r.envelopes("sidecar:broadcast"), 3, 4, eb)
        assert not r.resyncs()
        await r.close()

    run(main(), 30)
    pub.close()


def handshake(sc, path: str, protocols: str | None = V1):
    """One raw upgrade request; ``(status, headers, body)`` of the answer."""
    extra = {"Sec-WebSocket-Protocol": protocols} if protocols else None
    with socket.create_connection(("127.0.0.1", sc.port), timeout=5) as s:
        s.sendall(upgrade_request(path, extra=extra))
        return read_http_response(s, 5)


def test_a_malformed_recover_value_is_refused_with_400(sidecar_factory, redis):
    sc = start_history_sidecar(sidecar_factory, redis)
    epoch = "abc123"
    bad = [
        "garbage",                                  # no @
        "org:acme@abc123",                          # no offset
        "org:acme@abc123:-1",                       # negative
        "org:acme@abc123:1x",                       # not decimal
        "org:acme@abc123:18446744073709551616",     # 2^64
        "org:acme@ABC:1",                           # epochs are [0-9a-z]
        "org:acme@:1",                              # empty epoch
        "org:acme@" + "a" * 33 + ":1",              # epoch too long
        "@abc123:1",                                # empty channel
        "org:\x01<script>@abc123:1",                # a control byte in the channel
    ]
    for value in bad:
        status, headers, body = handshake(sc, "/ws/acme?recover=" + quote(value, safe=""))
        assert status == 400, (value, status, body)
        assert headers.get("content-type", "").startswith("application/json"), headers
        doc = json.loads(body)
        assert "error" in doc and "recover" in body.decode().lower(), (value, body)
        assert b"<script>" not in body, f"the refusal echoes the value: {body!r}"
    # The same channel twice, and more parameters than a session has channels to resume.
    twice = f"/ws/acme?recover={quote(f'org:acme@{epoch}:1', safe='')}" \
            f"&recover={quote(f'org:acme@{epoch}:2', safe='')}"
    many = "/ws/acme?" + "&".join(f"recover={quote(f'org:c{i}@{epoch}:1', safe='')}"
                                  for i in range(17))
    for path in (twice, many):
        status, _, body = handshake(sc, path)
        assert status == 400 and "recover" in body.decode().lower(), (path, status, body)
    # The sidecar is unharmed and a good value is accepted.
    status, headers, _ = handshake(sc, "/ws/acme?recover=" + quote(f"org:acme@{epoch}:0",
                                                                    safe=""))
    assert status == 101 and headers.get("sec-websocket-protocol") == V1, (status, headers)


# ----------------------------------------------------------------------------- Redis faults


class AofRedis(RedisServer):
    """A redis-server with ``appendonly yes`` and ``appendfsync always``: every write acknowledged
    is on disk, so a kill -9 loses nothing that a client saw."""

    def start(self, timeout: float = 10.0) -> "AofRedis":
        import os
        import subprocess
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", self.dir,
             "--logfile", os.path.join(self.dir, "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._ready, timeout, f"redis-server (AOF) on port {self.port}")
        return self


def history_ready(sc) -> bool:
    status, body = ready_status(sc)
    return status == 200 and "degraded" not in body


def test_aof_redis_killed_and_restarted_keeps_the_epoch_and_resume_recovers(sidecar_factory):
    aof = AofRedis()
    aof.start()
    try:
        sc = sidecar_factory(redis_url=aof.url, extra_yaml=history_yaml())
        wait_library(aof.port)
        pub = Publisher(aof.port)

        async def main():
            stay = await connect_v1(sc, name="stayed")
            gone = await connect_v1(sc, name="dropped")
            epoch = channel_state(stay)["epoch"]
            await wait_subscribed(aof)
            pub.numbered("org:acme", 1, 4)
            await gone.wait(lambda cl: cl.has_offset(4), 10, "offset 4")
            await gone.drop()
            pub.numbered("org:acme", 5, 10)
            await stay.wait(lambda cl: cl.has_offset(10), 10, "offset 10")
            pub.close()

            await asyncio.to_thread(aof.kill)  # SIGKILL
            await asyncio.to_thread(aof.restart)
            await asyncio.to_thread(wait_library, aof.port)
            # /ready is 200 without "degraded" only once the sidecar's command link is back and
            # its library loaded: Redis has the library from the AOF at once, the sidecar not.
            await asyncio.to_thread(wait_until, lambda: history_ready(sc), 10 * SLOW,
                                    "/ready 200 with history ready")
            await wait_subscribed(aof)
            assert epoch_of(aof.port, "org:acme") == epoch

            back = await connect_v1(sc, recover=[("org:acme", epoch, 4)], name="came back")
            st = channel_state(back)
            assert st["recovered"] is True and st["epoch"] == epoch, st
            await back.wait(lambda cl: cl.has_offset(10), 10, "5..10 replayed")
            pub2 = Publisher(aof.port)
            try:
                pub2.numbered("org:acme", 11, 15)
            finally:
                pub2.close()
            for c in (back, stay):
                await c.wait(lambda cl: cl.has_offset(15), 10, "offset 15")
            assert_numbered(back.envelopes(), 5, 15, epoch)
            # The client that stayed connected lost nothing and was not told to reload.
            assert_numbered(stay.envelopes(), 1, 15, epoch)
            assert not stay.resyncs() and not back.resyncs(), (stay.events, back.events)
            await back.close()
            await stay.close()

        run(main(), 60)
    finally:
        aof.stop()


def test_subscriber_link_killed_during_a_stream_loses_nothing_where_there_is_history(
        sidecar_factory, redis):
    """CLIENT KILL TYPE pubsub in the middle of a steady FCALL stream. The room with history reads
    what it missed and delivers it in order before new messages, to v1 and verbatim members
    alike; the rooms without (a plain route, and the broadcast room) tell their members to
    resync with ``redis_reconnected``, v1 or verbatim."""
    count = 500
    cfg = history_yaml(size=2000, max_recover=1000, broadcast="sidecar:broadcast", extra={
        "routes": [{"path": "/ws/{org}", "channel": "org:{org}"},
                   {"path": "/plain/{org}", "channel": "plain:{org}"}]})
    sc = sidecar_factory(extra_yaml=cfg)
    wait_library(redis.port)

    async def main():
        hv1 = await connect_v1(sc, name="history v1")
        hraw = await connect_verbatim(sc, name="history verbatim")
        pv1 = await connect_v1(sc, "/plain/acme", name="plain v1")
        praw = await connect_verbatim(sc, "/plain/acme", name="plain verbatim")
        epoch = channel_state(hv1)["epoch"]
        for ch in ("org:acme", "plain:acme", "sidecar:broadcast"):
            await wait_subscribed(redis, ch)
        before = metrics(sc)

        stream = PacedPublisher(redis.port, "org:acme", count, 0.002)
        stream.start()
        await asyncio.to_thread(wait_until, lambda: stream.published >= count // 4, 10 * SLOW,
                                "a quarter of the stream")
        killed = redis.command("CLIENT", "KILL", "TYPE", "pubsub")
        assert killed >= 1, killed
        await asyncio.to_thread(stream.finish)

        await hv1.wait(lambda c: c.has_offset(count), 20, f"offset {count}")
        assert_numbered(hv1.envelopes(), 1, count, epoch)
        assert not hv1.resyncs("org:acme"), hv1.resyncs()
        want = [payload_of(n).decode() for n in range(1, count + 1)]

        def verbatim_payloads(c):
            return [m for m in c.raw if not (isinstance(decode(m), dict)
                                             and decode(m).get("type") == "resync")]

        await hraw.wait(lambda c: len(verbatim_payloads(c)) >= count, 20, f"{count} payloads")
        got = verbatim_payloads(hraw)
        assert got == want, "verbatim member of the history room: " + compress(
            [json.loads(m)["n"] for m in got])
        assert not hraw.resyncs("org:acme"), hraw.resyncs()

        # Rooms without history: told, in either mode, and live again afterwards.
        for c in (pv1, praw):
            await c.wait(lambda cl: cl.resyncs("plain:acme"), 10, "resync for plain:acme")
            rs = c.resyncs("plain:acme")
            assert len(rs) == 1 and rs[0]["reason"] == "redis_reconnected", rs
        for c in (hv1, hraw, pv1, praw):
            await c.wait(lambda cl: cl.resyncs("sidecar:broadcast"), 10,
                         "resync for sidecar:broadcast")
            assert c.resyncs("sidecar:broadcast")[0]["reason"] == "redis_reconnected"
        await wait_subscribed(redis, "plain:acme")
        assert redis.publish("plain:acme", b'{"after":1}') == 1
        await pv1.wait(lambda cl: cl.envelopes("plain:acme"), 10, "a plain message after")
        await praw.wait(lambda cl: '{"after":1}' in cl.raw, 10, "a plain message after")
        assert pv1.envelopes("plain:acme")[-1]["data"] == {"after": 1}
        # The resync came before the message that followed the outage.
        assert praw.raw.index('{"after":1}') > praw.events.index(praw.resyncs("plain:acme")[0])

        after = metrics(sc)
        assert metric(after, "sidecar_history_gap_reads_total") > \
            metric(before, "sidecar_history_gap_reads_total"), "no gap read was counted"
        assert metric(after, "sidecar_resyncs_sent_total", reason="redis_reconnected") - \
            metric(before, "sidecar_resyncs_sent_total", reason="redis_reconnected") >= 6
        for c in (hv1, hraw, pv1, praw):
            await c.close()

    run(main(), 60)


# ----------------------------------------------------------------------------- metrics


def test_metrics_count_resumes_replays_resyncs_and_reads(sidecar_factory, redis):
    sc = start_history_sidecar(sidecar_factory, redis, max_recover=20)
    pub = Publisher(redis.port)
    names = ("sidecar_resumes_total", "sidecar_replayed_messages_total",
             "sidecar_resyncs_sent_total", "sidecar_history_gap_reads_total",
             "sidecar_history_reads_total", "sidecar_history_reads_coalesced_total")

    async def main():
        m0 = metrics(sc)
        missing = [n for n in names if n not in metric_names(m0)]
        assert not missing, f"/metrics lacks {missing}"
        c = await connect_v1(sc, name="first")
        epoch = channel_state(c)["epoch"]
        await wait_subscribed(redis)
        pub.numbered("org:acme", 1, 5)
        await c.wait(lambda cl: cl.has_offset(5), 10, "offset 5")
        await c.drop()
        pub.numbered("org:acme", 6, 12)

        ok = await connect_v1(sc, recover=[("org:acme", epoch, 5)], name="recovered")
        await ok.wait(lambda cl: cl.has_offset(12), 10, "6..12")
        await ok.close()
        ahead = await connect_v1(sc, recover=[("org:acme", epoch, 99)], name="bad_position")
        await ahead.wait(lambda cl: cl.resyncs(), 10, "resync")
        await ahead.close()
        pub.numbered("org:acme", 13, 40)
        far = await connect_v1(sc, recover=[("org:acme", epoch, 12)], name="too_many")
        await far.wait(lambda cl: cl.resyncs(), 10, "resync")
        await far.close()
        pub.command("XTRIM", "sidecar:{org:acme}:s", "MAXLEN", "10")
        cut = await connect_v1(sc, recover=[("org:acme", epoch, 25)], name="trimmed")
        await cut.wait(lambda cl: cl.resyncs(), 10, "resync")
        await cut.close()
        other = "zz" if epoch != "zz" else "yy"
        lost = await connect_v1(sc, recover=[("org:acme", other, 5)], name="epoch_changed")
        await lost.wait(lambda cl: cl.resyncs(), 10, "resync")
        await lost.close()
        got = [(c.name, c.resyncs()[0]["reason"]) for c in (ahead, far, cut, lost)]
        assert got == [(r, r) for r in ("bad_position", "too_many", "trimmed",
                                        "epoch_changed")], got

        m1 = metrics(sc)

        def delta(name, **labels):
            return metric(m1, name, **labels) - metric(m0, name, **labels)

        assert delta("sidecar_resumes_total", result="recovered") == 1
        for reason in ("bad_position", "too_many", "trimmed", "epoch_changed"):
            assert delta("sidecar_resumes_total", result=reason) == 1, reason
            assert delta("sidecar_resyncs_sent_total", reason=reason) == 1, reason
        assert delta("sidecar_resumes_total") == 5
        assert delta("sidecar_replayed_messages_total") == 7
        assert delta("sidecar_resyncs_sent_total") == 4
        assert delta("sidecar_history_reads_total") >= 1
        assert delta("sidecar_history_gap_reads_total") == 0, "nothing was lost on the way"

    run(main(), 40)
    pub.close()


def test_v1_offered_with_a_bearer_token_still_gets_envelopes(sidecar_factory, redis):
    """A browser cannot set headers, so it offers ``["bearer", token, "sidecar.v1"]``. Whichever
    of the two names the server echoes, the token is never echoed and the connection is in
    sidecar.v1: envelopes, and the welcome's channels."""
    import jwt as pyjwt  # python3-jwt
    secret = "history-test-secret-0123456789abcdef"
    cfg = history_yaml(extra={"auth": {"mode": "jwt", "jwt": {"secret": secret}}})
    sc = sidecar_factory(extra_yaml=cfg)
    wait_library(redis.port)
    token = pyjwt.encode({"org": "acme", "sub": "alice", "exp": int(time.time()) + 600}, secret,
                         algorithm="HS256")
    pub = Publisher(redis.port)

    async def main():
        conn = await connect_ws(sc.ws_url("/ws/acme"), subprotocols=["bearer", token, V1])
        assert conn.subprotocol in ("bearer", V1), conn.subprotocol
        c = HistoryClient(conn, "bearer+v1")
        st = channel_state(c)
        assert st["recovered"] is False, st
        await wait_subscribed(redis)
        assert pub.fcall("org:acme", b'{"hello":1}') == st["offset"] + 1
        await c.wait(lambda cl: cl.envelopes(), 10, "an envelope")
        assert c.envelopes()[0]["data"] == {"hello": 1} and c.envelopes()[0]["epoch"] == \
            st["epoch"], c.events
        await c.close()

    run(main(), 30)
    pub.close()
