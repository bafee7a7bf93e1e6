"""Shared harness for the sidecar integration tests.

Every test starts a private redis-server on a free loopback port and the real sidecar binary
(``SIDECAR_BIN``), then talks to it the way users do: Python ``websockets`` and Node ``ws`` clients,
``redis-cli`` and a raw RESP socket for publishing, raw TCP sockets for byte-level HTTP and
WebSocket checks. Nothing here sleeps for a fixed time: every wait polls a condition against a
deadline and fails with a message that says what it was waiting for.

The API is deliberately small and stable; other test files import it:

- ``free_port()``, ``wait_until(pred, timeout, what)``, ``run(coro, timeout)``
- ``RedisServer``: ``start()``, ``port``, ``url``, ``cli()``, ``command()``, ``publish()``,
  ``publish_many()``, ``pubsub_channels()``, ``numsub()``, ``kill()``, ``restart()``, ``stop()``
- ``Sidecar``: ``start()``, ``port``, ``ws_url()``, ``http()``, ``raw_connect()``,
  ``send_signal()``, ``wait_exit()``, ``log()``, ``wait_log()``, ``rss_kib()``, ``stop()``,
  ``expect_exit``, ``exit_problem()``
- ``RawWs`` and ``encode_frame()`` / ``upgrade_request()`` / ``read_http_head()`` for raw sockets
- ``connect_ws()``, ``recv_json()``, ``recv_message()``, ``ws_close_code()`` for ``websockets``
  (Debian 12 ships websockets 10.4, so the legacy asyncio API is used)
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import websockets

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"

# Sanitizer builds are several times slower; every start-up wait scales with this.
SLOW = 3.0 if "asan" in os.environ.get("SIDECAR_BUILD_DIR", "") else 1.0

# Markers that a sanitizer found a problem; the fixtures fail a test whose sidecar printed one.
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "ERROR: UndefinedBehaviorSanitizer")


# ----------------------------------------------------------------------------- small helpers


def free_port() -> int:
    """Returns a TCP port on 127.0.0.1 that was free a moment ago (the OS picked it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_until(pred, timeout: float = 10.0, what: str = "condition", interval: float = 0.01):
    """Polls ``pred()`` until it returns something truthy and returns that value.

    Raises ``TimeoutError`` naming ``what`` when ``timeout`` seconds pass first. Exceptions from
    ``pred`` propagate at once: a predicate should return False for "not yet".
    """
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def run(coro, timeout: float = 60.0):
    """Runs an asyncio coroutine to completion from a synchronous test, bounded by ``timeout``."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def sidecar_bin() -> str:
    """The binary under test: ``SIDECAR_BIN``, else the first built one found in the repo."""
    env = os.environ.get("SIDECAR_BIN")
    if env:
        return env
    for d in ("build", "build-harness", "build-release"):
        p = REPO_ROOT / d / "sidecar"
        if p.exists():
            return str(p)
    raise RuntimeError("SIDECAR_BIN is not set and no built sidecar was found")


# ----------------------------------------------------------------------------- RESP client


class RespError(Exception):
    """An error reply (``-ERR ...``) from Redis."""


def resp_encode(*args) -> bytes:
    """Encodes a command as a RESP array of bulk strings; str args are UTF-8, bytes are verbatim."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class RespConn:
    """A blocking RESP connection to Redis, byte-exact for payloads of any size."""

    def __init__(self, port: int, timeout: float = 5.0):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def _fill(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        self.buf += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read_reply(self):
        """Reads one reply: int, bytes, None, list, or raises RespError."""
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read_reply() for _ in range(n)]
        raise RespError(f"unexpected RESP line {line!r}")

    def command(self, *args):
        self.sock.sendall(resp_encode(*args))
        return self.read_reply()

    def pipeline(self, commands) -> list:
        """Sends every command in one write and reads all replies, in order."""
        commands = list(commands)
        self.sock.sendall(b"".join(resp_encode(*c) for c in commands))
        return [self.read_reply() for _ in commands]


# ----------------------------------------------------------------------------- redis-server


class RedisServer:
    """A private redis-server on 127.0.0.1 with its own temp dir and no persistence."""

    def __init__(self, port: int | None = None):
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.dir = tempfile.mkdtemp(prefix="sidecar-redis-")
        self.proc: subprocess.Popen | None = None
        self._conn: RespConn | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        """Starts redis-server and returns once PING answers; retries another port on a clash."""
        for attempt in range(5):
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", "",
                 "--appendonly", "no", "--dir", self.dir,
                 "--logfile", os.path.join(self.dir, "redis.log")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_until(self._ready, timeout, f"redis-server on port {self.port}")
                return self
            except RuntimeError:
                if self._fixed_port or attempt == 4:
                    raise
                self.port = free_port()
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self.log()}")
        try:
            c = RespConn(self.port, timeout=1.0)
        except OSError:
            return False
        try:
            return c.command("PING") == b"PONG"
        except (OSError, RespError):
            return False
        finally:
            c.close()

    def log(self) -> str:
        try:
            return Path(self.dir, "redis.log").read_text(errors="replace")
        except OSError:
            return ""

    def _client(self) -> RespConn:
        if self._conn is None:
            self._conn = RespConn(self.port)
        return self._conn

    def command(self, *args):
        """Runs one command over a kept-open raw RESP connection (reconnecting once if needed)."""
        try:
            return self._client().command(*args)
        except (OSError, ConnectionError):
            self._drop_conn()
            return self._client().command(*args)

    def _drop_conn(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def cli(self, *args, timeout: float = 10.0) -> str:
        """Runs ``redis-cli -p PORT args...`` and returns its stdout."""
        r = subprocess.run(["redis-cli", "-h", HOST, "-p", str(self.port), *map(str, args)],
                           capture_output=True, timeout=timeout, check=True)
        return r.stdout.decode(errors="replace")

    def publish(self, channel: str, payload) -> int:
        """PUBLISHes bytes or str byte-exactly over RESP; returns the receiver count Redis reports."""
        return self.command("PUBLISH", channel, payload)

    def publish_many(self, channel: str, payloads) -> list:
        """PUBLISHes several payloads in one pipelined write, in order; returns receiver counts."""
        return self._client().pipeline(("PUBLISH", channel, p) for p in payloads)

    def pubsub_channels(self, pattern: str = "*") -> set:
        """The set of channels with at least one subscriber (``PUBSUB CHANNELS``), as str."""
        return {c.decode() for c in self.command("PUBSUB", "CHANNELS", pattern)}

    def numsub(self, channel: str) -> int:
        """The number of subscribers of ``channel`` (``PUBSUB NUMSUB``)."""
        reply = self.command("PUBSUB", "NUMSUB", channel)
        return int(reply[1])

    def kill(self):
        """Kills redis-server with SIGKILL (a crash, as far as its clients can tell)."""
        self._drop_conn()
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self, timeout: float = 10.0) -> "RedisServer":
        """Starts redis-server again on the same port (after ``kill()`` or ``stop()``)."""
        self.kill()
        self._fixed_port = True
        return self.start(timeout)

    def stop(self):
        """Stops redis-server (SIGTERM, then SIGKILL) and removes its directory."""
        self._drop_conn()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


