"""Redis Cluster (issue 13): a real 3-master, 3-replica cluster on loopback (Debian's
redis-server, joined with redis-cli --cluster create), two sidecars configured with
``redis.cluster``, and clients in many orgs whose channels are spread over every shard.

- Both pub/sub modes: a PUBLISH (global) or SPUBLISH (sharded) and an FCALL sidecar_publish (the
  library loaded on every master, publishing the mode's way) reach exactly the room's members on
  both sidecars, and nobody else.
- kill -9 of a master while rooms live on it: its replica is promoted, the sidecars find it,
  subscribe there again, /ready says 503 naming the shard while it lasts and 200 after, the
  sidecars never exit, and the rooms receive again.
- A slot moved under a live room (SETSLOT ends the SSUBSCRIBE), also while a backend keeps
  publishing with history on: every publication reaches the client once, in order.
- A seed that is down at start is skipped; a node that is not in cluster mode is a clear error.
- A one-node cluster with a password works in both modes; a wrong password is a clear error.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import threading
import urllib.parse

import pytest

from cluster_util import ClusterNode, ClusterPublisher, ClusterSidecar, RedisCluster, slot_of
from harness import HOST, SLOW, RespConn, connect_ws, free_port, recv_message, run, wait_until
from resilience_util import ready_status

HISTORY = [{"channel": "org:{org}", "size": 100, "ttl_s": 600, "max_recover": 100}]


def orgs_over_every_shard(cluster: RedisCluster, n: int) -> list[str]:
    """``n`` org ids whose room channels fall on every master (and many slots)."""
    orgs = [f"o{i}" for i in range(n)]
    owners = {cluster.master_port_of_slot(slot_of(f"org:{o}")) for o in orgs}
    assert owners == {m.port for m in cluster.masters()}, "orgs must cover every shard"
    return orgs


def wait_clean_ready(sc, timeout: float = 20.0):
    """/ready 200 with nothing degraded (the history library loaded on every master)."""
    def ok():
        status, body = ready_status(sc)
        return status == 200 and "degraded" not in body
    wait_until(ok, timeout * SLOW, f"clean /ready 200 on sidecar port {sc.port}", interval=0.05)


async def expect_message(conn, want, sc, channel: str, timeout: float = 5.0):
    """The next message on ``conn`` is ``want``. When nothing comes, the failure quotes what the
    sidecar logged about ``channel`` and the topology (debug level), so that a CI log shows why."""
    try:
        got = await recv_message(conn, timeout)
    except asyncio.TimeoutError:
        lines = [l for l in sc.log().splitlines() if channel in l or "cluster_topology" in l]
        pytest.fail(f"{want!r} did not arrive in {timeout * SLOW:.0f} s; the sidecar's log on "
                    f"{channel} and the topology:\n" + "\n".join(lines[-60:]), pytrace=False)
    assert got == want


def subscribers(cluster: RedisCluster, channel: str, sharded: bool) -> int:
    """How many sidecars are subscribed to ``channel``: SHARDNUMSUB on its master, or the sum of
    NUMSUB over every node (global subscriptions are per node)."""
    if sharded:
        reply = cluster.command_for(channel, "PUBSUB", "SHARDNUMSUB", channel)
        return int(reply[1])
    total = 0
    for n in cluster.alive():
        total += int(n.command("PUBSUB", "NUMSUB", channel)[1])
    return total


@pytest.fixture(scope="module")
def cluster():
    c = RedisCluster(masters=3, replicas=1).start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def cluster_sidecars():
    made = []

    def make(seeds, pubsub, extra=None):
        sc = ClusterSidecar(seeds, pubsub, extra_yaml=extra)
        made.append(sc)
        sc.start()
        return sc

    yield make
    problems = []
    for sc in made:
        sc.stop()
        tail = [l for l in sc.log().splitlines() if "retry_failed" not in l][-300:]
        print(f"---- sidecar log (port {sc.port})")
        print("\n".join(tail))
        if sc.sanitizer_report():
            problems.append(sc.sanitizer_report())
        if sc.exit_problem():
            problems.append(sc.exit_problem())
    for sc in made:
        sc.cleanup()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


async def connect_everyone(sidecars, orgs):
    """One client per org on each sidecar: {(sidecar index, org): connection}."""
    conns = {}
    for i, sc in enumerate(sidecars):
        for o in orgs:
            conns[(i, o)] = await connect_ws(sc.ws_url(f"/ws/{o}"))
    return conns


async def expect_exactly(conns, expected: dict, quiet_s: float = 0.3):
    """Each connection receives exactly ``expected[org]`` (a list, in order) and then nothing
    more for ``quiet_s``."""
    async def one(key, conn):
        got = []
        want = expected[key[1]]
        while len(got) < len(want):
            got.append(await recv_message(conn, 10))
        try:
            extra = await asyncio.wait_for(conn.recv(), quiet_s)
            got.append(extra)
        except asyncio.TimeoutError:
            pass
        return key, got
    results = await asyncio.gather(*(one(k, c) for k, c in conns.items()))
    for key, got in results:
        assert got == expected[key[1]], f"{key}: got {got!r}, expected {expected[key[1]]!r}"


@pytest.mark.parametrize("mode", ["global", "sharded"])
def test_every_message_reaches_exactly_its_rooms_members_on_both_sidecars(cluster,
                                                                         cluster_sidecars, mode):
    seeds = [f"{HOST}:{n.port}" for n in cluster.nodes[:2]]
    sidecars = [cluster_sidecars(seeds, mode, {"history": HISTORY}) for _ in range(2)]
    for sc in sidecars:
        wait_clean_ready(sc)
    orgs = orgs_over_every_shard(cluster, 24)
    sharded = mode == "sharded"

    async def main():
        conns = await connect_everyone(sidecars, orgs)
        for o in orgs:
            wait_until(lambda: subscribers(cluster, f"org:{o}", sharded) == 2, 10 * SLOW,
                       f"both sidecars subscribed to org:{o}", interval=0.02)
        expected = {}
        for o in orgs:
            live = f"live {o} {mode}"
            if sharded:
                receivers = cluster.spublish(f"org:{o}", live)
            else:
                receivers = cluster.publish(f"org:{o}", live)
            assert receivers >= 1
            fcalled = f"fcall {o} {mode}"
            position = cluster.fcall(f"org:{o}", fcalled)
            assert position >= 1
            expected[o] = [live, fcalled]
        await expect_exactly(conns, expected)
        for c in conns.values():
            await c.close()

    run(main(), 120)
    # In sharded mode a room's channel lives only on its shard's master.
    if sharded:
        o = orgs[0]
        owner = cluster.master_port_of_slot(slot_of(f"org:{o}"))
        for n in cluster.alive():
            count = int(n.command("PUBSUB", "SHARDNUMSUB", f"org:{o}")[1])
            assert count == (0 if n.port != owner else count)


def sidecar_links(node) -> int:
    """Client connections on ``node`` other than the test's own (replicas excluded)."""
    mine = node.command("CLIENT", "ID")
    lines = [l for t in ("normal", "pubsub")
             for l in node.command("CLIENT", "LIST", "TYPE", t).decode().splitlines()]
    return sum(1 for l in lines if not l.startswith(f"id={mine} "))


