"""The history Redis Function library (issue 11) in a real redis-server.

The library text comes from the real code: ``history_lua_dump`` (a test helper built next to the
sidecar) prints ``history_library()`` for the entries given on its command line. Each test loads
it with FUNCTION LOAD REPLACE and drives it with raw RESP, as redis-cli or any client would.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cluster_util import crc16, slot_of as key_slot
from harness import REPO_ROOT, RedisServer, RespConn, RespError, wait_until

# Templates: a user channel keeps 50, a room 5, and "trim:" 100. MAXLEN ~ trims only whole
# stream nodes (stream-node-max-entries, 100 by default), so trimming shows from 100 up.
ENTRIES = ["org:{org}:user:{user}", "50", "60", "50", "org:{org}", "5", "100", "5",
           "trim:{org}", "100", "100", "100"]


def dump_tool() -> str:
    build = os.environ.get("SIDECAR_BUILD_DIR")
    candidates = [Path(build)] if build else []
    candidates += [REPO_ROOT / d for d in ("build", "build-harness", "build-release")]
    for d in candidates:
        p = d / "history_lua_dump"
        if p.exists():
            return str(p)
    pytest.skip("history_lua_dump is not built (cmake --build build --target history_lua_dump)")


def library(entries=ENTRIES) -> bytes:
    return subprocess.run([dump_tool(), *entries], check=True, capture_output=True).stdout


@pytest.fixture
def r(redis):
    """The library loaded into the test's redis; a RESP connection to it."""
    conn = RespConn(redis.port)
    assert conn.command("FUNCTION", "LOAD", "REPLACE", library()) == b"sidecar"
    try:
        yield conn
    finally:
        conn.close()


def publish(r, channel, payload):
    return r.command("FCALL", "sidecar_publish", 1, channel, payload)


def read(r, channel, frm, count):
    reply = r.command("FCALL", "sidecar_read", 1, channel, frm, count)
    epoch, top, rest = reply[0], reply[1], reply[2:]
    return epoch, top, [(rest[i], rest[i + 1]) for i in range(0, len(rest), 2)]


class Subscriber:
    """A RESP connection in subscribed mode; ``next()`` waits (bounded) for one message."""

    def __init__(self, port, channel):
        self.conn = RespConn(port, timeout=5.0)
        assert self.conn.command("SUBSCRIBE", channel)[0] == b"subscribe"

    def next(self):
        kind, channel, payload = self.conn.read_reply()
        assert kind == b"message"
        return channel, payload

    def close(self):
        self.conn.close()


def test_publish_returns_consecutive_positions_and_publishes_the_header(redis, r):
    sub = Subscriber(redis.port, "org:acme")
    try:
        assert [publish(r, "org:acme", b'{"a":%d}' % i) for i in range(1, 4)] == [1, 2, 3]
        epoch = r.command("HGET", "sidecar:{org:acme}:m", "epoch")
        for i in range(1, 4):
            assert sub.next() == (b"org:acme", b"\x1esidecar1 %s %d\n{\"a\":%d}" % (epoch, i, i))
        # A plain PUBLISH still arrives as it was sent.
        assert r.command("PUBLISH", "org:acme", "plain") == 1
        assert sub.next() == (b"org:acme", b"plain")
    finally:
        sub.close()
    ids = [e[0] for e in r.command("XRANGE", "sidecar:{org:acme}:s", "-", "+")]
    assert ids == [b"1-0", b"2-0", b"3-0"]
    assert r.command("HGET", "sidecar:{org:acme}:m", "top") == b"3"


def test_maxlen_trims_and_both_keys_get_the_ttl(r):
    for i in range(1, 301):  # three times the template's size of 100
        assert publish(r, "trim:acme", b"m%d" % i) == i
    length = r.command("XLEN", "sidecar:{trim:acme}:s")
    assert 100 <= length < 300  # ~: at least size, and whole nodes are gone
    entries = r.command("XRANGE", "sidecar:{trim:acme}:s", "-", "+")
    assert entries[-1] == [b"300-0", [b"d", b"m300"]]
    first = int(entries[0][0].split(b"-")[0])
    assert [e[0] for e in entries] == [b"%d-0" % n for n in range(first, 301)]
    for key in ("sidecar:{trim:acme}:s", "sidecar:{trim:acme}:m"):
        assert 0 < r.command("TTL", key) <= 100
    # A read from before the oldest entry gets entries from the oldest on: the caller sees the
    # first one is not from+1 (decide_resume says trimmed).
    epoch, top, got = read(r, "trim:acme", 150, 200)
    assert top == 300 and got[0][0] == max(first, 151)


