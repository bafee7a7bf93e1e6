#!/usr/bin/env python3
"""Where a publication travels in a Redis Cluster, global vs sharded pub/sub (issue 13).

Starts a real cluster on loopback (3 masters, 1 replica each, Debian's redis-server), and for
each mode --sidecars sidecars, each with a client in every one of --orgs orgs whose channels
fall on every shard. It resets every node's stats, publishes --publications messages round-robin
over the orgs, pipelined in batches of 50 (global: PUBLISH on a master chosen round-robin, as a
backend talking to any node would; sharded: SPUBLISH on the channel's master), waits until every
client has every message of its org, and then reads from every node:

- CLUSTER INFO: cluster_stats_messages_publish_sent and publishshard_sent (messages the node
  sent over the cluster bus to carry pub/sub), and the bus's total messages sent;
- INFO stats: total_net_input_bytes / total_net_output_bytes (client connections);
- INFO commandstats: calls of PUBLISH and SPUBLISH.

    test/bench/cluster_traffic.py [--sidecar build/sidecar] [--sidecars 2] [--publications 3000]
                                  [--orgs 24] [--payload-bytes 200] [--json]

Every wait is bounded; every process it starts is stopped at the end, by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "test" / "integration"))

from cluster_util import ClusterSidecar, RedisCluster, slot_of  # noqa: E402
from harness import HOST, RespConn, connect_ws, resp_encode, wait_until  # noqa: E402


def node_stats(node) -> dict:
    cluster = node.info("cluster")
    stats = node.info("stats")
    cpu = node.info("cpu")
    cmds = node.info("commandstats")

    def calls(name):
        v = cmds.get(f"cmdstat_{name}", "")
        for part in v.split(","):
            if part.startswith("calls="):
                return int(part[6:])
        return 0

    return {
        "port": node.port,
        "role": node.info("replication").get("role", "?"),
        "bus_publish_sent": int(cluster.get("cluster_stats_messages_publish_sent", 0)),
        "bus_publishshard_sent": int(cluster.get("cluster_stats_messages_publishshard_sent", 0)),
        "bus_sent": int(cluster.get("cluster_stats_messages_sent", 0)),
        "net_in": int(stats.get("total_net_input_bytes", 0)),
        "net_out": int(stats.get("total_net_output_bytes", 0)),
        "cpu_s": float(cpu.get("used_cpu_user", 0)) + float(cpu.get("used_cpu_sys", 0)),
        "publish_calls": calls("publish"),
        "spublish_calls": calls("spublish"),
    }


def bus_bytes(cluster) -> int:
    """Bytes sent so far on the cluster bus, both directions, from the kernel's count (ss): every
    bus connection has one end on a node's bus port and the other dialled to one, and the two
    ends' bytes_sent add up to what crossed it."""
    ports = [n.bus_port for n in cluster.nodes]
    expr = " or ".join(f"sport = :{p} or dport = :{p}" for p in ports)
    out = subprocess.run(["ss", "-tinH", "state", "established", f"( {expr} )"],
                         capture_output=True, text=True, check=True, timeout=10).stdout
    return sum(int(m) for m in re.findall(r"bytes_sent:(\d+)", out))


def orgs_over_every_shard(cluster, n):
    orgs = [f"t{i}" for i in range(n)]
    owners = {cluster.master_port_of_slot(slot_of(f"org:{o}")) for o in orgs}
    assert owners == {m.port for m in cluster.masters()}, "orgs must cover every shard"
    return orgs


def measure(cluster, mode: str, sidecars: int, orgs: list, publications: int,
            payload: bytes) -> dict:
    # Each sidecar's global subscriber starts at a different seed, as sidecars spread over a
    # cluster would.
    made = []
    try:
        for i in range(sidecars):
            sc = ClusterSidecar([f"{HOST}:{cluster.nodes[i % len(cluster.nodes)].port}"], mode,
                                extra_yaml={"log": {"level": "info"}})
            made.append(sc)
            sc.start()
        for sc in made:
            wait_until(lambda: sc.ready()[0] == 200, 30, f"sidecar ready ({mode})", 0.05)
        return asyncio.run(_measure(cluster, made, mode, orgs, publications, payload))
    finally:
        for sc in made:
            sc.stop()
            sc.cleanup()