@pytest.mark.parametrize("mode", ["global", "sharded"])
def test_a_master_gets_a_subscriber_link_only_when_it_serves_a_room(cluster, cluster_sidecars,
                                                                      mode):
    """One subscriber link per master in use: each master has the sidecar's command link (the
    library, reads, XADD); a subscriber link only where rooms' channels are subscribed (sharded)
    or, in global mode, only the global subscriber's node."""
    seed = cluster.nodes[0]
    sc = cluster_sidecars([f"{HOST}:{seed.port}"], mode)
    wait_clean_ready(sc)
    masters = cluster.masters()
    before = {m.port: sidecar_links(m) for m in masters}
    # Every master's command link; on the seed also the global subscriber's two links and the
    # topology link.
    assert before == {m.port: 1 + (3 if m.port == seed.port else 0) for m in masters}, before
    if mode == "global":
        return
    o = "links"
    owner = cluster.master_port_of_slot(slot_of(f"org:{o}"))
    bcast = cluster.master_port_of_slot(slot_of("sidecar:broadcast"))

    async def main():
        conn = await connect_ws(sc.ws_url(f"/ws/{o}"))
        await asyncio.to_thread(wait_until, lambda: subscribers(cluster, f"org:{o}", True) == 1,
                                10 * SLOW, "the room subscribed at its master", 0.02)
        after = {m.port: sidecar_links(m) for m in masters}
        # A subscriber link at the room's master and at the broadcast channel's (every session
        # joins it), one each however many channels it holds; none anywhere else.
        want = {p: n + (1 if p in (owner, bcast) else 0) for p, n in before.items()}
        assert after == want, (after, want)
        cluster.spublish(f"org:{o}", "hello")
        assert await recv_message(conn, 5) == "hello"
        await conn.close()

    run(main(), 60)


