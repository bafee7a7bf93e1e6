"""RFC 6455 section 4 (the opening handshake) from the server's side, and the limits around it:
request heads over limits.max_header_bytes get 431, HTTP/1.0 and non-GET upgrades get real HTTP
refusals, `Connection` lists and header-name case are read as HTTP says, the 101 carries exactly
what 4.2.2 asks, and a handshake that never completes is dropped after handshake_timeout_ms.

Requests are built byte by byte with rfc_util.raw_request so that header order, case and size are
the test's choice. test/CONFORMANCE.md maps each RFC section to the tests here.
"""

from __future__ import annotations

import base64
import hashlib
import select
import socket
import time

import pytest

from harness import read_http_head, read_http_response, wait_until
from ops_util import parse_prometheus
from rfc_util import OP_TEXT, RfcConn, raw_request, upgrade_headers

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def exchange(sc, request: bytes, timeout: float = 5.0):
    """Sends ``request`` on a fresh connection; returns (status, headers, rest-after-head)."""
    with sc.raw_connect(timeout) as s:
        s.sendall(request)
        return read_http_head(s, timeout)


def padded_upgrade(total: int, path: str = "/ws/acme") -> bytes:
    """A valid upgrade request whose head (through the final CRLF CRLF) is exactly ``total``
    bytes, padded with one X-Pad header."""
    base = raw_request(path=path, headers=upgrade_headers() + [("X-Pad", "")])
    pad = total - len(base)
    assert pad >= 0, f"{total} is shorter than a bare upgrade ({len(base)})"
    req = raw_request(path=path, headers=upgrade_headers() + [("X-Pad", "p" * pad)])
    assert len(req) == total
    return req


def wait_closed(sock: socket.socket, timeout: float) -> bytes:
    """Reads until the server closes ``sock``; returns what it sent. TimeoutError if it stays
    open."""
    deadline = time.monotonic() + timeout
    got = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"server kept the connection open for {timeout}s; got {got!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return got
        except socket.timeout:
            continue
        if not chunk:
            return got
        got += chunk


# ----------------------------------------------------------------------------- 431 head limit


def test_request_head_of_exactly_16_kib_upgrades(sidecar):
    status, _, _ = exchange(sidecar, padded_upgrade(16384))
    assert status == 101


def test_request_head_one_byte_over_16_kib_answers_431(sidecar):
    status, _, _ = exchange(sidecar, padded_upgrade(16385))
    assert status == 431


def test_many_small_headers_over_the_limit_answer_431(sidecar):
    extra = [(f"X-H{i}", "v" * 40) for i in range(400)]  # ~20 KiB in small pieces
    status, _, _ = exchange(sidecar, raw_request(headers=upgrade_headers() + extra))
    assert status == 431


def test_endless_head_is_refused_with_431_without_waiting_for_its_end(sidecar):
    # The head never ends; the server must answer once it is over the limit, not buffer on.
    with sidecar.raw_connect() as s:
        s.sendall(b"GET /ws/acme HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: ")
        sent = 0
        chunk = b"a" * 4096
        readable = []
        while sent < 1 << 20 and not readable:
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
            # Give the server a moment to answer each chunk (bounded: 256 chunks at most).
            readable, _, _ = select.select([s], [], [], 0.01)
        status, _, _ = read_http_head(s)
    assert status == 431
    assert sent < 64 * 1024, f"the server let {sent} bytes of head pile up"


def test_plain_http_request_over_the_limit_answers_431(sidecar):
    req = raw_request(path="/health", headers=[("Host", "127.0.0.1"), ("X-Pad", "p" * 17000)])
    status, _, _ = exchange(sidecar, req)
    assert status == 431


def test_configured_header_limit_is_used(sidecar_factory):
    sc = sidecar_factory(extra_yaml={"limits": {"max_header_bytes": 1024}})
    assert exchange(sc, padded_upgrade(1024))[0] == 101
    assert exchange(sc, padded_upgrade(1025))[0] == 431


# ----------------------------------------------------------------------------- 4.2.1 request


