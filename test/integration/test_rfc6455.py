"""RFC 6455 conformance of the framing layer, one test per MUST that binds a server.

Every test drives the real binary over a raw socket through rfc_util.RfcConn, whose reader checks
each server frame on the way (unmasked, RSV clear, known opcode, short unfragmented control frames,
minimal length encoding, nothing after the close frame). A failed connection must show the close
code the RFC asks for and then the server closing TCP (read to EOF within a bounded time). The
close-code cases are also checked with the ``websockets`` library where it can express them.
test/CONFORMANCE.md maps each RFC section to the tests here.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
import websockets

from harness import connect_ws, run, wait_until
from rfc_util import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RfcConn,
                      build_frame, close_payload)

PING_JSON = b'{"type":"ping"}'


def is_pong_json(frame) -> bool:
    return frame.opcode == OP_TEXT and json.loads(frame.payload).get("type") == "pong"


def assert_alive(conn: RfcConn):
    """Proves the session still works: a JSON ping gets its JSON pong."""
    conn.send_frame(OP_TEXT, PING_JSON)
    f = conn.recv_data()
    assert is_pong_json(f), f"expected a pong, got {f}"


@pytest.fixture
def small(sidecar_factory):
    """A sidecar with a 1 KiB message limit, so size edges are cheap to reach."""
    return sidecar_factory(extra_yaml={"limits": {"max_message_bytes": 1024}})


# ----------------------------------------------------------------------------- 5.1 masking


def test_unmasked_client_frame_fails_with_1002(sidecar):
    conn = RfcConn.open(sidecar.port)
    conn.send_frame(OP_TEXT, PING_JSON, mask=False)
    conn.expect_failure(1002)


def test_unmasked_client_control_frame_fails_with_1002(sidecar):
    conn = RfcConn.open(sidecar.port)
    conn.send_frame(OP_PING, b"hi", mask=False)
    conn.expect_failure(1002)


@pytest.mark.parametrize("size,header_len", [(0, 2), (1, 2), (125, 2), (126, 4), (127, 4),
                                             (65535, 4), (65536, 10), (70000, 10)])
def test_server_frames_are_unmasked_and_minimally_encoded(sidecar, redis, size, header_len):
    conn = RfcConn.open(sidecar.port)
    wait_until(lambda: redis.numsub("org:acme") >= 1, 10, "SUBSCRIBE org:acme")
    payload = b"a" * size
    assert redis.publish("org:acme", payload) == 1
    f = conn.recv_frame()  # check_server_frame rejects masked or non-minimal headers
    assert f is not None and f.opcode == OP_TEXT and f.fin
    assert f.payload == payload
    assert len(f.header) == header_len, f"header {f.header!r} for {size} bytes"


# ----------------------------------------------------------------------------- 5.2 base framing


@pytest.mark.parametrize("rsv", [1, 2, 4, 7])
def test_rsv_bits_without_extension_fail_with_1002(sidecar, rsv):
    conn = RfcConn.open(sidecar.port)
    conn.send_frame(OP_TEXT, PING_JSON, rsv=rsv)
    conn.expect_failure(1002)


def test_rsv_bit_on_a_control_frame_fails_with_1002(sidecar):
    conn = RfcConn.open(sidecar.port)
    conn.send_frame(OP_PING, b"x", rsv=4)
    conn.expect_failure(1002)


@pytest.mark.parametrize("opcode", [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcode_fails_with_1002(sidecar, opcode):
    conn = RfcConn.open(sidecar.port)
    conn.send_frame(opcode, b"x")
    conn.expect_failure(1002)


def test_64bit_length_with_top_bit_set_fails_with_1002(sidecar):
    conn = RfcConn.open(sidecar.port)
    # Only the header: the announced length is 2**63 + 5, which no peer may send.
    conn.send(build_frame(OP_BINARY, b"", length=(1 << 63) + 5, length_form="64"))
    conn.expect_failure(1002)


def test_huge_64bit_length_within_range_fails_with_1009_without_the_payload(sidecar):
    conn = RfcConn.open(sidecar.port)
    # 2**40 bytes announced and only 16 sent: the server must judge the size from the header
    # instead of buffering towards it (RFC 6455 10.4).
    frame = build_frame(OP_TEXT, b"x" * 16, length=1 << 40, length_form="64")
    conn.send(frame)
    conn.expect_failure(1009)


def test_non_minimal_client_length_encoding_fails_with_1002(sidecar):
    # 5.2: "the minimal number of bytes MUST be used to encode the length". wslay treats a frame
    # that breaks it as malformed; this pins that stricter reading so a change is noticed.
    for form in ("16", "64"):
        conn = RfcConn.open(sidecar.port)
        conn.send_frame(OP_TEXT, PING_JSON, length_form=form)
        conn.expect_failure(1002)
        conn.close()


# ----------------------------------------------------------------------------- 5.4 fragmentation


def test_continuation_without_a_start_fails_with_1002(sidecar):
    conn = RfcConn.open(sidecar.port)
    conn.send_frame(OP_CONT, PING_JSON, fin=True)
    conn.expect_failure(1002)


def test_unfinished_continuation_without_a_start_fails_with_1002(sidecar):
    conn = RfcConn.open(sidecar.port)
    conn.send_frame(OP_CONT, b'{"type"', fin=False)
    conn.expect_failure(1002)


@pytest.mark.parametrize("second", [OP_TEXT, OP_BINARY])
def test_new_data_frame_inside_a_fragmented_message_fails_with_1002(sidecar, second):
    conn = RfcConn.open(sidecar.port)
    conn.send_frame(OP_TEXT, b'{"type":', fin=False)
    conn.send_frame(second, b'"ping"}', fin=True)
    conn.expect_failure(1002)


def test_fragmented_ping_with_code_point_split_across_fragments_is_answered(sidecar):
    conn = RfcConn.open(sidecar.port)
    # U+1F600 is F0 9F 98 80; each fragment boundary falls inside it.
    msg = '{"type":"ping","pad":"\U0001F600é"}'.encode()
    cut = msg.index(b"\xf0")
    pieces = [msg[:cut + 1], msg[cut + 1:cut + 2], msg[cut + 2:cut + 3], msg[cut + 3:cut + 5],
              msg[cut + 5:]]
    assert b"".join(pieces) == msg
    conn.send_frame(OP_TEXT, pieces[0], fin=False)
    for p in pieces[1:-1]:
        conn.send_frame(OP_CONT, p, fin=False)
    conn.send_frame(OP_CONT, pieces[-1], fin=True)
    assert is_pong_json(conn.recv_data())


def test_message_in_one_byte_fragments_is_answered(sidecar):
    conn = RfcConn.open(sidecar.port)
    conn.send_frame(OP_TEXT, PING_JSON[:1], fin=False)
    for i in range(1, len(PING_JSON)):
        conn.send_frame(OP_CONT, PING_JSON[i:i + 1], fin=i == len(PING_JSON) - 1)
    assert is_pong_json(conn.recv_data())


def test_empty_fragments_are_allowed(sidecar):
    conn = RfcConn.open(sidecar.port)
    conn.send_frame(OP_TEXT, b"", fin=False)
    conn.send_frame(OP_CONT, PING_JSON, fin=False)
    conn.send_frame(OP_CONT, b"", fin=True)
    assert is_pong_json(conn.recv_data())


def test_invalid_utf8_split_across_fragments_fails_with_1007(sidecar):
    conn = RfcConn.open(sidecar.port)
    # E2 82 starts a 3-byte sequence; the next fragment continues it with an ASCII byte.
    conn.send_frame(OP_TEXT, b'{"a":"\xe2\x82', fin=False)
    conn.send_frame(OP_CONT, b'("}', fin=True)
    conn.expect_failure(1007)


def test_text_message_ending_inside_a_code_point_fails_with_1007(sidecar):
    conn = RfcConn.open(sidecar.port)
    conn.send_frame(OP_TEXT, b'"ok', fin=False)
    conn.send_frame(OP_CONT, b'"\xf0\x9f\x98', fin=True)
    conn.expect_failure(1007)


def test_control_frames_interleaved_in_a_fragmented_message_are_fine(sidecar):
    conn = RfcConn.open(sidecar.port)
    conn.send_frame(OP_TEXT, PING_JSON[:5], fin=False)
    conn.send_frame(OP_PING, b"between")
    conn.send_frame(OP_CONT, PING_JSON[5:9], fin=False)
    conn.send_frame(OP_PONG, b"unsolicited")
    conn.send_frame(OP_CONT, PING_JSON[9:], fin=True)
    # Two answers in either order: the control pong to our ping (5.5.2) and the JSON pong to
    # the reassembled message; nothing else, and the connection stays open.
    got = [conn.recv_frame(), conn.recv_frame()]
    assert all(f is not None for f in got), got
    controls = [f for f in got if f.opcode == OP_PONG]
    datas = [f for f in got if f.opcode == OP_TEXT]
    assert [f.payload for f in controls] == [b"between"], got
    assert len(datas) == 1 and is_pong_json(datas[0]), got
    assert_alive(conn)


# ----------------------------------------------------------------------------- 5.5 control frames


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE])
def test_control_frame_over_125_bytes_fails_with_1002(sidecar, opcode):
    conn = RfcConn.open(sidecar.port)
    payload = close_payload(1000, b"r" * 124) if opcode == OP_CLOSE else b"p" * 126
    assert len(payload) == 126
    conn.send_frame(opcode, payload)
    conn.expect_failure(1002)


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE])
def test_fragmented_control_frame_fails_with_1002(sidecar, opcode):
    conn = RfcConn.open(sidecar.port)
    payload = close_payload(1000) if opcode == OP_CLOSE else b"frag"
    conn.send_frame(opcode, payload, fin=False)
    conn.expect_failure(1002)


def test_control_frame_of_exactly_125_bytes_is_accepted(sidecar):
    conn = RfcConn.open(sidecar.port)
    conn.send_frame(OP_PING, b"z" * 125)
    f = conn.recv_frame()
    assert f is not None and f.opcode == OP_PONG and f.payload == b"z" * 125


# ----------------------------------------------------------------------------- 5.5.2 / 5.5.3


@pytest.mark.parametrize("payload", [b"", b"hello", bytes(range(125)), b"\xff\xfe\x00"])
def test_ping_is_answered_with_pong_carrying_the_same_payload(sidecar, payload):
    conn = RfcConn.open(sidecar.port)
    conn.send_frame(OP_PING, payload)
    f = conn.recv_frame()
    assert f is not None and f.opcode == OP_PONG and f.payload == payload


def test_unsolicited_pong_is_ignored(sidecar):
    conn = RfcConn.open(sidecar.port)
    conn.send_frame(OP_PONG, b"nobody asked")
    conn.send_frame(OP_PONG, b"")
    # The next thing the server sends is the answer to this ping, not a close or an error.
    assert_alive(conn)


# ----------------------------------------------------------------------------- 5.6 / 8.1 data


def test_text_frame_with_invalid_utf8_fails_with_1007(sidecar):
    conn = RfcConn.open(sidecar.port)
    conn.send_frame(OP_TEXT, b'{"type":"\xc0\xaf"}')  # an overlong "/"
    conn.expect_failure(1007)


def test_text_frame_with_utf16_surrogate_fails_with_1007(sidecar):
    conn = RfcConn.open(sidecar.port)
    conn.send_frame(OP_TEXT, b'"\xed\xa0\x80"')  # U+D800 encoded as UTF-8
    conn.expect_failure(1007)


def test_binary_frame_with_invalid_utf8_is_not_a_protocol_error(sidecar):
    conn = RfcConn.open(sidecar.port)
    conn.send_frame(OP_BINARY, b"\xff\xfe")
    f = conn.recv_data()
    # Binary is unsupported by the application, not by the protocol: an error reply, still open.
    assert f.opcode == OP_TEXT and json.loads(f.payload)["type"] == "error"
    assert_alive(conn)


# ----------------------------------------------------------------------------- 10.4 size limits


def test_text_message_of_exactly_max_message_bytes_is_accepted(small):
    conn = RfcConn.open(small.port)
    msg = b'{"type":"ping","pad":"' + b"x" * (1024 - 24) + b'"}'
    assert len(msg) == 1024
    conn.send_frame(OP_TEXT, msg)
    assert is_pong_json(conn.recv_data())


def test_text_message_one_byte_over_max_message_bytes_fails_with_1009(small):
    conn = RfcConn.open(small.port)
    msg = b'{"type":"ping","pad":"' + b"x" * (1025 - 24) + b'"}'
    assert len(msg) == 1025
    conn.send_frame(OP_TEXT, msg)
    conn.expect_failure(1009)


def test_fragmented_message_one_byte_over_max_message_bytes_fails_with_1009(small):
    conn = RfcConn.open(small.port)
    conn.send_frame(OP_TEXT, b'"' + b"x" * 511, fin=False)
    conn.send_frame(OP_CONT, b"x" * 512, fin=False)  # exactly 1024 so far
    conn.send_frame(OP_CONT, b'"', fin=True)
    conn.expect_failure(1009)


# ----------------------------------------------------------------------------- 5.5.1 / 7 closing


VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000,
               3999, 4000, 4999]
INVALID_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CODES)
def test_close_with_valid_code_is_echoed_and_server_closes_tcp(sidecar, code):
    conn = RfcConn.open(sidecar.port)
    conn.send_frame(OP_CLOSE, close_payload(code, b"bye"))
    f = conn.recv_close()
    assert f.close_code == code  # 5.5.1: the echo typically carries the same code
    assert conn.wait_eof() == b""  # 7.1.1: the server closes TCP after the handshake


def test_close_without_payload_is_answered_and_server_closes_tcp(sidecar):
    conn = RfcConn.open(sidecar.port)
    conn.send_frame(OP_CLOSE, b"")
    f = conn.recv_close()
    # 1005 must never go on the wire; an empty close or 1000 are the valid answers.
    assert f.payload == b"" or f.close_code == 1000, f.payload
    assert conn.wait_eof() == b""


@pytest.mark.parametrize("code", INVALID_CODES)
def test_close_with_invalid_code_fails_with_1002(sidecar, code):
    conn = RfcConn.open(sidecar.port)
    conn.send_frame(OP_CLOSE, close_payload(code))
    conn.expect_failure(1002)


def test_close_with_one_byte_payload_fails_with_1002(sidecar):
    conn = RfcConn.open(sidecar.port)
    conn.send_frame(OP_CLOSE, b"\x03")
    conn.expect_failure(1002)


@pytest.mark.parametrize("reason", [b"\xff", b"ok\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"])
def test_close_reason_with_invalid_utf8_fails_with_1007(sidecar, reason):
    conn = RfcConn.open(sidecar.port)
    conn.send_frame(OP_CLOSE, close_payload(1000, reason))
    conn.expect_failure(1007)


def test_close_reason_with_valid_multibyte_utf8_is_echoed(sidecar):
    conn = RfcConn.open(sidecar.port)
    conn.send_frame(OP_CLOSE, close_payload(1000, "bye \U0001F44B".encode()))
    assert conn.recv_close().close_code == 1000
    assert conn.wait_eof() == b""


def test_no_data_frame_follows_the_servers_close_frame(sidecar, redis):
    conn = RfcConn.open(sidecar.port)
    wait_until(lambda: redis.numsub("org:acme") >= 1, 10, "SUBSCRIBE org:acme")
    conn.send_frame(OP_CLOSE, close_payload(1000))
    # Publishes racing the close: data may precede the close frame but never follow it; the
    # reader raises if any byte arrives after the close frame.
    for i in range(50):
        redis.publish("org:acme", f'{{"n":{i}}}')
    assert conn.recv_close(10).close_code == 1000
    assert conn.wait_eof() == b""


def test_frames_after_the_clients_close_are_ignored(sidecar):
    conn = RfcConn.open(sidecar.port)
    # Close and a ping in one write: after a close, the server must not answer more frames.
    conn.send(build_frame(OP_CLOSE, close_payload(1000)) + build_frame(OP_PING, b"late"))
    f = conn.recv_frame()
    assert f is not None and f.opcode == OP_CLOSE and f.close_code == 1000
    assert conn.wait_eof() == b""


def test_server_initiated_close_drops_tcp_when_the_peer_never_answers(sidecar_factory):
    sc = sidecar_factory(extra_yaml={"websocket": {"idle_timeout_ms": 200,
                                                   "close_timeout_ms": 300}})
    conn = RfcConn.open(sc.port)
    t0 = time.monotonic()
    f = conn.recv_close(10)
    assert f.close_code == 1000
    # We never answer; the server gives up after close_timeout_ms and closes TCP itself.
    assert conn.wait_eof(10) == b""
    assert time.monotonic() - t0 < 8


def test_server_initiated_close_completes_when_the_peer_answers(sidecar_factory):
    sc = sidecar_factory(extra_yaml={"websocket": {"idle_timeout_ms": 200,
                                                   "close_timeout_ms": 60000}})
    conn = RfcConn.open(sc.port)
    assert conn.recv_close(10).close_code == 1000
    conn.send_frame(OP_CLOSE, close_payload(1000))
    # close_timeout is a minute, so an EOF within 5 s is the server closing TCP on our answer.
    assert conn.wait_eof(5) == b""


# ----------------------------------------------------------------------------- with websockets


async def _websockets_close(url: str, code: int) -> tuple[int | None, bool]:
    conn = await connect_ws(url)
    await conn.close(code, "done")
    return (conn.close_rcvd.code if conn.close_rcvd else None), conn.closed


@pytest.mark.parametrize("code", [1000, 1001, 1013, 3000, 4999])
def test_websockets_client_close_codes_are_echoed(sidecar, code):
    got, closed = run(_websockets_close(sidecar.ws_url(), code), 15)
    assert closed and got == code


async def _websockets_raw_close(url: str, payload: bytes) -> int | None:
    conn = await connect_ws(url)
    # The library refuses to send invalid codes through close(); write_frame sends the bytes
    # as given, and the library then reads the server's answer like any client would.
    await conn.write_frame(True, OP_CLOSE, payload)
    try:
        await asyncio.wait_for(conn.wait_closed(), 10)
    finally:
        conn.transport.abort()
    return conn.close_rcvd.code if conn.close_rcvd else None


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000])
def test_websockets_client_sees_1002_for_invalid_close_codes(sidecar, code):
    assert run(_websockets_raw_close(sidecar.ws_url(), close_payload(code)), 15) == 1002


def test_websockets_client_sees_1002_for_one_byte_close(sidecar):
    assert run(_websockets_raw_close(sidecar.ws_url(), b"\x03"), 15) == 1002


def test_websockets_client_sees_1007_for_invalid_utf8_close_reason(sidecar):
    assert run(_websockets_raw_close(sidecar.ws_url(), close_payload(1000, b"\xff")), 15) == 1007


def test_websockets_reports_invalid_close_code_in_connection_closed(sidecar):
    async def go():
        conn = await connect_ws(sidecar.ws_url())
        await conn.write_frame(True, OP_CLOSE, close_payload(1005))
        with pytest.raises(websockets.ConnectionClosed) as info:
            await asyncio.wait_for(conn.recv(), 10)
        return info.value.rcvd.code if info.value.rcvd else None

    assert run(go(), 15) == 1002


# ----------------------------------------------------------------------------- the table itself


def test_conformance_table_names_only_tests_that_exist():
    """test/CONFORMANCE.md may only call a row proven when every test it names exists."""
    here = Path(__file__).resolve().parent
    table = (here.parent / "CONFORMANCE.md").read_text()
    sources = {p.name: p.read_text() for p in here.glob("test_*.py")}
    own = ("test_rfc6455.py", "test_http_handshake_limits.py")
    missing = []
    for row in (line for line in table.splitlines() if line.startswith("| ")):
        for name in re.findall(r"`((?:\w+\.py::)?test_\w+)(?:\[[^\]]*\])?`", row):
            file, _, test = name.rpartition("::")
            where = [file] if file else own
            if not any(re.search(rf"^(async )?def {test}\(", sources.get(f, ""), re.M)
                       for f in where):
                missing.append(name)
    assert not missing, f"CONFORMANCE.md names tests that do not exist: {missing}"