def test_the_first_template_that_matches_decides_size_and_ttl(r):
    for i in range(1, 21):
        publish(r, "org:acme:user:bob", b"u%d" % i)
    assert r.command("XLEN", "sidecar:{org:acme:user:bob}:s") == 20  # size 50: nothing trimmed
    assert 50 < r.command("TTL", "sidecar:{org:acme:user:bob}:s") <= 60


def test_a_channel_without_history_is_refused_and_nothing_is_published(redis, r):
    sub = Subscriber(redis.port, "other:acme")
    try:
        for channel in ("other:acme", "org:", "org:a b", "org:acme/x"):
            with pytest.raises(RespError) as e:
                publish(r, channel, b"x")
            assert "no history configured for channel" in str(e.value)
            assert "use PUBLISH" in str(e.value)
        # Nothing reached the subscriber: the next thing it sees is this marker.
        r.command("PUBLISH", "other:acme", "marker")
        assert sub.next() == (b"other:acme", b"marker")
    finally:
        sub.close()
    assert r.command("KEYS", "sidecar:*") == []


def test_a_hostile_channel_name_in_the_error_stays_on_one_line(r):
    with pytest.raises(RespError) as e:
        publish(r, "evil\r\n+OK\r\n", b"x")
    assert "\n" not in str(e.value) and "\r" not in str(e.value)
    assert r.command("PING") == b"PONG"  # the connection is still in step


def test_read_returns_epoch_top_and_the_entries_after_from(r):
    for i in range(1, 5):
        publish(r, "org:acme", b"m%d" % i)
    epoch = r.command("HGET", "sidecar:{org:acme}:m", "epoch")
    assert read(r, "org:acme", 0, 5) == (epoch, 4, [(1, b"m1"), (2, b"m2"), (3, b"m3"),
                                                    (4, b"m4")])
    assert read(r, "org:acme", 2, 5) == (epoch, 4, [(3, b"m3"), (4, b"m4")])
    assert read(r, "org:acme", 4, 5) == (epoch, 4, [])
    assert read(r, "org:acme", 2, 0) == (epoch, 4, [])  # count 0: just the position
    assert read(r, "org:acme", 0, 3) == (epoch, 4, [])  # 4 missed > 3: none sent
    assert read(r, "org:acme", 9, 5) == (epoch, 4, [])  # beyond the top


def test_read_of_a_new_channel_makes_its_epoch_at_position_zero(r):
    epoch, top, entries = read(r, "org:quiet", 0, 5)
    assert top == 0 and entries == [] and len(epoch) == 13
    assert r.command("HGET", "sidecar:{org:quiet}:m", "epoch") == epoch
    assert 0 < r.command("TTL", "sidecar:{org:quiet}:m") <= 100
    assert publish(r, "org:quiet", b"first") == 1
    assert read(r, "org:quiet", 0, 5) == (epoch, 1, [(1, b"first")])


def test_read_refuses_bad_arguments_and_unknown_channels(r):
    for args in ((1, "org:acme", "x", 5), (1, "org:acme", -1, 5), (1, "org:acme", 0),
                 (1, "other:acme", 0, 5)):
        with pytest.raises(RespError):
            r.command("FCALL", "sidecar_read", *args)
    assert r.command("KEYS", "sidecar:*") == []


def test_lost_keys_make_a_new_epoch(r):
    publish(r, "org:acme", b"a")
    old = r.command("HGET", "sidecar:{org:acme}:m", "epoch")
    r.command("DEL", "sidecar:{org:acme}:s", "sidecar:{org:acme}:m")
    assert publish(r, "org:acme", b"b") == 1
    new = r.command("HGET", "sidecar:{org:acme}:m", "epoch")
    assert new != old
    r.command("FLUSHALL")
    epoch, top, _ = read(r, "org:acme", 0, 5)
    assert top == 0 and epoch not in (old, new)


def test_a_stream_left_without_its_metadata_is_dropped_with_the_old_epoch(r):
    for i in range(3):
        publish(r, "org:acme", b"old")
    r.command("DEL", "sidecar:{org:acme}:m")  # as if evicted alone
    assert publish(r, "org:acme", b"new") == 1  # XADD 1-0 would fail on the old stream
    assert r.command("XRANGE", "sidecar:{org:acme}:s", "-", "+") == [[b"1-0", [b"d", b"new"]]]


