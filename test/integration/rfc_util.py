"""Raw RFC 6455 frame builder and strict frame reader for the conformance tests.

The harness's ``encode_frame``/``RawWs`` build only well-formed frames and read server frames
leniently. Conformance tests need the opposite on both sides: client frames with any flag, opcode,
length encoding (including non-minimal and 64-bit lengths with the top bit set) or no mask at all,
and a reader that checks every server frame against the rules a server MUST follow (never masked,
RSV bits clear, known opcode, control frames short and unfragmented, lengths minimally encoded)
and that can prove the server closed TCP by reading to EOF within a bounded time.

Nothing here sleeps: every read has a deadline.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass

from harness import HOST, read_http_head, upgrade_request

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
KNOWN_OPCODES = {OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG}

# ----------------------------------------------------------------------------- client frames


def mask_bytes(payload: bytes, key: bytes) -> bytes:
    """XORs ``payload`` with the 4-byte masking ``key`` (RFC 6455 section 5.3)."""
    n = len(payload)
    if n == 0:
        return b""
    k = int.from_bytes((key * ((n + 3) // 4))[:n], "big")
    return (int.from_bytes(payload, "big") ^ k).to_bytes(n, "big")


def build_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
                mask: bool = True, mask_key: bytes | None = None, length: int | None = None,
                length_form: str = "minimal") -> bytes:
    """Builds one client frame, well-formed or not.

    ``rsv`` is the 3-bit RSV1..RSV3 field. ``mask`` False sends the payload unmasked (a client
    MUST mask). ``length`` overrides the length written in the header (the payload bytes sent
    are still ``payload``), so a test can announce 2**63 bytes and send none. ``length_form``
    chooses the encoding: "minimal", "7" (7-bit field), "16" (126 + 16 bits) or "64"
    (127 + 64 bits), so non-minimal encodings can be expressed too.
    """
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | ((rsv & 0x7) << 4) | (opcode & 0x0F)
    mbit = 0x80 if mask else 0
    form = length_form
    if form == "minimal":
        form = "7" if n < 126 else ("16" if n < 65536 else "64")
    if form == "7":
        assert n < 126, "a 7-bit length holds at most 125"
        head = struct.pack("!BB", b0, mbit | n)
    elif form == "16":
        assert n < 65536, "a 16-bit length holds at most 65535"
        head = struct.pack("!BBH", b0, mbit | 126, n)
    elif form == "64":
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    else:
        raise ValueError(f"unknown length_form {length_form!r}")
    if not mask:
        return head + payload
    key = mask_key if mask_key is not None else os.urandom(4)
    assert len(key) == 4
    return head + key + mask_bytes(payload, key)


def close_payload(code: int | None, reason: bytes = b"") -> bytes:
    """The payload of a close frame: a 2-byte code and a reason, or empty for ``None``."""
    return b"" if code is None else struct.pack("!H", code) + reason


# ----------------------------------------------------------------------------- server frames


class ProtocolViolation(AssertionError):
    """A server frame broke a rule that RFC 6455 puts on servers."""


@dataclass
class ServerFrame:
    fin: bool
    rsv: int
    opcode: int
    payload: bytes
    header: bytes  # the raw header bytes, for diagnostics

    @property
    def close_code(self) -> int | None:
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> bytes:
        return self.payload[2:]


def check_server_frame(b0: int, b1: int, ext: bytes, n: int):
    """Raises ProtocolViolation for a server frame header that breaks RFC 6455."""
    if b1 & 0x80:
        raise ProtocolViolation("server frame is masked (RFC 6455 5.1: a server MUST NOT mask)")
    if b0 & 0x70:
        raise ProtocolViolation(f"server frame has RSV bits {(b0 >> 4) & 7:#x} without an "
                                "extension (RFC 6455 5.2)")
    opcode = b0 & 0x0F
    if opcode not in KNOWN_OPCODES:
        raise ProtocolViolation(f"server frame uses reserved opcode {opcode:#x} (RFC 6455 5.2)")
    if opcode >= 0x8 and (n > 125 or not b0 & 0x80):
        raise ProtocolViolation(f"server control frame {opcode:#x} is {n} bytes, fin="
                                f"{bool(b0 & 0x80)} (RFC 6455 5.5)")
    len7 = b1 & 0x7F
    if len7 == 126 and n < 126:
        raise ProtocolViolation(f"length {n} encoded in 16 bits, not minimal (RFC 6455 5.2)")
    if len7 == 127 and n < 65536:
        raise ProtocolViolation(f"length {n} encoded in 64 bits, not minimal (RFC 6455 5.2)")
    if len7 == 127 and ext[0] & 0x80:
        raise ProtocolViolation("64-bit length with the most significant bit set (RFC 6455 5.2)")


class Eof(Exception):
    """The server closed TCP (or reset it) before the bytes asked for arrived."""


class RfcConn:
    """A WebSocket client on a raw socket whose reader enforces the server-side frame rules.

    ``RfcConn.open(port)`` upgrades, checks the 101 and reads the welcome message. Every frame
    read goes through ``check_server_frame``; bytes after a server close frame are an error.
    """

    def __init__(self, sock: socket.socket, buf: bytes = b""):
        self.sock = sock
        self.buf = buf
        self.eof = False
        self.saw_close = False
        self.headers: dict[str, str] = {}

    @classmethod
    def open(cls, port: int, path: str = "/ws/acme", timeout: float = 5.0,
             welcome: bool = True) -> "RfcConn":
        sock = socket.create_connection((HOST, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(upgrade_request(path))
        status, headers, rest = read_http_head(sock, timeout)
        if status != 101:
            sock.close()
            raise AssertionError(f"expected 101, got {status} {headers}")
        conn = cls(sock, rest)
        conn.headers = headers
        if welcome:
            f = conn.recv_data(timeout)
            assert f.opcode == OP_TEXT and b'"connected"' in f.payload, f"welcome: {f}"
        return conn

    # -- sending

    def send(self, data: bytes):
        """Sends raw bytes; a reset or broken pipe (the server already dropped us) is ignored,
        because the test then checks what the server sent before that."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def send_frame(self, opcode: int, payload: bytes = b"", **kw):
        self.send(build_frame(opcode, payload, **kw))

    # -- reading

    def _recv_by(self, deadline: float, timeout_message) -> bytes:
        """One recv() that must finish by ``deadline``; b"" (and ``eof`` set) when TCP ended.
        ``timeout_message()`` builds the TimeoutError's text, so it shows the latest bytes."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(timeout_message())
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(1 << 16)
        except ConnectionResetError:
            chunk = b""
        except socket.timeout:
            raise TimeoutError(timeout_message()) from None
        if not chunk:
            self.eof = True
        return chunk

    def _need(self, n: int, deadline: float):
        while len(self.buf) < n:
            if self.eof:
                raise Eof(f"EOF with {len(self.buf)} of {n} bytes")
            self.buf += self._recv_by(
                deadline, lambda: f"no complete server frame in time; have {self.buf[:32]!r}")

    def recv_frame(self, timeout: float = 5.0) -> ServerFrame | None:
        """The next server frame, checked; None when TCP ended on a frame boundary."""
        deadline = time.monotonic() + timeout
        try:
            self._need(2, deadline)
        except Eof:
            if self.buf:
                raise ProtocolViolation(f"TCP ended inside a frame header: {self.buf!r}")
            return None
        if self.saw_close:
            raise ProtocolViolation(f"server sent bytes after its close frame: {self.buf[:32]!r}")
        b0, b1 = self.buf[0], self.buf[1]
        n, off = b1 & 0x7F, 2
        if n == 126:
            self._need(4, deadline)
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10, deadline)
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        check_server_frame(b0, b1, self.buf[2:off], n)
        self._need(off + n, deadline)
        header, payload = self.buf[:off], self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        f = ServerFrame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, payload, header)
        if f.opcode == OP_CLOSE:
            self.saw_close = True
        return f

    def recv_data(self, timeout: float = 5.0) -> ServerFrame:
        """The next data message (fragments joined) or close frame, skipping server pings and
        pongs. Raises when TCP ends first."""
        deadline = time.monotonic() + timeout
        parts, first = [], None
        while True:
            f = self.recv_frame(max(deadline - time.monotonic(), 0.001))
            if f is None:
                raise Eof("TCP ended while waiting for a message")
            if f.opcode in (OP_PING, OP_PONG):
                continue
            if f.opcode == OP_CLOSE:
                return f
            if first is None:
                if f.opcode == OP_CONT:
                    raise ProtocolViolation("server sent a continuation without a start")
                first = f.opcode
            elif f.opcode != OP_CONT:
                raise ProtocolViolation("server started a message inside a fragmented one")
            parts.append(f.payload)
            if f.fin:
                return ServerFrame(True, 0, first, b"".join(parts), f.header)

    def recv_close(self, timeout: float = 5.0) -> ServerFrame:
        """Reads until the server's close frame (data messages before it are discarded).
        Raises ``Eof`` when TCP ends without one."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.recv_data(max(deadline - time.monotonic(), 0.001))
            if f.opcode == OP_CLOSE:
                return f

    def wait_eof(self, timeout: float = 5.0) -> bytes:
        """Reads until the server closes TCP and returns the bytes that came first; raises
        TimeoutError when the connection is still open after ``timeout``."""
        deadline = time.monotonic() + timeout
        got = self.buf
        self.buf = b""
        while not self.eof:
            got += self._recv_by(
                deadline, lambda: f"server kept TCP open for {timeout}s; got {got[:64]!r}")
        return got

    def expect_failure(self, code: int, timeout: float = 5.0) -> ServerFrame:
        """Asserts the server fails the connection: a close frame with ``code`` and then TCP
        closed by the server (RFC 6455 7.1.7), all within ``timeout``."""
        f = self.recv_close(timeout)
        assert f.close_code == code, f"expected close {code}, got {f.close_code} {f.payload!r}"
        rest = self.wait_eof(timeout)
        assert rest == b"", f"bytes after the close frame: {rest[:64]!r}"
        return f

    def close(self):
        self.sock.close()


def raw_request(method: str = "GET", path: str = "/ws/acme", version: str = "HTTP/1.1",
                headers: list[tuple[str, str]] | None = None) -> bytes:
    """An HTTP request head with headers given as (name, value) pairs in order, so tests can
    choose header-name case, order, duplicates and sizes freely."""
    lines = [f"{method} {path} {version}"]
    lines += [f"{k}: {v}" for k, v in (headers or [])]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def upgrade_headers(key: str = "dGhlIHNhbXBsZSBub25jZQ==", host: str = HOST,
                    connection: str = "Upgrade") -> list[tuple[str, str]]:
    """The header list of a valid upgrade request."""
    return [("Host", host), ("Upgrade", "websocket"), ("Connection", connection),
            ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]
