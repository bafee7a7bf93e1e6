"""A rolling deploy loses nothing (issue 11): two sidecars on one Redis, a publisher at a steady few
hundred messages per second through FCALL, 100 ``sidecar.v1`` clients on sidecar A (half of them
Node ``ws`` in one process, half Python ``websockets``); SIGTERM A; each client reconnects to B
with its position (``recover``) after the delay A's ``server_shutdown`` asked for, and ends with
every message exactly once, in order, in one epoch, without being told to resync.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness import SLOW, connect_ws, run, wait_until
from test_history_resume import V1, PacedPublisher, compress, history_yaml, metric, metrics, \
    recover_query, wait_library
from test_node_client import NodeClient

NODE_DIR = Path(__file__).resolve().parent / "node"
CLIENTS_NODE = 50
CLIENTS_PY = 50
COUNT = 1200          # messages published in all
INTERVAL = 0.004      # 250 messages per second: the stream lasts about 5 s
SIGTERM_AT = 400      # A gets SIGTERM once this many are published


@pytest.fixture(scope="module")
def history_clients_js():
    node = shutil.which("node")
    assert node, "node is not installed: run scripts/bootstrap.sh"
    if not (NODE_DIR / "node_modules" / "ws").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True,
                       timeout=300)
    return str(NODE_DIR / "history_clients.js")


class PyDeployClient:
    """The Python twin of history_clients.js: records envelopes of org:acme, follows
    server_shutdown's hint to ``next_url`` with ``recover``, stops at ``until``."""

    def __init__(self, index: int, url: str, next_url: str, until: int):
        self.index, self.url, self.next_url, self.until = index, url, next_url, until
        self.offsets, self.ns, self.epochs = [], [], []
        self.resyncs, self.welcomes, self.closes, self.errors = [], [], [], []
        self.shutdowns = 0
        self.connects = 0
        self.done = False
        self.position = None
        self.welcomed = asyncio.Event()

    async def run(self, deadline: float):
        url = self.url
        while not self.done and self.connects < 20 and time.monotonic() < deadline:
            hint = 0.1
            self.connects += 1
            query = recover_query([("org:acme", *self.position)]) if self.position else ""
            try:
                conn = await connect_ws(url + query, subprotocols=[V1])
            except Exception as e:  # e.g. refused (503) by A while it drains
                self.errors.append(repr(e))
                await asyncio.sleep(hint)  # retry pacing, bounded by the connect count
                url = self.next_url
                continue
            self.on(conn.welcome)
            self.welcomed.set()
            try:
                while not self.done:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    msg = await asyncio.wait_for(conn.recv(), remaining)
                    m = self.on(json.loads(msg))
                    if m.get("type") == "server_shutdown":
                        hint = m.get("reconnect_after_ms", 100) / 1000.0
            except Exception as e:  # closed by the server (1001), or the deadline
                rcvd = getattr(conn, "close_rcvd", None)
                self.closes.append(rcvd.code if rcvd is not None else repr(e))
            if self.done:
                await conn.close()
                return
            url = self.next_url
            await asyncio.sleep(hint)  # the server's reconnect hint, as a real client does

    def on(self, m: dict) -> dict:
        t = m.get("type")
        if t == "connected":
            st = (m.get("channels") or {}).get("org:acme")
            self.welcomes.append(st)
            if self.position is None and st:
                self.position = (st["epoch"], st["offset"])
        elif t == "message" and m.get("channel") == "org:acme":
            self.offsets.append(m.get("offset"))
            self.ns.append((m.get("data") or {}).get("n"))
            if m.get("epoch") not in self.epochs:
                self.epochs.append(m.get("epoch"))
            self.position = (m.get("epoch"), m.get("offset"))
            if m.get("offset") == self.until:
                self.done = True
        elif t == "resync":
            self.resyncs.append(m)
        elif t == "server_shutdown":
            self.shutdowns += 1
        return m

    def result(self) -> dict:
        return {"client": f"py{self.index}", "done": self.done, "offsets": self.offsets,
                "ns": self.ns, "epochs": self.epochs, "resyncs": self.resyncs,
                "welcomes": self.welcomes, "shutdowns": self.shutdowns, "closes": self.closes,
                "connects": self.connects, "errors": self.errors}