# ----------------------------------------------------------------------------- HTTP over raw sockets


def read_http_head(sock: socket.socket, timeout: float = 5.0, buf: bytes = b""):
    """Reads one HTTP response head from ``sock``.

    Returns ``(status, headers, rest)``: headers is a dict with lower-case names (repeated headers
    joined with ", "), rest is whatever followed the head (body bytes or WebSocket frames).
    """
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete HTTP response head within {timeout}s; got {buf!r}")
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a full HTTP head; got {buf!r}")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return status, headers, rest


def read_http_response(sock: socket.socket, timeout: float = 5.0):
    """Reads a whole HTTP response: ``(status, headers, body)``; the body by Content-Length, or
    to EOF when the response has none."""
    deadline = time.monotonic() + timeout
    status, headers, body = read_http_head(sock, timeout)
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(body) < n:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return status, headers, body[:n]
    if status in (101, 204, 304) or 100 <= status < 200:
        return status, headers, body
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("HTTP response without Content-Length did not end")
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            return status, headers, body
        body += chunk


# ----------------------------------------------------------------------------- raw WebSocket


OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def new_ws_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def upgrade_request(path: str = "/ws/acme", key: str | None = "auto", version: str | None = "13",
                    host: str = "127.0.0.1", extra: dict | None = None) -> bytes:
    """Builds a client upgrade request. ``key``/``version`` None leaves that header out; ``key``
    "auto" makes a fresh valid key. ``extra`` headers are appended verbatim."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade"]
    if key == "auto":
        key = new_ws_key()
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    if version is not None:
        lines.append(f"Sec-WebSocket-Version: {version}")
    for name, value in (extra or {}).items():
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def encode_frame(opcode: int, payload: bytes = b"", fin: bool = True, mask: bool = True,
                 rsv: int = 0) -> bytes:
    """Encodes one frame; clients must mask, so ``mask`` defaults to True (random key)."""
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    # XOR by whole integers: fast enough for multi-megabyte payloads.
    reps = (n + 3) // 4
    k = int.from_bytes((key * reps)[:n], "big") if n else 0
    masked = (int.from_bytes(payload, "big") ^ k).to_bytes(n, "big") if n else b""
    return head + key + masked


@dataclass
class Frame:
    fin: bool
    opcode: int
    payload: bytes
    rsv: int = 0  # RSV1..RSV3 as 0b100..0b001; RSV1 marks a permessage-deflate message

    def close_code(self) -> int | None:
        """For a close frame: its status code, or None when it carries none."""
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None


class RawWs:
    """A WebSocket client on a raw socket, for byte-level tests the real clients cannot express.

    ``RawWs.connect(port)`` upgrades and checks the 101; frames that arrived with the response are
    kept. ``recv_frame`` returns server frames one by one (ping frames included).
    """

    def __init__(self, sock: socket.socket, buf: bytes = b""):
        self.sock = sock
        self.buf = buf
        self.status = None
        self.headers: dict[str, str] = {}

    @classmethod
    def connect(cls, port: int, path: str = "/ws/acme", extra: dict | None = None,
                timeout: float = 5.0) -> "RawWs":
        sock = socket.create_connection((HOST, port), timeout=timeout)
        sock.sendall(upgrade_request(path, extra=extra))
        status, headers, rest = read_http_head(sock, timeout)
        if status != 101:
            sock.close()
            raise AssertionError(f"expected 101, got {status} {headers}")
        ws = cls(sock, rest)
        ws.status, ws.headers = status, headers
        return ws

    def send(self, data: bytes):
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes = b"", **kw):
        self.sock.sendall(encode_frame(opcode, payload, **kw))

    def _need(self, n: int, deadline: float) -> bool:
        while len(self.buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no complete frame in time; have {len(self.buf)} bytes")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(1 << 16)
            except ConnectionResetError:
                return False
            if not chunk:
                return False
            self.buf += chunk
        return True

    def recv_frame(self, timeout: float = 5.0) -> Frame | None:
        """The next frame from the server, or None when the connection ended first."""
        deadline = time.monotonic() + timeout
        if not self._need(2, deadline):
            return None
        b0, b1 = self.buf[0], self.buf[1]
        n, off = b1 & 0x7F, 2
        if n == 126:
            if not self._need(4, deadline):
                return None
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            if not self._need(10, deadline):
                return None
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        key = b""
        if b1 & 0x80:
            if not self._need(off + 4, deadline):
                return None
            key, off = self.buf[off:off + 4], off + 4
        if not self._need(off + n, deadline):
            return None
        payload, self.buf = self.buf[off:off + n], self.buf[off + n:]
        if key:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return Frame(bool(b0 & 0x80), b0 & 0x0F, payload, (b0 >> 4) & 0x07)

    def recv_message(self, timeout: float = 5.0) -> Frame | None:
        """The next data message (fragments joined) or close frame, answering pings on the way."""
        deadline = time.monotonic() + timeout
        parts, first = [], None
        while True:
            f = self.recv_frame(max(deadline - time.monotonic(), 0.001))
            if f is None:
                return None
            if f.opcode == OP_PING:
                self.send_frame(OP_PONG, f.payload)
                continue
            if f.opcode in (OP_PONG,):
                continue
            if f.opcode == OP_CLOSE:
                return f
            if first is None:
                first = f.opcode
            parts.append(f.payload)
            if f.fin:
                return Frame(True, first, b"".join(parts))

    def recv_json(self, timeout: float = 5.0) -> dict:
        f = self.recv_message(timeout)
        assert f is not None and f.opcode == OP_TEXT, f"expected a text message, got {f}"
        return json.loads(f.payload)

    def recv_close(self, timeout: float = 5.0) -> int | None:
        """Reads until the server's close frame and returns its code (None: TCP ended without
        one). Data messages before it are discarded."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.recv_message(max(deadline - time.monotonic(), 0.001))
            if f is None:
                return None
            if f.opcode == OP_CLOSE:
                return f.close_code()

    def close(self):
        self.sock.close()