def test_metrics_name_every_node_with_its_links_and_subscriptions(cluster, cluster_sidecars):
    """/metrics on a cluster: one series per node (every master, and the global subscriber) with
    whether it is up, its reconnects and the channels subscribed there; in sharded mode each
    master holds exactly the rooms whose slot it owns."""
    sc = cluster_sidecars([f"{HOST}:{cluster.nodes[0].port}"], "sharded")
    wait_clean_ready(sc)
    orgs = orgs_over_every_shard(cluster, 12)

    def series() -> dict:
        status, _, body = sc.http("GET", "/metrics")
        assert status == 200
        out = {}
        for name, node, role, v in re.findall(
                r'^(sidecar_redis_node_\w+)\{node="([^"]+)",role="(\w+)"\} (\S+)$',
                body.decode(), re.M):
            out[(name, node, role)] = float(v)
        return out

    async def main():
        conns = [await connect_ws(sc.ws_url(f"/ws/{o}")) for o in orgs]
        want = {}
        # Every session also joins the broadcast room, placed on its own slot's master.
        for ch in [f"org:{o}" for o in orgs] + ["sidecar:broadcast"]:
            port = cluster.master_port_of_slot(slot_of(ch))
            want[port] = want.get(port, 0) + 1
        masters = {f"{HOST}:{m.port}" for m in cluster.masters()}

        def settled():
            s = series()
            return all(s.get(("sidecar_redis_node_subscriptions", f"{HOST}:{p}", "master")) == n
                       for p, n in want.items())
        await asyncio.to_thread(wait_until, settled, 10 * SLOW, "every room on its master", 0.05)
        s = series()
        assert {node for (name, node, role) in s if role == "master"} == masters
        for node in masters:
            assert s[("sidecar_redis_node_up", node, "master")] == 1
            assert s[("sidecar_redis_node_reconnects_total", node, "master")] == 0
        subscriber = [k for k in s if k[0] == "sidecar_redis_node_up" and k[2] == "subscriber"]
        assert len(subscriber) == 1 and s[subscriber[0]] == 1
        status, _, body = sc.http("GET", "/metrics")
        text = body.decode()
        assert re.search(r"^sidecar_redis_cluster_topology_refreshes_total [1-9]", text, re.M)
        assert re.search(r"^sidecar_inbound_lost_total 0$", text, re.M)
        for c in conns:
            await c.close()

    run(main(), 60)


def test_a_master_killed_with_sigkill_fails_over_and_rooms_receive_again(cluster_sidecars):
    cluster = RedisCluster(masters=3, replicas=1).start()
    try:
        seeds = [f"{HOST}:{n.port}" for n in cluster.nodes]
        sidecars = [cluster_sidecars(seeds, "sharded", {"history": HISTORY}) for _ in range(2)]
        for sc in sidecars:
            wait_clean_ready(sc)
        orgs = orgs_over_every_shard(cluster, 12)
        victim = cluster.master_port_of_slot(slot_of(f"org:{orgs[0]}"))
        on_victim = [o for o in orgs if cluster.master_port_of_slot(slot_of(f"org:{o}")) == victim]

        async def main():
            conns = await connect_everyone(sidecars, orgs)
            for o in orgs:
                wait_until(lambda: subscribers(cluster, f"org:{o}", True) == 2, 10 * SLOW,
                           f"both sidecars subscribed to org:{o}", interval=0.02)
            await asyncio.to_thread(cluster.node(victim).kill)
            # The outage is reported while it lasts, naming the shard.
            for sc in sidecars:
                status, body = await asyncio.to_thread(
                    wait_until, lambda: (lambda r: r if r[0] == 503 else None)(ready_status(sc)),
                    10 * SLOW, "/ready 503 while the master is down", 0.02)
                assert str(victim) in body.get("reason", ""), body
            await asyncio.to_thread(cluster.wait_failover, victim, 30 * SLOW)
            for sc in sidecars:
                await asyncio.to_thread(wait_clean_ready, sc, 20)
                assert sc.running()
            for o in on_victim:
                await asyncio.to_thread(
                    wait_until, lambda: subscribers(cluster, f"org:{o}", True) == 2, 10 * SLOW,
                    f"org:{o} subscribed at the promoted replica", 0.02)
            for o in orgs:
                cluster.fcall(f"org:{o}", f"after failover {o}")
            # Rooms of the failed shard are told to reload once (the failover started a new
            # epoch: test_a_failover_starts_a_new_epoch_so_no_position_is_given_twice); the others
            # notice nothing. Then each gets its message, once.
            for (i, o), conn in conns.items():
                first = await recv_message(conn, 10)
                if o in on_victim:
                    resync = json.loads(first)
                    assert (resync["type"], resync["reason"]) == ("resync", "epoch_changed"), first
                    first = await recv_message(conn, 10)
                assert first == f"after failover {o}", (i, o, first)
            for conn in conns.values():
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(conn.recv(), 0.3)

        run(main(), 180)
        for sc in sidecars:
            assert "cluster_master_removed" in sc.log() or "cluster_master_added" in sc.log()
    finally:
        cluster.stop()


