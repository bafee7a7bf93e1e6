"""Drives client/sidecar-client.js from the integration tests: ``ClientDriver`` runs
node/client_driver.mjs (N SidecarClients in one Node process, `ws` as their socket) and reads the
JSON lines it prints. Shared by test_client_node.py and test_client_history.py."""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import subprocess
import time
from pathlib import Path

from harness import REPO_ROOT, SLOW

NODE_DIR = Path(__file__).resolve().parent / "node"
DRIVER = NODE_DIR / "client_driver.mjs"
CLIENT_DIR = REPO_ROOT / "client"


def ensure_node_modules():
    """node and the `ws` package, installed by npm ci when missing (as test_node_client.py does)."""
    assert shutil.which("node"), "node is not installed: run scripts/bootstrap.sh"
    if not (NODE_DIR / "node_modules" / "ws").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True,
                       timeout=300, env={**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"})


def cmake_version() -> str:
    """The sidecar's version: ``project(sidecar VERSION x.y.z)`` in CMakeLists.txt."""
    text = (REPO_ROOT / "CMakeLists.txt").read_text()
    m = re.search(r"project\(\s*sidecar\s+VERSION\s+([0-9][0-9A-Za-z.\-]*)", text)
    assert m, "no project(sidecar VERSION ...) in CMakeLists.txt"
    return m.group(1)


class ClientDriver:
    """One client_driver.mjs process. Every event it printed is kept in ``events``, in order;
    ``wait(pred)`` reads until an event satisfies ``pred`` and returns it."""

    def __init__(self, config: dict):
        ensure_node_modules()
        self.proc = subprocess.Popen(["node", str(DRIVER), json.dumps(config)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)
        self.buf = b""
        self.events: list[dict] = []
        self._consumed: set[int] = set()  # indices of events wait() has returned
        ready = self.wait(lambda e: e["event"] == "ready", 15)
        self.version = ready["version"]

    def _read_one(self, deadline: float) -> dict:
        while b"\n" not in self.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no event from client_driver.mjs in time; last events: "
                                   f"{self.events[-8:]}")
            if self.sel.select(remaining):
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    err = self.proc.stderr.read().decode(errors="replace")
                    raise EOFError(f"client_driver.mjs ended: {err}; last events "
                                   f"{self.events[-8:]}")
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        ev = json.loads(line)
        self.events.append(ev)
        return ev

    def wait(self, pred, timeout: float = 10.0, what: str = "event") -> dict:
        """The earliest event not yet returned by wait() that satisfies ``pred``, reading more
        until one does; it is then consumed. Events that did not match stay available, so
        clients can be waited for in any order. Raises TimeoutError naming ``what``."""
        deadline = time.monotonic() + timeout * SLOW
        scanned = 0
        while True:
            for idx in range(scanned, len(self.events)):
                if idx not in self._consumed and pred(self.events[idx]):
                    self._consumed.add(idx)
                    return self.events[idx]
            scanned = len(self.events)
            try:
                self._read_one(deadline)
            except TimeoutError as e:
                raise TimeoutError(f"waiting for {what}: {e}") from None

    def wait_state(self, state: str, i: int = 0, timeout: float = 10.0, **match) -> dict:
        def pred(e):
            return (e["event"] == "state" and e["i"] == i and e["state"] == state
                    and all(e.get(k) == v for k, v in match.items()))
        return self.wait(pred, timeout, f"client {i} state {state} {match}")

    def wait_message(self, i: int = 0, timeout: float = 10.0) -> dict:
        return self.wait(lambda e: e["event"] == "message" and e["i"] == i, timeout,
                         f"a message on client {i}")

    def drain(self):
        """Reads whatever the driver has printed so far without waiting."""
        while b"\n" in self.buf or self.sel.select(0):
            if b"\n" not in self.buf:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    return
                self.buf += chunk
                continue
            line, self.buf = self.buf.split(b"\n", 1)
            self.events.append(json.loads(line))

    def of(self, kind: str, i: int | None = None, **match) -> list[dict]:
        return [e for e in self.events if e["event"] == kind and (i is None or e.get("i") == i)
                and all(e.get(k) == v for k, v in match.items())]

    def command(self, **cmd):
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def send(self, msg, i: int = 0) -> dict:
        """Has client ``i`` send ``msg``; returns the driver's "sent" (or "send_error") report."""
        self.command(cmd="send", i=i, msg=msg)
        return self.wait(lambda e: e["event"] in ("sent", "send_error") and e["i"] == i, 10,
                         "a send report")

    def close(self):
        if self.proc.poll() is None:
            try:
                self.command(cmd="close")
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(10)
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.proc.stderr.close()
        self.sel.close()