async def _measure(cluster, sidecars, mode, orgs, publications, payload) -> dict:
    conns = [(o, await connect_ws(sc.ws_url(f"/ws/{o}"))) for sc in sidecars for o in orgs]
    sharded = mode == "sharded"

    def subscribed():
        for o in orgs:
            ch = f"org:{o}"
            if sharded:
                n = int(cluster.command_for(ch, "PUBSUB", "SHARDNUMSUB", ch)[1])
            else:
                n = sum(int(x.command("PUBSUB", "NUMSUB", ch)[1]) for x in cluster.alive())
            if n != len(sidecars):
                return False
        return True

    await asyncio.to_thread(wait_until, subscribed, 30, "every room subscribed", 0.05)
    # RESETSTAT clears INFO stats and commandstats; the cluster bus counters only grow, so
    # those are taken as differences.
    for n in cluster.alive():
        n.command("CONFIG", "RESETSTAT")
    before = {n.port: node_stats(n) for n in cluster.alive()}
    bus_before = bus_bytes(cluster)
    masters = cluster.masters()
    owner = {o: cluster.master_port_of_slot(slot_of(f"org:{o}")) for o in orgs}
    pubs = {m.port: RespConn(m.port) for m in masters}
    want = {o: 0 for o in orgs}
    got = [0] * len(conns)

    async def drain(i, o, conn):
        while got[i] < want[o]:
            await asyncio.wait_for(conn.recv(), 30)
            got[i] += 1

    started = time.monotonic()
    batch: dict[int, list] = {p: [] for p in pubs}

    def flush(port):
        if batch[port]:
            pubs[port].sock.sendall(b"".join(batch[port]))
            for _ in batch[port]:
                pubs[port].read_reply()
            batch[port] = []

    for i in range(publications):
        o = orgs[i % len(orgs)]
        ch = f"org:{o}"
        port = owner[o] if sharded else masters[i % len(masters)].port
        batch[port].append(resp_encode("SPUBLISH" if sharded else "PUBLISH", ch, payload))
        want[o] += 1
        if len(batch[port]) >= 50:
            flush(port)
    for port in pubs:
        flush(port)
    # Redis's CPU is read as soon as every publication is answered (it has written them to the
    # sidecars by then): the clients' draining takes longer and would add Redis's idle ticks.
    cpu_after = {n.port: node_stats(n)["cpu_s"] for n in cluster.alive()}
    publish_s = time.monotonic() - started
    await asyncio.wait_for(
        asyncio.gather(*(drain(i, o, c) for i, (o, c) in enumerate(conns))), 120)
    elapsed = time.monotonic() - started
    for c in pubs.values():
        c.close()
    bus = bus_bytes(cluster) - bus_before
    nodes = []
    for n in cluster.alive():
        after = node_stats(n)
        after["cpu_s"] = cpu_after[n.port]
        for k in ("bus_publish_sent", "bus_publishshard_sent", "bus_sent", "cpu_s"):
            after[k] -= before[n.port][k]
        nodes.append(after)
    for _, c in conns:
        await c.close()
    return {"mode": mode, "publications": publications, "payload_bytes": len(payload),
            "sidecars": len(sidecars), "orgs": len(orgs), "seconds": round(elapsed, 2),
            "publish_seconds": round(publish_s, 2),
            "delivered": sum(got),
            "bus_bytes": bus, "nodes": nodes}


def totals(r: dict) -> dict:
    keys = ("bus_publish_sent", "bus_publishshard_sent", "bus_sent", "net_in", "net_out", "cpu_s")
    return {k: sum(n[k] for n in r["nodes"]) for k in keys}