def test_a_failover_starts_a_new_epoch_so_no_position_is_given_twice(cluster_sidecars):
    """Redis Cluster replicates asynchronously: a master can acknowledge a publication and die
    before its replica has it; the promoted replica would then give that position to the next
    publication, and a client that saw the lost one would take the new one for a repeat and
    drop it, silently. So a failover starts a new epoch for the shard's channels: a history
    room's clients get one `resync` `epoch_changed` (reload), and a client resuming with a
    position of the old epoch gets the same; what is published after is delivered."""
    cluster = RedisCluster(masters=3, replicas=1).start()
    try:
        seeds = [f"{HOST}:{n.port}" for n in cluster.nodes]
        sc = cluster_sidecars(seeds, "sharded", {"history": HISTORY})
        wait_clean_ready(sc)
        o = "failing"
        channel = f"org:{o}"
        victim = cluster.master_port_of_slot(slot_of(channel))

        async def main():
            live = await connect_ws(sc.ws_url(f"/ws/{o}"))
            v1 = await connect_ws(sc.ws_url(f"/ws/{o}"), subprotocols=["sidecar.v1"])
            await asyncio.to_thread(wait_until, lambda: subscribers(cluster, channel, True) == 1,
                                    10 * SLOW, f"{channel} subscribed", 0.02)
            cluster.fcall(channel, "before")
            await expect_message(live, "before", sc, channel)
            env = json.loads(await recv_message(v1, 5))
            assert env["data"] == "before", env
            old = (env["epoch"], env["offset"])
            await v1.close()
            # Replicated (WAIT), so the replica knows the epoch: only the failover changes it.
            assert cluster.node(victim).command("WAIT", 1, 5000) == 1
            await asyncio.to_thread(cluster.node(victim).kill)
            await asyncio.to_thread(cluster.wait_failover, victim, 30 * SLOW)
            await asyncio.to_thread(wait_until, lambda: subscribers(cluster, channel, True) == 1,
                                    20 * SLOW, f"{channel} subscribed at the promoted replica",
                                    0.05)
            cluster.fcall(channel, "after")
            got = []
            while "after" not in got:
                got.append(await recv_message(live, 10))
            resyncs = [json.loads(m) for m in got if m.startswith('{"type":"resync"')]
            assert [r["reason"] for r in resyncs] == ["epoch_changed"], got
            # A client that resumes with its old-epoch position is told too.
            token = urllib.parse.quote(f"{channel}@{old[0]}:{old[1]}", safe="")
            back = await connect_ws(sc.ws_url(f"/ws/{o}?recover={token}"),
                                    subprotocols=["sidecar.v1"])
            start = back.welcome["channels"][channel]
            assert start["recovered"] is False and start["epoch"] != old[0], start
            await back.close()
            await live.close()

        run(main(), 180)
    finally:
        cluster.stop()