# ----------------------------------------------------------------------------- sidecar process


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class Sidecar:
    """The sidecar binary with a generated config in its own temp dir.

    The config is JSON (valid YAML 1.2) with ``listen`` on a free loopback port, ``redis.url``,
    and ``log.level: debug``; ``extra_yaml`` (a dict) is deep-merged into it. ``config_text``
    replaces it entirely: ``@PORT@`` and ``@REDIS_URL@`` in it are substituted. ``env`` adds
    environment variables; inherited SIDECAR_* variables are dropped so they cannot override
    the test's config.
    """

    def __init__(self, redis_url: str, config_text: str | None = None,
                 extra_yaml: dict | None = None, env: dict | None = None):
        self.redis_url = redis_url
        self.config_text = config_text
        self.extra_yaml = extra_yaml or {}
        self.extra_env = env or {}
        self.dir = tempfile.mkdtemp(prefix="sidecar-test-")
        self.config_path = os.path.join(self.dir, "sidecar.yaml")
        self.log_path = os.path.join(self.dir, "sidecar.log")
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self._log_file = None
        # Whether the test means the process to end before teardown. Set it (or call
        # wait_exit(), or send_signal() with SIGKILL) in a test that kills or crashes it on
        # purpose; otherwise exit_problem() reports an exit the test did not ask for.
        self.expect_exit = False
        self._exit_problems: list[str] = []  # what stop() found wrong, process by process
        self._reset_exit_state()

    def _reset_exit_state(self):
        """Per process: what the test did to it and whether stop() has judged its end."""
        self._stop_signal: int | None = None  # SIGTERM/SIGINT the test sent itself
        self._start_failed = False  # start() raised: the test has already heard about it
        self._stopped = False

    def config(self) -> str:
        if self.config_text is not None:
            return self.config_text.replace("@PORT@", str(self.port)).replace(
                "@REDIS_URL@", self.redis_url)
        base = {"listen": f"{HOST}:{self.port}", "redis": {"url": self.redis_url},
                "log": {"level": "debug"}}
        return json.dumps(_merge(base, self.extra_yaml), indent=2) + "\n"

    def start(self, timeout: float = 10.0, wait_health: bool = True) -> "Sidecar":
        """Starts the binary and waits until GET /health answers 200 (unless ``wait_health`` is
        False). A port clash at bind time is retried on another port when the port was ours."""
        if self.proc is not None:  # a restart: judge the previous process, then start afresh
            self.stop()
            self.expect_exit = False
            self._reset_exit_state()
        for attempt in range(3):
            Path(self.config_path).write_text(self.config())
            env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
            env.update(self.extra_env)
            self._log_file = open(self.log_path, "ab")
            self.proc = subprocess.Popen([sidecar_bin(), "--config", self.config_path],
                                         stdin=subprocess.DEVNULL, stdout=self._log_file,
                                         stderr=subprocess.STDOUT, env=env, cwd=self.dir)
            if not wait_health:
                return self
            try:
                wait_until(self._healthy, timeout * SLOW, f"sidecar /health on port {self.port}")
                return self
            except RuntimeError:
                if self.config_text is not None or attempt == 2 or "listen" in self.extra_yaml \
                        or "in use" not in self.log().lower():
                    self._start_failed = True
                    raise
                self.port = free_port()
        return self

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"sidecar exited with {self.proc.returncode} during start-up; log:\n{self.log()}")
        try:
            status, _, _ = self.http("GET", "/health", timeout=1.0)
        except OSError:
            return False
        return status == 200

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ws_url(self, path: str = "/ws/acme") -> str:
        return f"ws://{HOST}:{self.port}{path}"

    def raw_connect(self, timeout: float = 5.0) -> socket.socket:
        """A plain TCP connection to the sidecar's listener."""
        return socket.create_connection((HOST, self.port), timeout=timeout)

    def http(self, method: str, path: str, headers: dict | None = None, body: bytes = b"",
             timeout: float = 5.0):
        """Sends one HTTP/1.1 request over a fresh socket; returns ``(status, headers, body)``
        with lower-case header names."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{self.port}", "Connection: close"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body:
            lines.append(f"Content-Length: {len(body)}")
        req = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        with self.raw_connect(timeout) as s:
            s.sendall(req)
            return read_http_response(s, timeout)

    def send_signal(self, sig: int):
        """Sends ``sig``. SIGTERM and SIGINT ask for a graceful exit, which must still end with
        code 0 by teardown; SIGKILL declares the exit expected (see ``expect_exit``)."""
        if sig in (signal.SIGTERM, signal.SIGINT):
            self._stop_signal = sig
        elif sig == signal.SIGKILL:
            self.expect_exit = True
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 10.0) -> int:
        """Waits for the process to exit and returns its code (negative: killed by a signal).
        Waiting for the exit declares it expected: the caller checks the code it gets."""
        self.expect_exit = True
        return self.proc.wait(timeout * SLOW)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def wait_log(self, regex: str, timeout: float = 10.0):
        """Waits until a log line matches ``regex``; returns the match."""
        pattern = re.compile(regex, re.MULTILINE)
        return wait_until(lambda: pattern.search(self.log()), timeout * SLOW,
                          f"log line matching {regex!r}")

    def rss_kib(self) -> int:
        """Resident set size of the process in KiB (VmRSS)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def sanitizer_report(self) -> str | None:
        """The sanitizer report in the log, if ASan/UBSan/LSan printed one."""
        log = self.log()
        return log if any(m in log for m in SANITIZER_MARKERS) else None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``; returns the exit code.

        The first stop() of a process judges how it ended, for ``exit_problem()``: our SIGTERM
        must end it with code 0 in time; a process that had already exited must have been
        expected to (``expect_exit``), or have exited 0 after a SIGTERM/SIGINT the test sent."""
        rc = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    rc = self.proc.wait(timeout * SLOW)
                    problem = None if rc == 0 else f"sidecar exited with {rc} on SIGTERM " \
                                                   f"(expected 0)"
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    rc = self.proc.wait(10)
                    problem = (f"sidecar did not exit within {timeout * SLOW:.0f}s of SIGTERM; "
                               f"SIGKILL was used")
            else:
                rc = self.proc.returncode
                if self.expect_exit or self._start_failed:
                    problem = None
                elif self._stop_signal is not None:
                    name = signal.Signals(self._stop_signal).name
                    problem = None if rc == 0 else f"sidecar exited with {rc} after the " \
                                                   f"test's {name} (expected 0)"
                else:
                    problem = f"sidecar died unexpectedly before teardown with exit code {rc}"
            if problem and not self._stopped:
                self._exit_problems.append(problem)
            self._stopped = True
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return rc

    def exit_problem(self) -> str | None:
        """Why the way this sidecar's process ended is a failure, or None; call after
        ``stop()``. See ``stop()`` for the rules."""
        return "; ".join(self._exit_problems) or None

    def cleanup(self):
        """Stops the process and removes its temp dir."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# ----------------------------------------------------------------------------- websockets helpers