def test_http_1_0_upgrade_answers_505(sidecar):
    status, _, _ = exchange(sidecar, raw_request(version="HTTP/1.0", headers=upgrade_headers()))
    assert status == 505


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_non_get_upgrade_answers_405_allowing_get(sidecar, method):
    status, headers, _ = exchange(sidecar, raw_request(method=method, headers=upgrade_headers()
                                                       + [("Content-Length", "0")]))
    assert status == 405
    assert headers.get("allow") == "GET"


def test_head_upgrade_answers_405(sidecar):
    status, headers, _ = exchange(sidecar, raw_request(method="HEAD", headers=upgrade_headers()))
    assert status == 405
    assert headers.get("allow") == "GET"


def test_missing_host_answers_400(sidecar):
    hdrs = [h for h in upgrade_headers() if h[0] != "Host"]
    assert exchange(sidecar, raw_request(headers=hdrs))[0] == 400


def test_connection_header_without_upgrade_answers_400(sidecar):
    assert exchange(sidecar, raw_request(headers=upgrade_headers(connection="keep-alive")))[0] \
        == 400


def test_websocket_route_without_upgrade_header_answers_426(sidecar):
    hdrs = [h for h in upgrade_headers() if h[0] != "Upgrade"]
    status, headers, _ = exchange(sidecar, raw_request(headers=hdrs))
    assert status == 426


@pytest.mark.parametrize("connection", ["keep-alive, Upgrade", "Upgrade, keep-alive",
                                        "keep-alive,upgrade", "UPGRADE", "  upgrade  "])
def test_connection_token_lists_containing_upgrade_are_accepted(sidecar, connection):
    status, headers, _ = exchange(sidecar, raw_request(headers=upgrade_headers(
        connection=connection)))
    assert status == 101
    assert headers.get("sec-websocket-accept") == accept_for(KEY)


def test_connection_split_over_two_header_lines_is_accepted(sidecar):
    hdrs = [h for h in upgrade_headers() if h[0] != "Connection"]
    hdrs += [("Connection", "keep-alive"), ("Connection", "Upgrade")]
    assert exchange(sidecar, raw_request(headers=hdrs))[0] == 101


@pytest.mark.parametrize("case", [str.lower, str.upper, str.swapcase])
def test_header_names_are_case_insensitive(sidecar, case):
    hdrs = [(case(k), v) for k, v in upgrade_headers()]
    hdrs = [(k, "WebSocket") if k.lower() == "upgrade" else (k, v) for k, v in hdrs]
    status, headers, _ = exchange(sidecar, raw_request(headers=hdrs))
    assert status == 101
    assert headers.get("sec-websocket-accept") == accept_for(KEY)


# ----------------------------------------------------------------------------- 4.2.2 response


def test_101_carries_upgrade_connection_and_accept(sidecar):
    key = base64.b64encode(bytes(range(16))).decode()
    status, headers, _ = exchange(sidecar, raw_request(headers=upgrade_headers(key=key)))
    assert status == 101
    assert headers.get("upgrade", "").lower() == "websocket"
    assert "upgrade" in [t.strip().lower() for t in headers.get("connection", "").split(",")]
    assert headers.get("sec-websocket-accept") == accept_for(key)


def test_no_extension_is_accepted_that_the_server_does_not_implement(sidecar):
    # permessage-deflate is implemented (test_compression.py); these are not, and a server must
    # not answer with an extension it does not speak (RFC 6455 9.1).
    hdrs = upgrade_headers() + [("Sec-WebSocket-Extensions",
                                 "x-webkit-deflate-frame, permessage-bzip2; level=9, foo")]
    with sidecar.raw_connect() as s:
        s.sendall(raw_request(headers=hdrs))
        status, headers, rest = read_http_head(s)
        assert status == 101
        assert "sec-websocket-extensions" not in headers
        # And the frames that follow use no extension (RSV1 clear), checked by the reader.
        conn = RfcConn(s, rest)
        f = conn.recv_data()
        assert f.opcode == OP_TEXT and b'"connected"' in f.payload