def test_a_master_killed_while_a_backend_publishes_loses_nothing_silently(cluster_sidecars):
    """kill -9 of a master while a backend publishes every ~5 ms with history (sharded). The
    backend retries as cluster clients do until the replica is promoted. The client gets an
    unbroken run of publications from the first, then one `resync` `epoch_changed` (the failover
    started a new epoch; the client reloads there), then exactly the publications after the
    resync's position, in order, to the last: nothing repeated, nothing skipped without a resync.
    The sidecar never exits and /ready reports the outage while it lasts."""
    cluster = RedisCluster(masters=3, replicas=1).start()
    try:
        seeds = [f"{HOST}:{n.port}" for n in cluster.nodes]
        sc = cluster_sidecars(seeds, "sharded", {"history": HISTORY})
        wait_clean_ready(sc)
        o = "killed-publishing"
        channel = f"org:{o}"
        victim = cluster.master_port_of_slot(slot_of(channel))
        publisher = ClusterPublisher(cluster)
        published = []  # (payload, position, port of the node that took it)
        cond = threading.Condition()
        stop = threading.Event()

        def publish_steadily():
            try:
                for i in range(3000):  # bounded; stopped long before
                    if stop.is_set():
                        break
                    position, port = publisher.fcall(channel, f"p{i}")
                    with cond:
                        published.append((f"p{i}", position, port))
                        cond.notify_all()
                    stop.wait(0.005)
            finally:
                publisher.close()

        def taken_by_others(n: int):
            with cond:
                assert cond.wait_for(
                    lambda: sum(1 for _, _, p in published if p != victim) >= n, 40 * SLOW), \
                    "the promoted replica never took a publication"

        async def main():
            conn = await connect_ws(sc.ws_url(f"/ws/{o}"))
            await asyncio.to_thread(wait_until, lambda: subscribers(cluster, channel, True) == 1,
                                    10 * SLOW, f"{channel} subscribed", 0.02)
            got = []

            def after_resync() -> int:
                marks = [i for i, m in enumerate(got) if m.startswith('{"type":"resync"')]
                return len(got) - marks[0] - 1 if marks else -1

            thread = threading.Thread(target=publish_steadily, daemon=True)
            thread.start()
            try:
                while len(got) < 20:
                    got.append(await recv_message(conn, 10))
                await asyncio.to_thread(cluster.node(victim).kill)
                status, body = await asyncio.to_thread(
                    wait_until, lambda: (lambda r: r if r[0] == 503 else None)(ready_status(sc)),
                    10 * SLOW, "/ready 503 while the master is down", 0.02)
                assert str(victim) in body.get("reason", ""), body
                await asyncio.to_thread(taken_by_others, 1)
                # Publishing goes on until the client is back on the stream for 20 messages.
                while after_resync() < 20:
                    got.append(await recv_message(conn, 20))
            finally:
                stop.set()
                await asyncio.to_thread(thread.join, 60)
            last = published[-1][0]
            try:
                while got[-1] != last:
                    got.append(await recv_message(conn, 20))
            except asyncio.TimeoutError:
                pytest.fail(f"{last!r} never came; received {got!r}; published {published!r}",
                            pytrace=False)
            await conn.close()
            return got

        got = run(main(), 240)
        assert sc.running()
        resyncs = [i for i, m in enumerate(got) if m.startswith('{"type":"resync"')]
        assert len(resyncs) == 1, got
        resync = json.loads(got[resyncs[0]])
        assert resync["reason"] == "epoch_changed", resync
        before, after = got[:resyncs[0]], got[resyncs[0] + 1:]
        order = [p for p, _, _ in published]
        assert before == order[:len(before)], "before the resync: an unbroken run from the first"
        # After it: every publication of the new epoch past the resync's position, nothing else.
        assert after == [p for p, pos, port in published
                         if port != victim and pos > resync["offset"]], (resync, after)
        assert after[-1] == order[-1]
    finally:
        cluster.stop()