async def connect_ws(url: str, timeout: float = 5.0, **kw):
    """Connects with ``websockets`` and reads the welcome; returns the connection with the
    decoded welcome in ``conn.welcome``. ``max_size`` defaults to unlimited."""
    kw.setdefault("max_size", None)
    kw.setdefault("open_timeout", timeout * SLOW)
    kw.setdefault("compression", None)
    conn = await websockets.connect(url, **kw)
    try:
        conn.welcome = await recv_json(conn, timeout)
    except BaseException:
        await conn.close()
        raise
    return conn


async def recv_message(conn, timeout: float = 5.0):
    """The next message: ``str`` for a text frame, ``bytes`` for a binary one."""
    return await asyncio.wait_for(conn.recv(), timeout * SLOW)


async def recv_json(conn, timeout: float = 5.0) -> dict:
    """The next message, which must be a text frame holding JSON, decoded."""
    msg = await recv_message(conn, timeout)
    assert isinstance(msg, str), f"expected a text frame, got binary {msg[:64]!r}"
    return json.loads(msg)


async def ws_close_code(conn, timeout: float = 5.0) -> int | None:
    """Waits for the connection to close (discarding any messages still queued) and returns the
    close code the server sent (1006 when TCP ended without a close frame)."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("connection did not close in time")
        try:
            await asyncio.wait_for(conn.recv(), remaining)
        except websockets.ConnectionClosed as e:
            return e.rcvd.code if e.rcvd is not None else 1006
