"""The sidecar as seen by Node's `ws`, the client most browser-side tooling is tested with: it
connects, gets the welcome, receives published payloads byte-exact (text and binary), and sees
the close codes the server sends."""

from __future__ import annotations

import base64
import json
import os
import selectors
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness import SLOW, wait_until

NODE_DIR = Path(__file__).resolve().parent / "node"


@pytest.fixture(scope="module")
def node_client():
    """The path of ws_client.js, with its npm dependencies installed (npm ci when missing)."""
    node = shutil.which("node")
    assert node, "node is not installed: run scripts/bootstrap.sh"
    if not (NODE_DIR / "node_modules" / "ws").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True,
                       timeout=300)
    return str(NODE_DIR / "ws_client.js")


class NodeClient:
    """One ws_client.js process; ``event()`` returns its next JSON event line."""

    def __init__(self, script: str, url: str, *args: str):
        self.proc = subprocess.Popen(["node", script, url, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)
        self.buf = b""

    def event(self, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout * SLOW
        while b"\n" not in self.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no event from the node client; buffered {self.buf!r}")
            if self.sel.select(remaining):
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise EOFError(f"node client ended: {self.proc.stderr.read()!r}")
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def message(self, timeout: float = 10.0):
        """The next message event as (binary, data bytes)."""
        ev = self.event(timeout)
        assert ev["event"] == "message", ev
        return ev["binary"], base64.b64decode(ev["data_b64"])

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.proc.stdout.close()
        self.proc.stderr.close()
        self.sel.close()


def test_node_ws_receives_welcome_and_byte_exact_payloads(sidecar, redis, node_client):
    text = '{"type":"SYNC_SUCCESS","pfaId":"pfa-123","name":"Zoë ✓ 𝄞"}'.encode()
    binary = b"\xff\x00\x80" + bytes(range(256)) * 300
    c = NodeClient(node_client, sidecar.ws_url("/ws/acme"), "--count", "3")
    try:
        assert c.event() == {"event": "open"}
        is_bin, data = c.message()
        welcome = json.loads(data)
        assert not is_bin and welcome["type"] == "connected" and welcome["org"] == "acme"

        wait_until(lambda: redis.numsub("org:acme") >= 1, 10, "SUBSCRIBE org:acme")
        assert redis.publish("org:acme", text) == 1
        assert c.message() == (False, text)
        assert redis.publish("org:acme", binary) == 1
        assert c.message() == (True, binary)

        # The client closes with 1000 after three messages; the server echoes it.
        ev = c.event()
        assert ev["event"] == "close" and ev["code"] == 1000, ev
        assert c.proc.wait(10 * SLOW) == 0
    finally:
        c.close()


def test_node_ws_sees_1001_when_the_sidecar_shuts_down(sidecar, node_client):
    c = NodeClient(node_client, sidecar.ws_url("/ws/acme"))
    try:
        assert c.event() == {"event": "open"}
        assert json.loads(c.message()[1])["type"] == "connected"
        sidecar.send_signal(signal.SIGTERM)
        while True:
            ev = c.event(20)
            if ev["event"] == "close":
                break
            assert ev["event"] == "message", ev  # e.g. server_shutdown
        assert ev["code"] == 1001, ev
        assert sidecar.wait_exit(20) == 0
    finally:
        c.close()


def test_node_ws_sees_1009_after_sending_an_oversized_message(sidecar, node_client):
    big = '"' + "x" * 70000 + '"'
    c = NodeClient(node_client, sidecar.ws_url("/ws/acme"), "--send", big)
    try:
        assert c.event() == {"event": "open"}
        while True:
            ev = c.event(20)
            if ev["event"] == "close":
                break
            assert ev["event"] == "message", ev
        assert ev["code"] == 1009, ev
    finally:
        c.close()