@pytest.mark.parametrize("history", [True, False], ids=["history", "no_history"])
def test_a_slot_moved_under_a_live_room_is_followed(cluster, cluster_sidecars, history):
    """Resharding: the slot of a live room moves to another master. Redis ends the sidecar's
    SSUBSCRIBE with a sunsubscribe push; the sidecar subscribes at the new owner. A message
    published right after the move (before or after the sidecar is back, whichever comes first)
    reaches the client: live, or through the history room's gap read. A room without history
    (history kept for other channels) is told `resync` `redis_reconnected` once the sidecar is
    subscribed at the new owner, then receives what is published after."""
    seeds = [f"{HOST}:{cluster.nodes[0].port}"]
    others = [{"channel": "other:{org}", "size": 10, "ttl_s": 60, "max_recover": 10}]
    extra = {"history": HISTORY if history else others}
    sc = cluster_sidecars(seeds, "sharded", extra)
    wait_clean_ready(sc)
    o = "moving-history" if history else "moving-plain"
    channel = f"org:{o}"
    slot = slot_of(channel)
    src = cluster.master_port_of_slot(slot)
    dst = next(m.port for m in cluster.masters() if m.port != src)

    async def main():
        conn = await connect_ws(sc.ws_url(f"/ws/{o}"))
        await asyncio.to_thread(wait_until, lambda: subscribers(cluster, channel, True) == 1,
                                10 * SLOW, f"{channel} subscribed", 0.02)
        if history:
            cluster.fcall(channel, "before")
        else:
            cluster.spublish(channel, "before")
        await expect_message(conn, "before", sc, channel)
        await asyncio.to_thread(cluster.migrate_slot, slot, dst)
        if history:
            cluster.fcall(channel, "right after the move")
        await asyncio.to_thread(
            wait_until, lambda: int(cluster.node(dst).command(
                "PUBSUB", "SHARDNUMSUB", channel)[1]) == 1,
            10 * SLOW, f"{channel} subscribed at its new master {dst}", 0.02)
        if history:
            cluster.fcall(channel, "later")
            await expect_message(conn, "right after the move", sc, channel)
            await expect_message(conn, "later", sc, channel)
        else:
            # At most once, as on one Redis: nothing to replay, so the client is told to reload;
            # what is published once the sidecar is subscribed at the new owner arrives.
            cluster.spublish(channel, "later")
            resync = json.loads(await recv_message(conn, 5))
            assert (resync["type"], resync["reason"]) == ("resync", "redis_reconnected"), resync
            await expect_message(conn, "later", sc, channel)
        await conn.close()

    run(main(), 60)
    sc.wait_log(r"event=redis_shard_unsubscribed channel=" + re.escape(channel), 5)


def test_a_slot_moved_under_a_steady_publisher_loses_and_repeats_nothing(cluster, cluster_sidecars):
    """Resharding while a backend keeps publishing with history on (sharded). The publisher uses
    the two-key form of sidecar_publish and follows MOVED, ASK and TRYAGAIN as cluster clients
    do: while the slot is MIGRATING its calls run on the source (the keys are there), once the
    keys have moved they are sent to the target with ASKING, and after the handover they go to
    the target. The history stays one stream (MIGRATE never finds a second one at the target),
    and the client gets every publication exactly once, in order: live, or by the gap read once
    the sidecar is subscribed at the new owner."""
    sc = cluster_sidecars([f"{HOST}:{cluster.nodes[0].port}"], "sharded", {"history": HISTORY})
    wait_clean_ready(sc)
    o = "moving-steady"
    channel = f"org:{o}"
    slot = slot_of(channel)
    src = cluster.master_port_of_slot(slot)
    dst = next(m.port for m in cluster.masters() if m.port != src)
    publisher = ClusterPublisher(cluster)
    published = []
    cond = threading.Condition()
    stop = threading.Event()

    def publish_steadily():
        # Bounded: at most 600 publications, paced so that the gap stays under max_recover.
        try:
            for i in range(600):
                if stop.is_set():
                    break
                publisher.fcall(channel, f"p{i}")  # (position, port)
                with cond:
                    published.append(f"p{i}")
                    cond.notify_all()
                stop.wait(0.005)
            publisher.fcall(channel, "end")
        finally:
            publisher.close()

    def published_more(n: int):
        with cond:
            target = len(published) + n
            assert cond.wait_for(lambda: len(published) >= target, 10 * SLOW), \
                f"the publisher did not get {n} more publications through"

    async def main():
        conn = await connect_ws(sc.ws_url(f"/ws/{o}"))
        await asyncio.to_thread(wait_until, lambda: subscribers(cluster, channel, True) == 1,
                                10 * SLOW, f"{channel} subscribed", 0.02)
        got = []

        async def collect():
            while True:
                m = await recv_message(conn, 10)
                if m == "end":
                    return
                got.append(m)

        collector = asyncio.ensure_future(collect())
        thread = threading.Thread(target=publish_steadily, daemon=True)
        thread.start()
        try:
            await asyncio.to_thread(published_more, 10)
            await asyncio.to_thread(cluster.migrate_slot, slot, dst,
                                    lambda: published_more(10), lambda: published_more(10))
            await asyncio.to_thread(published_more, 10)
        finally:
            stop.set()
            await asyncio.to_thread(thread.join, 30)
        await asyncio.wait_for(collector, 20 * SLOW)
        await conn.close()
        assert publisher.asks > 0, "no publication was sent to the target with ASKING"
        assert got == published, (f"{len(got)} received of {len(published)} published; first "
                                  f"difference at {next((i for i, (a, b) in enumerate(zip(got, published)) if a != b), min(len(got), len(published)))}")
        entries = cluster.node(dst).command("XLEN", f"sidecar:{{{channel}}}:s")
        assert entries == len(published) + 1  # one stream, with "end"

    run(main(), 90)


