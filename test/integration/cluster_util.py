"""A real Redis Cluster on loopback for the cluster tests, and sidecars configured for it.

``RedisCluster(masters=3, replicas=1).start()`` starts ``masters * (1 + replicas)``
redis-servers with ``--cluster-enabled yes`` on free loopback ports (each in its own temp dir
with its own ``--cluster-config-file``), joins them with ``redis-cli --cluster create ...
--cluster-replicas N --cluster-yes`` and waits, bounded, until every node says
``cluster_state:ok`` and agrees on who serves every slot. Nothing here sleeps a fixed time.

- ``nodes``: every node (``RedisServer``-like: ``port``, ``command()``, ``kill()``, ``stop()``)
- ``master_of_slot(slot)``, ``slot_of(key)``, ``masters()``, ``replicas()``
- ``publish(channel, payload)`` / ``spublish`` / ``fcall`` on the node that owns the channel,
  following MOVED as ``redis-cli -c`` would
- ``ClusterPublisher``: a publisher with connections of its own (for a thread), following MOVED,
  ASK (with ASKING) and TRYAGAIN as cluster clients do
- ``ClusterSidecar``: a ``Sidecar`` whose config names ``redis.cluster`` instead of ``redis.url``
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time

from harness import HOST, RedisServer, RespConn, RespError, Sidecar, free_port, wait_until, _merge


def crc16(data: bytes) -> int:
    """CRC16-XMODEM, as Redis Cluster hashes keys."""
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def slot_of(key: str | bytes) -> int:
    k = key.encode() if isinstance(key, str) else key
    s = k.find(b"{")
    if s != -1:
        e = k.find(b"}", s + 1)
        if e != -1 and e != s + 1:
            k = k[s + 1:e]
    return crc16(k) % 16384


def cluster_client_port() -> int:
    """A free port that Redis Cluster accepts for clients (at most 55535: by default the bus port
    is the client port + 10000; we give the bus its own port anyway)."""
    while True:
        port = free_port()
        if port <= 55535:
            return port


class ClusterNode(RedisServer):
    """One cluster-enabled redis-server (a RedisServer started with cluster flags). The cluster
    bus gets its own free port, and the node timeout is 1 s so that failover takes seconds."""

    def __init__(self):
        super().__init__(cluster_client_port())
        self.bus_port = free_port()

    def start(self, timeout: float = 10.0) -> "ClusterNode":
        """Starts the node; a port taken between free_port() and redis-server's bind (another
        test, or an outgoing connection given it as its local port) means two new ports."""
        for attempt in range(5):
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", "",
                 "--appendonly", "no", "--dir", self.dir, "--cluster-enabled", "yes",
                 "--cluster-port", str(self.bus_port),
                 "--cluster-config-file", os.path.join(self.dir, "nodes.conf"),
                 "--cluster-node-timeout", "1000", "--repl-diskless-sync-delay", "0",
                 "--cluster-replica-validity-factor", "0",
                 "--logfile", os.path.join(self.dir, "redis.log")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_until(self._ready, timeout, f"cluster node on port {self.port}")
                return self
            except RuntimeError as e:
                if "Address already in use" not in str(e) or attempt == 4:
                    raise
                self.port, self.bus_port = cluster_client_port(), free_port()
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(self.dir, "redis.log"))
        return self

    def info(self, section: str) -> dict:
        text = self.command("CLUSTER", "INFO") if section == "cluster" else \
            self.command("INFO", section)
        out = {}
        for line in text.decode().splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                out[k] = v
        return out


class RedisCluster:
    def __init__(self, masters: int = 3, replicas: int = 1):
        self.n_masters = masters
        self.n_replicas = replicas
        self.nodes = [ClusterNode() for _ in range(masters * (1 + replicas))]

    def start(self, timeout: float = 30.0) -> "RedisCluster":
        """Starts every node and joins them; if any step fails, the nodes already started are
        stopped before the error goes up (a fixture that raises never reaches its teardown)."""
        try:
            for n in self.nodes:
                n.start()
            addrs = [f"{HOST}:{n.port}" for n in self.nodes]
            subprocess.run(["redis-cli", "--cluster", "create", *addrs, "--cluster-replicas",
                            str(self.n_replicas), "--cluster-yes"], check=True,
                           capture_output=True, timeout=timeout)
            self.wait_ok(timeout)
            wait_until(self._replicas_synced, timeout, "every replica synced with its master",
                       interval=0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def _replicas_synced(self) -> bool:
        for n in self.alive():
            info = n.info("replication")
            if info.get("role") == "slave" and info.get("master_link_status") != "up":
                return False
        return True

    def wait_failover(self, port: int, timeout: float = 30.0):
        """Waits until the live nodes agree that ``port`` serves no slot (its replica was
        promoted) and the cluster is ok again."""
        def moved():
            return all(p != port for _, _, p in self._slot_owners(self.alive()[0]))
        wait_until(moved, timeout, f"a replica promoted in place of {port}", interval=0.05)
        self.wait_ok(timeout, f"cluster_state:ok after {port} failed over")

    def alive(self):
        return [n for n in self.nodes if n.proc and n.proc.poll() is None]

    def wait_ok(self, timeout: float = 30.0, what: str = "cluster_state:ok on every node"):
        def ok():
            views = set()
            for n in self.alive():
                try:
                    if n.info("cluster").get("cluster_state") != "ok":
                        return False
                    views.add(json.dumps(self._slot_owners(n)))
                except (OSError, RespError, ConnectionError):
                    return False
            return len(views) == 1
        wait_until(ok, timeout, what, interval=0.05)

    @staticmethod
    def _slot_owners(node) -> list:
        out = []
        for r in node.command("CLUSTER", "SLOTS"):
            out.append([int(r[0]), int(r[1]), int(r[2][1])])
        return sorted(out)

    def slot_table(self) -> list:
        """[(start, end, master_port)] as the first live node sees it."""
        return self._slot_owners(self.alive()[0])

    def master_port_of_slot(self, slot: int) -> int:
        for lo, hi, port in self.slot_table():
            if lo <= slot <= hi:
                return port
        raise KeyError(slot)

    def node(self, port: int) -> ClusterNode:
        return next(n for n in self.nodes if n.port == port)

    def masters(self) -> list:
        ports = {p for _, _, p in self.slot_table()}
        return [n for n in self.alive() if n.port in ports]

    def command_for(self, key: str, *args, attempts: int = 10):
        """Runs a command on the master of ``key``'s slot, following MOVED like redis-cli -c."""
        port = self.master_port_of_slot(slot_of(key))
        for _ in range(attempts):
            try:
                return self.node(port).command(*args)
            except RespError as e:
                msg = str(e)
                if msg.startswith("MOVED ") or msg.startswith("ASK "):
                    port = int(msg.split()[2].rsplit(":", 1)[1])
                    continue
                if msg.startswith("TRYAGAIN") or msg.startswith("CLUSTERDOWN"):
                    time.sleep(0.05)
                    continue
                raise
        raise RuntimeError(f"no node took {args!r}")

    def node_id(self, port: int) -> str:
        return self.node(port).command("CLUSTER", "MYID").decode()

    def migrate_slot(self, slot: int, to_port: int, while_migrating=None, after_keys_moved=None):
        """Moves ``slot`` and its keys to the master on ``to_port`` the way redis-cli --cluster
        reshard does: IMPORTING/MIGRATING, MIGRATE of every key, then SETSLOT NODE on every
        master (the source last but one, so that it ends its sharded subscriptions). The two
        callbacks, when given, run once the slot is MIGRATING (keys still on the source) and
        once its keys are on the target (the slot not handed over yet)."""
        src = self.node(self.master_port_of_slot(slot))
        dst = self.node(to_port)
        src_id, dst_id = self.node_id(src.port), self.node_id(dst.port)
        dst.command("CLUSTER", "SETSLOT", str(slot), "IMPORTING", src_id)
        src.command("CLUSTER", "SETSLOT", str(slot), "MIGRATING", dst_id)
        if while_migrating:
            while_migrating()
        while True:
            keys = src.command("CLUSTER", "GETKEYSINSLOT", str(slot), "100")
            if not keys:
                break
            src.command("MIGRATE", HOST, str(dst.port), "", "0", "5000", "KEYS", *keys)
        if after_keys_moved:
            after_keys_moved()
        dst.command("CLUSTER", "SETSLOT", str(slot), "NODE", dst_id)
        src.command("CLUSTER", "SETSLOT", str(slot), "NODE", dst_id)
        for m in self.masters():
            if m.port not in (src.port, dst.port):
                m.command("CLUSTER", "SETSLOT", str(slot), "NODE", dst_id)

    def publish(self, channel: str, payload) -> int:
        return self.alive()[0].command("PUBLISH", channel, payload)

    def spublish(self, channel: str, payload) -> int:
        return self.command_for(channel, "SPUBLISH", channel, payload)

    def fcall(self, channel: str, payload):
        return self.command_for(channel, "FCALL", "sidecar_publish", "1", channel, payload)

    def stop(self):
        for n in self.nodes:
            n.stop()


