"""Helpers for the resilience tests (liveness, slow consumers, Redis faults, chaos).

They add to ``harness`` without changing it: raw sockets that misbehave on purpose (never read,
tiny receive buffers, RST instead of FIN), a fast reader for megabytes of server frames, a paced
publisher that runs in its own process so that the test's own Python does not add latency to what
it measures, the sidecar's status summary, RSS sampling and logfmt parsing with timestamps.
Every wait has a deadline; every loop is bounded in count and time.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time

from harness import HOST, OP_CLOSE, OP_PING, OP_PONG, encode_frame, read_http_head, \
    upgrade_request


# AddressSanitizer keeps freed memory in a quarantine (256 MiB by default) and pads every block, and
# valgrind's RSS is mostly valgrind's own, so RSS says nothing about our allocations in those runs.
# Memory bounds are asserted in the plain build, where the same tests run; under ASan or valgrind
# they still prove every behaviour but the bound.
RSS_MEANINGFUL = ("asan" not in os.environ.get("SIDECAR_BUILD_DIR", "")
                  and "valgrind" not in os.environ.get("SIDECAR_BIN", ""))

# ----------------------------------------------------------------------------- sidecar state


def status_summary(sc, token: str | None = None) -> dict:
    """The ``summary`` object of ``/api/websocket/status``."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    status, _, body = sc.http("GET", "/api/websocket/status?limit=1", headers=headers)
    assert status == 200, f"/api/websocket/status answered {status}: {body!r}"
    return json.loads(body)["summary"]


def active_connections(sc) -> int:
    return int(status_summary(sc)["activeConnections"])


def ready_status(sc) -> tuple[int, dict]:
    """``(status, decoded body)`` of ``GET /ready``; (0, {}) when the request itself fails."""
    try:
        status, _, body = sc.http("GET", "/ready", timeout=2.0)
    except OSError:
        return 0, {}
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {}


# ----------------------------------------------------------------------------- logfmt