def test_a_gap_read_while_the_slot_migrates_follows_ask_to_the_history(cluster, cluster_sidecars):
    """Mid-resharding (the slot MIGRATING, its keys already on the target, not handed over): the
    sidecar's subscriber link to the source drops, and a publication lands on the target (the
    publisher follows ASK). The room subscribes again at the source, which still owns the slot,
    and reads its gap there: the source answers ASK, and the sidecar reads the history at the
    target after ASKING. The client gets the publication, not a resync."""
    sc = cluster_sidecars([f"{HOST}:{cluster.nodes[0].port}"], "sharded", {"history": HISTORY})
    wait_clean_ready(sc)
    o = "moving-gap"
    channel = f"org:{o}"
    slot = slot_of(channel)
    src = cluster.master_port_of_slot(slot)
    dst = next(m.port for m in cluster.masters() if m.port != src)
    publisher = ClusterPublisher(cluster)
    arrived = threading.Event()
    got = []

    async def main():
        conn = await connect_ws(sc.ws_url(f"/ws/{o}"))
        await asyncio.to_thread(wait_until, lambda: subscribers(cluster, channel, True) == 1,
                                10 * SLOW, f"{channel} subscribed", 0.02)
        publisher.fcall(channel, "one")
        await expect_message(conn, "one", sc, channel)

        async def collect():
            while "two" not in got:
                got.append(await recv_message(conn, 20))
            arrived.set()

        collector = asyncio.ensure_future(collect())

        def while_keys_moved():
            _, port = publisher.fcall(channel, "two")
            assert port == dst and publisher.asks > 0, "the publication did not go to the target"
            own = RespConn(src)
            try:
                assert own.command("CLIENT", "KILL", "TYPE", "pubsub") >= 1
            finally:
                own.close()
            assert arrived.wait(15 * SLOW), f"the gap read never delivered 'two': {got!r}"

        try:
            await asyncio.to_thread(cluster.migrate_slot, slot, dst, None, while_keys_moved)
        finally:
            publisher.close()
        await asyncio.wait_for(collector, 5 * SLOW)
        await conn.close()

    run(main(), 90)
    assert got == ["two"], got
    assert re.search(r"cluster_command_redirected command=\"FCALL sidecar_read\" .*reply=\"ASK ",
                     sc.log()), "the read was not redirected with ASK"


def test_inbound_messages_follow_their_stream_across_a_slot_move(cluster, cluster_sidecars):
    """A client keeps sending while the slot of its org's inbound stream moves. The sidecar's
    XADDs follow the cluster: at the source while the slot is MIGRATING (the stream is there),
    to the target with ASKING once the stream has moved (Redis answers ASK), and to the target
    after the handover (MOVED). Every message lands in the one stream, once, in the order sent;
    none is lost to a redirect."""
    sc = cluster_sidecars([f"{HOST}:{cluster.nodes[0].port}"], "sharded", {
        "inbound": {"stream": "inbound:{org}"},
        "limits": {"inbound_rate": 10000, "inbound_burst": 10000}})
    wait_clean_ready(sc)
    o = "moving-inbound"
    stream = f"inbound:{o}"
    slot = slot_of(stream)
    src = cluster.master_port_of_slot(slot)
    dst = next(m.port for m in cluster.masters() if m.port != src)

    def forwarded() -> int:
        status, _, body = sc.http("GET", "/metrics")
        m = re.search(r"^sidecar_inbound_forwarded_total (\d+)$", body.decode(), re.M)
        assert status == 200 and m
        return int(m.group(1))

    def forwarded_more(n: int):
        target = forwarded() + n
        wait_until(lambda: forwarded() >= target, 10 * SLOW, f"{n} more XADDs sent", 0.02)

    async def main():
        conn = await connect_ws(sc.ws_url(f"/ws/{o}"))
        stop = asyncio.Event()
        sent = []

        async def send_steadily():
            # Bounded: at most 600 messages, paced like a client typing fast.
            for i in range(600):
                if stop.is_set():
                    return
                await conn.send(json.dumps({"type": "note", "n": i}))
                sent.append(i)
                await asyncio.sleep(0.005)

        sender = asyncio.ensure_future(send_steadily())
        try:
            await asyncio.to_thread(forwarded_more, 10)
            await asyncio.to_thread(cluster.migrate_slot, slot, dst,
                                    lambda: forwarded_more(10), lambda: forwarded_more(10))
            await asyncio.to_thread(forwarded_more, 10)
        finally:
            stop.set()
            await asyncio.wait_for(sender, 10 * SLOW)
        await conn.close()
        return sent

    sent = run(main(), 90)
    node = cluster.node(dst)
    wait_until(lambda: node.command("XLEN", stream) >= len(sent), 10 * SLOW,
               f"{len(sent)} entries in {stream} at its new master", 0.05)
    entries = node.command("XRANGE", stream, "-", "+")
    got = [json.loads(dict(zip(e[1][::2], e[1][1::2]))[b"data"])["n"] for e in entries]
    assert got == sent
    assert node.command("XLEN", stream) == len(sent)
    asks = [l for l in sc.log().splitlines()
            if "cluster_command_redirected" in l and "reply=\"ASK " in l]
    assert asks, "no XADD was answered with ASK: the stream's move was not exercised"
    assert "inbound_append_failed" not in sc.log()