def test_subprotocol_in_the_answer_is_one_the_client_offered(sidecar):
    hdrs = upgrade_headers() + [("Sec-WebSocket-Protocol", "chat, superchat")]
    status, headers, _ = exchange(sidecar, raw_request(headers=hdrs))
    assert status == 101
    chosen = headers.get("sec-websocket-protocol")
    assert chosen is None or chosen in ("chat", "superchat")


def test_no_subprotocol_is_answered_when_none_was_offered(sidecar):
    status, headers, _ = exchange(sidecar, raw_request(headers=upgrade_headers()))
    assert status == 101
    assert "sec-websocket-protocol" not in headers


def test_refusal_is_a_complete_http_response_and_the_server_closes(sidecar):
    with sidecar.raw_connect() as s:
        s.sendall(raw_request(version="HTTP/1.0", headers=upgrade_headers()))
        status, headers, body = read_http_response(s)
        assert status == 505 and int(headers["content-length"]) == len(body)
        assert wait_closed(s, 5) == b""


# ----------------------------------------------------------------------------- handshake timeout


@pytest.fixture
def quick(sidecar_factory):
    """A sidecar whose HTTP phase may last 300 ms."""
    return sidecar_factory(extra_yaml={"websocket": {"handshake_timeout_ms": 300}})


def test_silent_connection_is_closed_after_handshake_timeout(quick):
    t0 = time.monotonic()
    with quick.raw_connect() as s:
        got = wait_closed(s, 5)
    elapsed = time.monotonic() - t0
    # Nothing at all, or a 408: either way no upgrade and the server closed TCP.
    assert got == b"" or got.startswith(b"HTTP/1.1 408"), got
    assert 0.2 <= elapsed < 5, elapsed


def test_half_sent_request_is_closed_after_handshake_timeout(quick):
    with quick.raw_connect() as s:
        s.sendall(b"GET /ws/acme HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        got = wait_closed(s, 5)
    assert b"101" not in got


def test_trickled_request_is_closed_by_the_deadline_from_accept(quick):
    # One byte every 50 ms keeps the socket busy but never completes the head: the deadline
    # counts from accept, not from the last byte.
    t0 = time.monotonic()
    closed = False
    with quick.raw_connect() as s:
        s.sendall(b"GET /ws/acme HTTP/1.1\r\nX-Slow: ")
        for _ in range(100):  # at most ~5 s
            readable, _, _ = select.select([s], [], [], 0.05)
            if readable:
                closed = True
                break
            try:
                s.sendall(b"a")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        if closed:
            wait_closed(s, 5)
    assert closed, "server kept a never-ending handshake open"
    assert time.monotonic() - t0 < 5


def test_completed_upgrade_is_not_subject_to_handshake_timeout(quick):
    conn = RfcConn.open(quick.port)
    # Wait for the timeout to fire on a silent connection opened after the upgrade: by then
    # the upgraded session has been open longer than handshake_timeout_ms too.
    with quick.raw_connect() as silent:
        wait_closed(silent, 5)
    conn.send_frame(OP_TEXT, b'{"type":"ping"}')
    f = conn.recv_data()
    assert f.opcode == OP_TEXT and b'"pong"' in f.payload
    conn.close()


TIMEOUT_SAMPLE = 'sidecar_connections_refused_total{reason="handshake_timeout"}'


def handshake_timeouts(sc) -> float:
    """The handshake-timeout refusal counter, read from the parsed /metrics exposition."""
    status, _, body = sc.http("GET", "/metrics")
    assert status == 200, status
    samples = parse_prometheus(body.decode())
    assert TIMEOUT_SAMPLE in samples, sorted(k for k in samples if "refused" in k)
    return samples[TIMEOUT_SAMPLE]


def test_handshake_timeout_is_counted_in_metrics(quick):
    assert handshake_timeouts(quick) == 0
    for _ in range(2):
        with quick.raw_connect() as s:
            wait_closed(s, 5)
    # Each silent connection is one timeout, counted once (and /metrics requests, answered
    # well within 300 ms, are not).
    wait_until(lambda: handshake_timeouts(quick) >= 2, 5,
               "two handshake timeouts counted in /metrics")
    assert handshake_timeouts(quick) == 2