_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_logfmt(line: str) -> dict:
    """One logfmt line as a dict (quoted values unquoted); ``_t`` holds ``time`` in seconds."""
    out = {}
    for key, value in _PAIR.findall(line):
        if value.startswith('"'):
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out[key] = value
    if "time" in out:
        stamp = _dt.datetime.strptime(out["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
        out["_t"] = stamp.replace(tzinfo=_dt.timezone.utc).timestamp()
    return out


def log_events(sc, event: str, **match) -> list[dict]:
    """Every log line of ``sc`` with ``event=<event>`` whose fields equal ``match``."""
    found = []
    for line in sc.log().splitlines():
        if f"event={event}" not in line:
            continue
        rec = parse_logfmt(line)
        if rec.get("event") == event and all(rec.get(k) == str(v) for k, v in match.items()):
            found.append(rec)
    return found


# ----------------------------------------------------------------------------- raw sockets


def raw_socket(port: int, rcvbuf: int | None = None, timeout: float = 5.0) -> socket.socket:
    """A TCP connection to the sidecar. ``rcvbuf`` is set before connect, so the window the
    kernel advertises is small from the first segment on."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect((HOST, port))
    return s


def ghost_upgrade(port: int, path: str = "/ws/acme", rcvbuf: int | None = None,
                  timeout: float = 5.0) -> tuple[socket.socket, bytes]:
    """Completes a WebSocket handshake on a raw socket and returns ``(sock, bytes after the
    101 head)``. After this the caller may simply never touch the socket again: a ghost."""
    s = raw_socket(port, rcvbuf, timeout)
    s.sendall(upgrade_request(path))
    status, headers, rest = read_http_head(s, timeout)
    if status != 101:
        s.close()
        raise AssertionError(f"expected 101, got {status} {headers}")
    return s, rest


def reset_close(s: socket.socket):
    """Closes with RST instead of FIN (SO_LINGER on with a zero timeout): an abrupt vanish."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    s.close()


def read_until_closed(s: socket.socket, timeout: float) -> tuple[bytes, str]:
    """Reads until the peer ends the connection; returns ``(bytes, "eof" | "reset")``. Raises
    TimeoutError when the connection is still open at the deadline."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"connection still open after {timeout}s ({len(data)} bytes read)")
        s.settimeout(remaining)
        try:
            chunk = s.recv(1 << 16)
        except ConnectionResetError:
            return bytes(data), "reset"
        except socket.timeout:
            continue
        if not chunk:
            return bytes(data), "eof"
        data += chunk


def split_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Splits unmasked server frames into ``(opcode, payload)``; a trailing partial frame is
    dropped."""
    frames, off = [], 0
    while off + 2 <= len(data):
        b0, b1 = data[off], data[off + 1]
        n, hdr = b1 & 0x7F, 2
        if n == 126:
            if off + 4 > len(data):
                break
            n, hdr = struct.unpack_from("!H", data, off + 2)[0], 4
        elif n == 127:
            if off + 10 > len(data):
                break
            n, hdr = struct.unpack_from("!Q", data, off + 2)[0], 10
        if off + hdr + n > len(data):
            break
        frames.append((b0 & 0x0F, bytes(data[off + hdr:off + hdr + n])))
        off += hdr + n
    return frames


class FrameReader:
    """Reads server frames from a raw socket quickly enough for tens of MiB: one growing
    bytearray, no per-byte Python work (server frames are unmasked). Answers pings when
    ``answer_pings`` is set, as a live client would."""

    def __init__(self, sock: socket.socket, buf: bytes = b"", answer_pings: bool = True):
        self.sock = sock
        self.buf = bytearray(buf)
        self.pos = 0
        self.answer_pings = answer_pings
        self.pings = 0

    def _need(self, n: int, deadline: float) -> bool:
        while len(self.buf) - self.pos < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no complete frame in time; have {len(self.buf) - self.pos}")
            if self.pos > (1 << 20):
                del self.buf[:self.pos]
                self.pos = 0
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(1 << 18)
            except ConnectionResetError:
                return False
            except socket.timeout:
                continue
            if not chunk:
                return False
            self.buf += chunk
        return True

    def frame(self, timeout: float = 5.0) -> tuple[int, bytes] | None:
        """The next ``(opcode, payload)`` (pings included), or None when the connection ended."""
        deadline = time.monotonic() + timeout
        if not self._need(2, deadline):
            return None
        b0, b1 = self.buf[self.pos], self.buf[self.pos + 1]
        n, hdr = b1 & 0x7F, 2
        if n == 126:
            if not self._need(4, deadline):
                return None
            n, hdr = struct.unpack_from("!H", self.buf, self.pos + 2)[0], 4
        elif n == 127:
            if not self._need(10, deadline):
                return None
            n, hdr = struct.unpack_from("!Q", self.buf, self.pos + 2)[0], 10
        if not self._need(hdr + n, deadline):
            return None
        start = self.pos + hdr
        payload = bytes(self.buf[start:start + n])
        self.pos = start + n
        return b0 & 0x0F, payload

    def message(self, timeout: float = 5.0) -> tuple[int, bytes] | None:
        """The next data or close frame; pings are counted (and answered) on the way."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.frame(max(deadline - time.monotonic(), 0.001))
            if f is None:
                return None
            op, payload = f
            if op == OP_PING:
                self.pings += 1
                if self.answer_pings:
                    self.sock.sendall(encode_frame(OP_PONG, payload))
                continue
            if op == OP_PONG:
                continue
            return f

    def until_pings(self, count: int, timeout: float) -> list[tuple[int, bytes]]:
        """Reads (answering pings) until ``count`` pings in all have arrived; returns the other
        frames seen meanwhile. Raises TimeoutError when they do not come in time and
        ConnectionError when the connection ends first."""
        deadline = time.monotonic() + timeout
        others = []
        while self.pings < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"only {self.pings} of {count} pings within {timeout}s")
            f = self.frame(remaining)
            if f is None:
                raise ConnectionError(f"connection ended after {self.pings} pings: {others}")
            if f[0] == OP_PING:
                self.pings += 1
                if self.answer_pings:
                    self.sock.sendall(encode_frame(OP_PONG, f[1]))
            else:
                others.append(f)
        return others

    def close_code(self, timeout: float = 5.0) -> int | None:
        """Discards data frames up to the server's close frame and returns its code (None when
        TCP ended first)."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.message(max(deadline - time.monotonic(), 0.001))
            if f is None:
                return None
            if f[0] == OP_CLOSE:
                return struct.unpack("!H", f[1][:2])[0] if len(f[1]) >= 2 else None


# ----------------------------------------------------------------------------- memory


class RssSampler:
    """Samples the sidecar's RSS on a background thread (every ``interval`` s, at most
    ``max_samples`` times) and keeps the peak."""

    def __init__(self, sc, interval: float = 0.01, max_samples: int = 20000):
        self.sc = sc
        self.interval = interval
        self.max_samples = max_samples
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        for _ in range(self.max_samples):
            try:
                self.peak_kib = max(self.peak_kib, self.sc.rss_kib())
            except (OSError, RuntimeError):
                return
            if self._stop.wait(self.interval):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


# ----------------------------------------------------------------------------- paced publisher


_PUBLISHER = r'''
import socket, struct, sys, time

port, channel, count, size, interval = sys.argv[1], sys.argv[2], int(sys.argv[3]), \
    int(sys.argv[4]), float(sys.argv[5])
s = socket.create_connection(("127.0.0.1", int(port)))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
pad = b"x" * size
ch = channel.encode()
start = time.monotonic()
for i in range(count):
    # Pacing, not waiting: message i leaves at start + i * interval, so Redis and the sidecar
    # see a steady stream rather than one burst that measures Redis's own queueing.
    delay = start + i * interval - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    head = b"%08d %020d " % (i, time.clock_gettime_ns(time.CLOCK_MONOTONIC))
    payload = head + pad[len(head):]
    s.sendall(b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(ch), ch, len(payload),
                                                                   payload))
    # Reading each reply keeps Redis's output buffer for us empty.
    buf = b""
    while not buf.endswith(b"\r\n"):
        chunk = s.recv(64)
        if not chunk:
            sys.exit("redis closed the connection")
        buf += chunk
    if not buf.startswith(b":"):
        sys.exit("unexpected reply %r" % buf)
print("published", count, flush=True)
'''


def start_paced_publisher(redis_port: int, channel: str, count: int, size: int,
                          interval_s: float) -> subprocess.Popen:
    """Starts a separate process that PUBLISHes ``count`` payloads of ``size`` bytes, one every
    ``interval_s``. Each payload starts with ``"%08d %020d "`` (sequence number, CLOCK_MONOTONIC
    ns at publish) so a reader can check order and measure latency; see ``payload_stamp``."""
    return subprocess.Popen(
        [sys.executable, "-c", _PUBLISHER, str(redis_port), channel, str(count), str(size),
         repr(interval_s)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def payload_stamp(payload: bytes) -> tuple[int, int]:
    """``(sequence, publish time in CLOCK_MONOTONIC ns)`` from a paced publisher's payload."""
    return int(payload[:8]), int(payload[9:29])


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    # Nearest rank: the smallest value with at least p % of the values at or below it.
    k = min(len(ordered) - 1, max(0, math.ceil(p / 100.0 * len(ordered)) - 1))
    return ordered[k]