def test_a_seed_that_is_down_at_start_is_skipped(cluster, cluster_sidecars):
    dead = f"{HOST}:{free_port()}"
    sc = cluster_sidecars([dead, f"{HOST}:{cluster.nodes[0].port}"], "sharded")
    wait_clean_ready(sc, 30)
    o = "seedtest"

    async def main():
        conn = await connect_ws(sc.ws_url(f"/ws/{o}"))
        wait_until(lambda: subscribers(cluster, f"org:{o}", True) == 1, 10 * SLOW,
                   "subscribed", 0.02)
        cluster.spublish(f"org:{o}", "hello")
        assert await recv_message(conn, 5) == "hello"
        await conn.close()

    run(main(), 60)


def test_a_node_without_cluster_mode_is_a_clear_error(redis, cluster_sidecars):
    sc = cluster_sidecars([f"{HOST}:{redis.port}"], "global")
    sc.wait_log(r"cluster_topology_failed.*cluster support disabled", 10)
    status, body = ready_status(sc)
    assert status == 503 and "cluster support disabled" in body.get("reason", ""), body


def test_a_one_node_cluster_with_a_password_and_wrong_credentials(cluster_sidecars):
    """A cluster of one master holding every slot (what a small managed cluster can be), with
    `requirepass`: the right password works in both modes; a wrong one is a clear error on
    /ready and in the log, and the sidecar keeps running and retrying."""
    node = ClusterNode().start()
    try:
        node.command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
        wait_until(lambda: node.info("cluster").get("cluster_state") == "ok", 10 * SLOW,
                   "one-node cluster_state:ok", interval=0.05)
        node.command("CONFIG", "SET", "requirepass", "right-pass")

        def cli(*args):
            out = subprocess.run(["redis-cli", "-h", HOST, "-p", str(node.port), "--no-auth-warning",
                                  "-a", "right-pass", *args], capture_output=True, text=True,
                                 timeout=10)
            return out.stdout.strip()

        wrong = cluster_sidecars([f"redis://default:wrong-pass@{HOST}:{node.port}"], "sharded")
        wrong.wait_log(r"WRONGPASS|invalid username-password|AUTH", 10 * SLOW)
        status, body = ready_status(wrong)
        assert status == 503, body
        assert re.search(r"WRONGPASS|AUTH|password", body.get("reason", "")), body
        assert wrong.proc.poll() is None  # still running, still retrying

        for mode, publish in (("sharded", "SPUBLISH"), ("global", "PUBLISH")):
            sc = cluster_sidecars([f"redis://default:right-pass@{HOST}:{node.port}"], mode)
            wait_clean_ready(sc, 20)
            org = f"one{mode}"

            async def main():
                conn = await connect_ws(sc.ws_url(f"/ws/{org}"))
                numsub = "SHARDNUMSUB" if mode == "sharded" else "NUMSUB"
                wait_until(lambda: cli("PUBSUB", numsub, f"org:{org}").splitlines()[-1] == "1",
                           10 * SLOW, f"{mode} subscription", 0.02)
                cli(publish, f"org:{org}", "on one node")
                assert await recv_message(conn, 5) == "on one node"
                await conn.close()

            run(main(), 60)
    finally:
        node.stop()