def test_the_two_key_form_names_the_same_history_and_refuses_keys_that_disagree(redis, r):
    """``2 sidecar:{C}:s sidecar:{C}:m`` (the form a Cluster routes by where the keys are while
    C's slot migrates) is the same call as ``1 C``: one stream, one sequence of positions, the
    same published header. Keys that are not C's pair are refused and change nothing."""
    keys = ("sidecar:{org:acme}:s", "sidecar:{org:acme}:m")
    sub = Subscriber(redis.port, "org:acme")
    try:
        assert publish(r, "org:acme", b"one") == 1
        assert r.command("FCALL", "sidecar_publish", 2, *keys, b"two") == 2
        assert publish(r, "org:acme", b"three") == 3
        epoch = r.command("HGET", keys[1], "epoch")
        assert [sub.next()[1].split(b"\n", 1) for _ in range(3)] == [
            [b"\x1esidecar1 " + epoch + b" %d" % i, p]
            for i, p in ((1, b"one"), (2, b"two"), (3, b"three"))]
    finally:
        sub.close()
    reply = r.command("FCALL", "sidecar_read", 2, *keys, 1, 10)
    assert reply == [epoch, 3, 2, b"two", 3, b"three"]
    for bad in (("sidecar:{org:acme}:s", "sidecar:{org:other}:m"),
                ("sidecar:{org:acme}:m", "sidecar:{org:acme}:s"),
                ("org:acme", "sidecar:{org:acme}:m"),
                ("sidecar:{org:acme}:s", "sidecar:{org:acme}:m", "extra")):
        for fn, args in (("sidecar_publish", (b"x",)), ("sidecar_read", (0, 5))):
            with pytest.raises(RespError, match="expected 1 key, the channel, or 2 keys"):
                r.command("FCALL", fn, len(bad), *bad, *args)
    with pytest.raises(RespError, match="no history configured"):
        r.command("FCALL", "sidecar_publish", 2, "sidecar:{other:x}:s", "sidecar:{other:x}:m", b"x")
    assert r.command("HGET", keys[1], "top") == b"3"
    assert sorted(r.command("KEYS", "sidecar:*")) == [b"sidecar:{org:acme}:m",
                                                      b"sidecar:{org:acme}:s"]


def test_a_promoted_replica_starts_a_new_epoch_and_keys_moved_elsewhere_keep_theirs():
    """The writer of a channel's history is its node's replication ID. A replica promoted in
    its place (REPLICAOF NO ONE: what a failover does) carries that ID as master_replid2, and
    may lack positions the writer acknowledged: the next call there makes a new epoch, with the
    positions going on from the top it has (never given twice). Keys MIGRATEd to an unrelated
    node (resharding) keep their epoch and positions."""
    lib = library()
    servers = [RedisServer().start() for _ in range(3)]
    try:
        a, b, c = (RespConn(x.port) for x in servers)
        for conn in (a, b, c):
            assert conn.command("FUNCTION", "LOAD", "REPLACE", lib) == b"sidecar"
        assert b.command("REPLICAOF", "127.0.0.1", servers[0].port) == b"OK"
        wait_until(lambda: b"master_link_status:up" in b.command("INFO", "replication"), 10,
                   "replica in sync")
        for i in range(1, 4):
            assert publish(a, "org:acme", b"m%d" % i) == i
        epoch = a.command("HGET", "sidecar:{org:acme}:m", "epoch")
        assert a.command("WAIT", 1, 5000) == 1
        assert b.command("HGET", "sidecar:{org:acme}:m", "epoch") == epoch

        # Keys moved to an unrelated node keep the epoch and go on.
        assert a.command("MIGRATE", "127.0.0.1", servers[2].port, "", 0, 5000, "COPY", "KEYS",
                         "sidecar:{org:acme}:s", "sidecar:{org:acme}:m") == b"OK"
        assert publish(c, "org:acme", b"m4") == 4
        assert c.command("HGET", "sidecar:{org:acme}:m", "epoch") == epoch

        # The replica is promoted: a new epoch, positions after its top, its old entries gone.
        assert b.command("REPLICAOF", "NO", "ONE") == b"OK"
        assert publish(b, "org:acme", b"after") == 4
        new_epoch = b.command("HGET", "sidecar:{org:acme}:m", "epoch")
        assert new_epoch != epoch
        assert read(b, "org:acme", 3, 10) == (new_epoch, 4, [(4, b"after")])
        assert b.command("XLEN", "sidecar:{org:acme}:s") == 1
        # Once written by the promoted node it is its own history: no further change.
        assert publish(b, "org:acme", b"next") == 5
        assert b.command("HGET", "sidecar:{org:acme}:m", "epoch") == new_epoch
        for conn in (a, b, c):
            conn.close()
    finally:
        for x in servers:
            x.stop()