class ClusterPublisher:
    """Publishes with ``FCALL sidecar_publish 2 sidecar:{C}:s sidecar:{C}:m payload`` (the form
    whose keys a Cluster routes while the slot migrates) over connections of its own, so that it
    can run in a thread beside ``RedisCluster``'s (whose node connections it never touches).
    Follows MOVED, ASK (ASKING first, on the target's connection) and TRYAGAIN/CLUSTERDOWN as
    cluster clients do; a node that is gone (killed) makes it read the slot map again from a
    node that answers, until a replica is promoted. Every retry loop is bounded."""

    def __init__(self, cluster: "RedisCluster"):
        self.cluster = cluster
        self.conns: dict[int, RespConn] = {}
        self.owner: dict[int, int] = {}  # slot -> port, from the last CLUSTER SLOTS read
        self.asks = 0
        self.tryagains = 0
        self.reconnects = 0

    def _conn(self, port: int) -> RespConn:
        if port not in self.conns:
            self.conns[port] = RespConn(port, timeout=2.0)
        return self.conns[port]

    def _drop(self, port: int):
        c = self.conns.pop(port, None)
        if c is not None:
            c.close()

    def _read_slots(self) -> bool:
        for n in self.cluster.nodes:
            try:
                table = self._conn(n.port).command("CLUSTER", "SLOTS")
            except (OSError, ConnectionError, RespError):
                self._drop(n.port)
                continue
            self.owner = {}
            for r in table:
                for slot in range(int(r[0]), int(r[1]) + 1):
                    self.owner[slot] = int(r[2][1])
            return True
        return False

    def fcall(self, channel: str, payload, attempts: int = 600):
        """The position the FCALL returned, and the port of the node that ran it."""
        keys = (f"sidecar:{{{channel}}}:s", f"sidecar:{{{channel}}}:m")
        args = ("FCALL", "sidecar_publish", "2", *keys, payload)
        slot = slot_of(channel)
        if slot not in self.owner:
            self._read_slots()
        port, asking = self.owner.get(slot), False
        for _ in range(attempts):
            try:
                if port is None:
                    raise ConnectionError("no owner known")
                conn = self._conn(port)
                if asking:
                    conn.command("ASKING")
                return conn.command(*args), port
            except RespError as e:
                msg = str(e)
                asking = msg.startswith("ASK ")
                if msg.startswith("MOVED ") or asking:
                    self.asks += asking
                    port = int(msg.split()[2].rsplit(":", 1)[1])
                    if not asking:
                        self.owner[slot] = port
                    continue
                if msg.startswith("TRYAGAIN") or msg.startswith("CLUSTERDOWN"):
                    self.tryagains += 1
                    time.sleep(0.01)  # the keys are between nodes, or a failover is under way
                    continue
                raise
            except (OSError, ConnectionError):
                # The node is gone: ask the others who owns the slot now (the dead one, until a
                # replica is promoted).
                self.reconnects += 1
                if port is not None:
                    self._drop(port)
                time.sleep(0.05)
                self._read_slots()
                port, asking = self.owner.get(slot), False
        raise RuntimeError(f"no node took a publication on {channel}")

    def close(self):
        for c in self.conns.values():
            c.close()
        self.conns = {}


class ClusterSidecar(Sidecar):
    """A Sidecar configured with ``redis.cluster`` (the seed list) and ``redis.pubsub``."""

    def __init__(self, seeds: list[str], pubsub: str = "global", extra_yaml: dict | None = None,
                 env: dict | None = None):
        super().__init__("", extra_yaml=extra_yaml, env=env)
        self.seeds = seeds
        self.pubsub = pubsub

    def config(self) -> str:
        base = {"listen": f"{HOST}:{self.port}",
                "redis": {"cluster": self.seeds, "pubsub": self.pubsub,
                          "reconnect_initial_ms": 50, "reconnect_max_ms": 500,
                          "ping_interval_ms": 200, "reply_timeout_ms": 2000},
                "log": {"level": "debug"}}
        return json.dumps(_merge(base, self.extra_yaml), indent=2) + "\n"

    def ready(self) -> tuple[int, dict]:
        status, _, body = self.http("GET", "/ready")
        return status, json.loads(body or b"{}")