def judge(r: dict, count: int) -> list[str]:
    """What is wrong with one client's account of the deploy; empty when nothing is."""
    problems = []
    if not r["done"]:
        problems.append("did not reach the last message")
    if r["offsets"] != list(range(1, count + 1)):
        problems.append(f"offsets {compress(r['offsets'])}")
    if r["ns"] != r["offsets"]:
        problems.append("payloads do not match their offsets")
    if len(r["epochs"]) != 1:
        problems.append(f"epochs {r['epochs']}")
    if r["resyncs"]:
        problems.append(f"resyncs {r['resyncs']}")
    if r["shutdowns"] != 1:
        problems.append(f"{r['shutdowns']} server_shutdown messages")
    if len(r["welcomes"]) != 2 or not r["welcomes"][1] or r["welcomes"][1].get("recovered") \
            is not True:
        problems.append(f"welcomes {r['welcomes']} (want a second one, recovered)")
    return problems


def test_rolling_deploy_loses_nothing(sidecar_factory, redis, history_clients_js):
    cfg = history_yaml(size=2000, max_recover=1000, extra={
        "shutdown": {"drain_timeout_ms": 3000, "reconnect_after_ms": 50,
                     "reconnect_jitter_ms": 300}})
    a = sidecar_factory(extra_yaml=cfg)
    b = sidecar_factory(extra_yaml=cfg)
    wait_library(redis.port)
    url_a, url_b = a.ws_url("/ws/acme"), b.ws_url("/ws/acme")

    node = NodeClient(history_clients_js, url_a, "--next-url", url_b, "--clients",
                      str(CLIENTS_NODE), "--until", str(COUNT), "--timeout-ms",
                      str(int(60000 * SLOW)))
    try:
        async def main():
            deadline = time.monotonic() + 60 * SLOW
            py = [PyDeployClient(i, url_a, url_b, COUNT) for i in range(CLIENTS_PY)]
            tasks = [asyncio.create_task(c.run(deadline)) for c in py]
            for c in py:
                await asyncio.wait_for(c.welcomed.wait(), 10 * SLOW)
            ready = await asyncio.to_thread(node.event, 20)
            assert ready == {"event": "ready"}, ready
            await asyncio.to_thread(wait_until, lambda: redis.numsub("org:acme") >= 1, 10 * SLOW,
                                    "A subscribed to org:acme")
            stream = PacedPublisher(redis.port, "org:acme", COUNT, INTERVAL)
            stream.start()
            await asyncio.to_thread(wait_until, lambda: stream.published >= SIGTERM_AT,
                                    10 * SLOW, f"{SIGTERM_AT} published")
            a.send_signal(signal.SIGTERM)
            await asyncio.to_thread(stream.finish, 30)
            assert await asyncio.to_thread(a.wait_exit, 20) == 0
            await asyncio.wait_for(asyncio.gather(*tasks), 60 * SLOW)
            return [c.result() for c in py]

        py_results = run(main(), 120 * SLOW)
        node_results = []
        while len(node_results) < CLIENTS_NODE:
            ev = node.event(30)
            assert ev["event"] == "result", ev
            node_results.append({**ev, "client": f"node{ev['client']}"})
    finally:
        node.close()

    bad = {r["client"]: judge(r, COUNT) for r in py_results + node_results}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"{len(bad)} of {CLIENTS_NODE + CLIENTS_PY} clients: " + \
        "; ".join(f"{k}: {v}" for k, v in list(bad.items())[:8])
    epochs = {r["epochs"][0] for r in py_results + node_results}
    assert len(epochs) == 1, epochs
    mb = metrics(b)
    assert metric(mb, "sidecar_resumes_total", result="recovered") == CLIENTS_NODE + CLIENTS_PY
    assert metric(mb, "sidecar_resyncs_sent_total") == 0