def test_a_publisher_whose_acl_forbids_info_still_publishes_with_one_epoch(redis, r):
    """The failover check reads INFO replication; a backend user whose ACL does not allow INFO
    publishes as before (the check is skipped), with the same epoch and consecutive positions."""
    assert r.command("ACL", "SETUSER", "pub", "reset", "on", ">pw", "~*", "&*", "+@all",
                     "-info") == b"OK"
    conn = RespConn(redis.port)
    try:
        assert conn.command("AUTH", "pub", "pw") == b"OK"
        with pytest.raises(RespError, match="NOPERM"):
            conn.command("INFO", "replication")
        assert publish(conn, "org:acme", b"one") == 1
        epoch = r.command("HGET", "sidecar:{org:acme}:m", "epoch")
        assert publish(r, "org:acme", b"two") == 2  # the default user, which may
        assert publish(conn, "org:acme", b"three") == 3
        assert r.command("HGET", "sidecar:{org:acme}:m", "epoch") == epoch
    finally:
        conn.close()
        r.command("ACL", "DELUSER", "pub")


def test_keys_and_channel_share_one_cluster_slot():
    assert crc16(b"123456789") == 0x31C3  # the check value in the Redis Cluster spec
    for channel in (b"org:acme", b"org:acme:user:bob", b"org:x.y_z-1"):
        slot = key_slot(channel)
        assert key_slot(b"sidecar:{" + channel + b"}:s") == slot
        assert key_slot(b"sidecar:{" + channel + b"}:m") == slot
    # CLUSTER KEYSLOT would say the same, but a standalone server refuses it ("cluster support
    # disabled"), hence the spec's check value above.


def test_binary_payloads_round_trip(redis, r):
    payload = bytes(range(256)) + b"\x00\r\n\x1esidecar1 x 1\n"
    sub = Subscriber(redis.port, "org:bin")
    try:
        assert publish(r, "org:bin", payload) == 1
        epoch = r.command("HGET", "sidecar:{org:bin}:m", "epoch")
        assert sub.next() == (b"org:bin", b"\x1esidecar1 " + epoch + b" 1\n" + payload)
    finally:
        sub.close()
    assert read(r, "org:bin", 0, 5)[2] == [(1, payload)]
    assert publish(r, "org:bin", b"") == 2  # empty payloads are payloads too
    assert read(r, "org:bin", 1, 5)[2] == [(2, b"")]


def test_load_replace_is_idempotent_and_keeps_history(r):
    publish(r, "org:acme", b"a")
    epoch = r.command("HGET", "sidecar:{org:acme}:m", "epoch")
    for _ in range(2):
        assert r.command("FUNCTION", "LOAD", "REPLACE", library()) == b"sidecar"
    assert publish(r, "org:acme", b"b") == 2
    assert r.command("HGET", "sidecar:{org:acme}:m", "epoch") == epoch
    names = {f[1] for f in r.command("FUNCTION", "LIST", "LIBRARYNAME", "sidecar")[0][5]}
    assert names == {b"sidecar_publish", b"sidecar_read"}


def test_function_flags(r):
    lib = r.command("FUNCTION", "LIST", "LIBRARYNAME", "sidecar")[0]
    flags = {f[1]: set(f[5]) for f in lib[5]}
    assert flags == {b"sidecar_publish": set(), b"sidecar_read": {b"allow-oom"}}


def test_a_template_with_lua_magic_characters_matches_only_itself(redis):
    conn = RespConn(redis.port)
    try:
        lib = library(["a.b%c+(x)[y]-{org}", "5", "60", "5"])
        assert conn.command("FUNCTION", "LOAD", "REPLACE", lib) == b"sidecar"
        assert conn.command("FCALL", "sidecar_publish", 1, "a.b%c+(x)[y]-acme", "p") == 1
        with pytest.raises(RespError):
            conn.command("FCALL", "sidecar_publish", 1, "aXb%c+(x)[y]-acme", "p")
    finally:
        conn.close()


def test_the_dump_tool_refuses_a_bad_list():
    p = subprocess.run([dump_tool(), "org:{tenant}", "5", "60", "9"], capture_output=True,
                       text=True)
    assert p.returncode == 1
    assert "history[0].channel" in p.stderr and "history[0].max_recover" in p.stderr