def print_report(results: list):
    for r in results:
        print(f"\n{r['mode']}: {r['publications']} publications of {r['payload_bytes']} B over "
              f"{r['orgs']} orgs, {r['sidecars']} sidecars, published in {r['publish_seconds']} s, "
              f"{r['delivered']} delivered in {r['seconds']} s")
        print(f"  {'node':>7} {'role':>7} {'bus publish':>12} {'bus pubshard':>13} "
              f"{'bus msgs':>9} {'net in B':>10} {'net out B':>10} {'PUBLISH':>8} {'SPUBLISH':>9} "
              f"{'CPU s':>6}")
        for n in r["nodes"]:
            print(f"  {n['port']:>7} {n['role']:>7} {n['bus_publish_sent']:>12} "
                  f"{n['bus_publishshard_sent']:>13} {n['bus_sent']:>9} {n['net_in']:>10} "
                  f"{n['net_out']:>10} {n['publish_calls']:>8} {n['spublish_calls']:>9} "
                  f"{n['cpu_s']:>6.2f}")
        t = totals(r)
        print(f"  {'total':>15} {t['bus_publish_sent']:>12} {t['bus_publishshard_sent']:>13} "
              f"{t['bus_sent']:>9} {t['net_in']:>10} {t['net_out']:>10} {'':>8} {'':>9} "
              f"{t['cpu_s']:>6.2f}")
        print(f"  Redis CPU per publication, all nodes, while publishing: "
              f"{t['cpu_s'] / r['publications'] * 1e6:.1f} us")
        print(f"  cluster bus bytes (ss, both directions): {r['bus_bytes']} "
              f"({r['bus_bytes'] / r['publications']:.0f} per publication); the busiest node "
              f"sent {max(n['net_out'] for n in r['nodes'])} B to clients")
    if len(results) == 2:
        g, s = (totals(r) for r in results)
        pubs = results[0]["publications"]
        gb = g["bus_publish_sent"] + g["bus_publishshard_sent"]
        sb = s["bus_publish_sent"] + s["bus_publishshard_sent"]
        print(f"\ncluster-bus pub/sub messages per publication: global {gb / pubs:.2f}, "
              f"sharded {sb / pubs:.2f} (sharded/global {sb / max(gb, 1):.2f}); all bus "
              f"messages sharded/global {s['bus_sent'] / max(g['bus_sent'], 1):.2f}; cluster-bus "
              f"bytes sharded/global {results[1]['bus_bytes'] / max(results[0]['bus_bytes'], 1):.2f}; "
              f"Redis CPU sharded/global {s['cpu_s'] / max(g['cpu_s'], 1e-9):.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sidecar", default=os.environ.get("SIDECAR_BIN", str(ROOT / "build/sidecar")))
    ap.add_argument("--sidecars", type=int, default=2)
    ap.add_argument("--publications", type=int, default=3000)
    ap.add_argument("--orgs", type=int, default=24)
    ap.add_argument("--payload-bytes", type=int, default=200)
    ap.add_argument("--json", action="store_true", help="print the results as JSON lines too")
    a = ap.parse_args()
    os.environ["SIDECAR_BIN"] = a.sidecar
    payload = (b'{"type":"EVENT","pad":"' + b"x" * max(0, a.payload_bytes - 26) + b'"}')
    cluster = RedisCluster(masters=3, replicas=1).start()
    try:
        orgs = orgs_over_every_shard(cluster, a.orgs)
        results = [measure(cluster, m, a.sidecars, orgs, a.publications, payload)
                   for m in ("global", "sharded")]
    finally:
        cluster.stop()
    print(f"cluster_traffic: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, 3 masters + "
          f"3 replicas on loopback, load average {os.getloadavg()[0]:.2f}")
    print_report(results)
    if a.json:
        for r in results:
            print(json.dumps(r))


if __name__ == "__main__":
    main()
