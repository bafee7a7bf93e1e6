"""permessage-deflate (RFC 7692, issue 14). Clients we did not write (Python websockets, Node ws,
headless Chromium) receive byte-exact payloads from 0 B to 1 MiB, text and binary, with
compression on and off; a raw socket checks the wire (RSV1, the same compressed bytes for every
recipient of one publication, plain frames for clients that did not negotiate, the answer to each
RFC 7692 section 7 offer); client messages sent compressed reach the inbound stream inflated, and
bad ones close only their own connection (bomb 1009, RSV1 misuse 1002, broken deflate 1007)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import socket
import zlib

import pytest
import websockets

from harness import (HOST, OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT, SLOW, RawWs, connect_ws,
                     encode_frame, read_http_head, recv_message, run, upgrade_request, wait_until,
                     ws_close_code)
from test_browser import browser, driver_script, page_server  # noqa: F401 - fixtures
from test_inbound import wait_entries
from test_node_client import NodeClient, node_client  # noqa: F401 - fixture

OP_CONT = 0x0
BASE = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
OFF = {"compression": {"enabled": False}}


def json_text(n: int) -> bytes:
    """A JSON event of exactly n bytes (n >= 40) that compresses like real events do."""
    head = b'{"type":"SYNC_SUCCESS","items":"'
    body = (b"pfa-123 Zo\xc3\xab \xe2\x9c\x93 " * (n // 10 + 1))
    out = head + body
    out = out[:n - 2]
    while True:  # do not cut a multi-byte character in two
        try:
            out.decode()
            break
        except UnicodeDecodeError:
            out = out[:-1]
    out += b'"}'
    return out + b" " * (n - len(out)) if len(out) < n else out


def binary(n: int) -> bytes:
    """Compressible bytes that are not UTF-8, so they go out as a binary frame."""
    return (b"\xff\x00\x80" + bytes(range(256)) * (n // 256 + 1))[:n]


# (name, payload): 0 B to 1 MiB, text and binary, compressible and not.
PAYLOADS = [
    ("empty", b""),
    ("small-text", b'{"type":"ping-like","n":1}'),
    ("small-binary", b"\xff\xfe\x00\x01"),
    ("2KiB-text", json_text(2048)),
    ("2KiB-binary", binary(2048)),
    ("2KiB-random", random.Random(14).randbytes(2048)),
    ("64KiB-text", json_text(64 * 1024)),
    ("64KiB-binary", binary(64 * 1024)),
    ("1MiB-text", json_text(1024 * 1024)),
    ("1MiB-binary", binary(1024 * 1024)),
]


def is_text(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def metrics(sc) -> str:
    status, _, body = sc.http("GET", "/metrics")
    assert status == 200, body
    return body.decode()


def metric(sc, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", metrics(sc), re.MULTILINE)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def wait_subscribed(redis, channel: str = "org:acme", n: int = 1):
    wait_until(lambda: redis.numsub(channel) >= n, 10 * SLOW, f"{n} subscriber(s) on {channel}")


def inflate(payload: bytes, wbits: int = 15) -> bytes:
    d = zlib.decompressobj(-wbits)
    return d.decompress(payload + b"\x00\x00\xff\xff") + d.flush()


def deflate(payload: bytes, wbits: int = 15, level: int = 6) -> bytes:
    """A message payload as RFC 7692 7.2.1 wants it: raw DEFLATE, sync flush, tail removed."""
    c = zlib.compressobj(level, zlib.DEFLATED, -wbits)
    out = c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def raw_connect(sc, offer: str | None = None, path: str = "/ws/acme") -> RawWs:
    """A raw client that offers `offer` (None: no Sec-WebSocket-Extensions), welcome read."""
    extra = {"Sec-WebSocket-Extensions": offer} if offer is not None else None
    ws = RawWs.connect(sc.port, path, extra=extra)
    welcome = ws.recv_json()
    assert welcome["type"] == "connected", welcome
    return ws


def next_data_frame(ws: RawWs, timeout: float = 10.0):
    """The next data frame, pings answered on the way."""
    while True:
        f = ws.recv_frame(timeout * SLOW)
        assert f is not None, "connection ended"
        if f.opcode == OP_PING:
            ws.send_frame(0xA, f.payload)
            continue
        assert f.opcode in (OP_TEXT, OP_BINARY), f
        return f


# ----------------------------------------------------------------------------- real clients


@pytest.mark.parametrize("enabled", [True, False], ids=["on", "off"])
def test_python_websockets_receives_every_size_byte_exact(sidecar_factory, redis, enabled):
    sc = sidecar_factory(extra_yaml=None if enabled else OFF)

    async def go():
        conn = await connect_ws(sc.ws_url("/ws/acme"), compression="deflate")
        try:
            header = conn.response_headers.get("Sec-WebSocket-Extensions")
            if enabled:
                assert header == BASE + "; client_max_window_bits=15", header
                assert [type(e).__name__ for e in conn.extensions] == ["PerMessageDeflate"]
            else:
                assert header is None and conn.extensions == [], header
            wait_subscribed(redis)
            for name, payload in PAYLOADS:
                assert redis.publish("org:acme", payload) == 1, name
                got = await recv_message(conn, 20)
                if is_text(payload):
                    assert isinstance(got, str) and got.encode() == payload, name
                else:
                    assert isinstance(got, bytes) and got == payload, name
        finally:
            await conn.close()

    run(go())
    built = metric(sc, "sidecar_deflate_frames_built_total")
    if enabled:
        # Every compressible payload of at least min_bytes; the random one went out plain.
        assert built == 6, built
        assert metric(sc, "sidecar_deflate_not_smaller_total") == 1
        assert metric(sc, "sidecar_deflate_bytes_after_total") < \
            metric(sc, "sidecar_deflate_bytes_before_total") / 5
    else:
        assert built == 0 and metric(sc, "sidecar_deflate_negotiated_total") == 0


@pytest.mark.parametrize("enabled", [True, False], ids=["on", "off"])
def test_node_ws_receives_every_size_byte_exact(sidecar_factory, redis, node_client,  # noqa: F811
                                                enabled):
    sc = sidecar_factory(extra_yaml=None if enabled else OFF)
    c = NodeClient(node_client, sc.ws_url("/ws/acme"), "--count", str(len(PAYLOADS) + 1),
                   "--deflate", "--timeout-ms", str(int(60000 * SLOW)))
    try:
        opened = c.event()
        assert opened == {"event": "open",
                          "extensions": "permessage-deflate" if enabled else ""}, opened
        is_bin, welcome = c.message()
        assert not is_bin and json.loads(welcome)["type"] == "connected"
        wait_subscribed(redis)
        for name, payload in PAYLOADS:
            assert redis.publish("org:acme", payload) == 1, name
            is_bin, data = c.message(20)
            assert is_bin == (not is_text(payload)) and data == payload, name
        assert c.event()["event"] == "close"
    finally:
        c.close()
    assert (metric(sc, "sidecar_deflate_frames_queued_total") > 0) == enabled


@pytest.mark.parametrize("enabled", [True, False], ids=["on", "off"])
def test_chromium_receives_every_size_byte_exact(sidecar_factory, redis, browser,  # noqa: F811
                                                 enabled):
    import base64
    sc = sidecar_factory(extra_yaml=None if enabled else OFF)
    page = browser(sc.ws_url("/ws/acme"))
    opened = page.page_event()
    assert opened["event"] == "open", page.seen
    # Chromium offers "permessage-deflate; client_max_window_bits" and reports our answer.
    assert opened["extensions"] == (BASE + "; client_max_window_bits=15" if enabled else ""), \
        opened
    assert json.loads(page.message()["text"])["type"] == "connected"
    wait_subscribed(redis)
    for name, payload in PAYLOADS:
        assert redis.publish("org:acme", payload) == 1, name
        ev = page.message(30)
        if is_text(payload):
            assert ev["binary"] is False and ev["text"].encode() == payload, name
        else:
            assert ev["binary"] is True and base64.b64decode(ev["data_b64"]) == payload, name
    assert (metric(sc, "sidecar_deflate_frames_queued_total") > 0) == enabled


# ----------------------------------------------------------------------------- the wire


def test_one_deflate_per_publication_same_bytes_to_every_recipient(sidecar_factory, redis):
    sc = sidecar_factory()
    a = raw_connect(sc, "permessage-deflate")
    b = raw_connect(sc, "permessage-deflate; client_max_window_bits")
    plain = raw_connect(sc)
    assert a.headers.get("sec-websocket-extensions") == BASE
    assert "sec-websocket-extensions" not in plain.headers
    wait_subscribed(redis)
    payload = json_text(2048)
    assert redis.publish("org:acme", payload) == 1
    fa, fb, fp = next_data_frame(a), next_data_frame(b), next_data_frame(plain)
    # FIN, RSV1, text: compressed, and the very same bytes for both compressing clients.
    assert (fa.fin, fa.rsv, fa.opcode) == (True, 0b100, OP_TEXT), fa
    assert fa.payload == fb.payload and fb.rsv == 0b100
    assert len(fa.payload) < len(payload) // 5
    # No context takeover: each message inflates on its own from an empty window.
    assert inflate(fa.payload) == payload
    assert (fp.rsv, fp.opcode, fp.payload) == (0, OP_TEXT, payload)
    # One deflate for the publication, two compressed deliveries.
    assert metric(sc, "sidecar_deflate_frames_built_total") == 1
    assert metric(sc, "sidecar_deflate_frames_queued_total") == 2

    # Below min_bytes (default 128), and incompressible bytes, go out plain to everyone.
    small = b'{"type":"x","n":12345}'
    noise = random.Random(7).randbytes(4096)
    redis.publish("org:acme", small)
    redis.publish("org:acme", noise)
    for ws in (a, b, plain):
        f = next_data_frame(ws)
        assert (f.rsv, f.opcode, f.payload) == (0, OP_TEXT, small)
        f = next_data_frame(ws)
        assert (f.rsv, f.opcode, f.payload) == (0, OP_BINARY, noise)
    # The next compressible publication deflates from an empty window again: same bytes as a
    # fresh deflate of it, whatever came before.
    redis.publish("org:acme", payload)
    assert next_data_frame(a).payload == fa.payload
    for ws in (a, b, plain):
        ws.close()


def test_min_bytes_and_level_come_from_the_config(sidecar_factory, redis):
    sc = sidecar_factory(extra_yaml={"compression": {"min_bytes": 16, "level": 9}})
    a = raw_connect(sc, "permessage-deflate")
    wait_subscribed(redis)
    small = b'{"type":"x","text":"aaaaaaaaaaaaaaaaaaaaaaaaaaaa"}'
    redis.publish("org:acme", small)
    f = next_data_frame(a)
    assert f.rsv == 0b100 and inflate(f.payload) == small
    big = json_text(4096)
    redis.publish("org:acme", big)
    f = next_data_frame(a)
    assert f.rsv == 0b100 and inflate(f.payload) == big
    assert f.payload == deflate(big, level=9)
    a.close()


def test_server_max_window_bits_is_honoured(sidecar_factory, redis):
    sc = sidecar_factory()
    small = raw_connect(sc, "permessage-deflate; server_max_window_bits=10")
    large = raw_connect(sc, "permessage-deflate")
    assert small.headers["sec-websocket-extensions"] == BASE + "; server_max_window_bits=10"
    wait_subscribed(redis)
    # A random 1500-byte block twice: a 15-bit window reaches back to the first copy, a 10-bit
    # window (1 KiB) cannot. The bytes are exactly zlib's (level 1, memLevel 8) for each window.
    rng = random.Random(3)
    block = bytes(rng.randrange(0x20, 0x7f) for _ in range(1500))
    payload = block + block
    redis.publish("org:acme", payload)
    fs, fl = next_data_frame(small), next_data_frame(large)
    assert fs.rsv == 0b100 and fl.rsv == 0b100
    assert fs.payload == deflate(payload, 10, level=1)
    assert fl.payload == deflate(payload, 15, level=1)
    assert len(fl.payload) < 1600 < len(fs.payload)
    assert inflate(fs.payload, 10) == payload and inflate(fl.payload) == payload
    # Two windows, two deflates; still once per window, not per recipient.
    assert metric(sc, "sidecar_deflate_frames_built_total") == 2
    small.close()
    large.close()


B = BASE
OFFERS = [
    # (offer, the exact answer or None for declined), RFC 7692 section 7.
    ("permessage-deflate", B),
    ("permessage-deflate; server_no_context_takeover", B),
    ("permessage-deflate; client_no_context_takeover", B),
    ("permessage-deflate;server_no_context_takeover;client_no_context_takeover", B),
    ("permessage-deflate; server_max_window_bits=10", B + "; server_max_window_bits=10"),
    ("permessage-deflate; server_max_window_bits=15", B + "; server_max_window_bits=15"),
    ('permessage-deflate; server_max_window_bits="12"', B + "; server_max_window_bits=12"),
    ("permessage-deflate; client_max_window_bits", B + "; client_max_window_bits=15"),
    ("permessage-deflate; client_max_window_bits=9", B + "; client_max_window_bits=9"),
    ('permessage-deflate; client_max_window_bits="11"', B + "; client_max_window_bits=11"),
    # We never ask a client for 8 (zlib would use 9); without an answer the client may use any.
    ("permessage-deflate; client_max_window_bits=8", B),
    ("permessage-deflate; server_max_window_bits=11; client_max_window_bits=13",
     B + "; server_max_window_bits=11; client_max_window_bits=13"),
    # Declined: values out of range or malformed, a value where none belongs, duplicates,
    # unknown parameters, zlib's unsupported 8-bit window.
    ("permessage-deflate; server_max_window_bits=8", None),
    ("permessage-deflate; server_max_window_bits=16", None),
    ("permessage-deflate; server_max_window_bits=09", None),
    ("permessage-deflate; server_max_window_bits", None),
    ("permessage-deflate; client_max_window_bits=0", None),
    ("permessage-deflate; server_no_context_takeover=1", None),
    ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", None),
    ("permessage-deflate; client_no_context_takeover; client_no_context_takeover", None),
    ("permessage-deflate; client_max_window_bits=10; client_max_window_bits=11", None),
    ("permessage-deflate; client_max_window_bits; client_max_window_bits", None),
    ("permessage-deflate; server_max_window_bits=10; server_max_window_bits=10", None),
    ("permessage-deflate; foo", None),
    ("permessage-deflate; x-webkit=1", None),
    ('permessage-deflate; client_max_window_bits="12', None),
    ("permessage-deflate;;", None),
    (", ,", None),
    ("x-webkit-deflate-frame", None),
    ("permessage-deflate, ", B),
    ('"permessage-deflate"', None),
    # Several offers: the first acceptable one wins; others are only skipped.
    ("permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=11",
     B + "; server_max_window_bits=11"),
    ("permessage-deflate; foo, permessage-deflate; client_max_window_bits",
     B + "; client_max_window_bits=15"),
    ("x-webkit-deflate-frame, permessage-deflate", B),
    ("permessage-deflate; server_max_window_bits=12, permessage-deflate", B + "; server_max_window_bits=12"),
    ('permessage-deflate; a="b,c", permessage-deflate', B),
]


def handshake_raw(port: int, extension_lines: list[str]):
    """An upgrade with each of `extension_lines` as its own Sec-WebSocket-Extensions header."""
    req = upgrade_request("/ws/acme").decode("latin-1")[:-2]
    req += "".join(f"Sec-WebSocket-Extensions: {v}\r\n" for v in extension_lines) + "\r\n"
    sock = socket.create_connection((HOST, port), timeout=5)
    sock.sendall(req.encode("latin-1"))
    status, headers, rest = read_http_head(sock, 5)
    assert status == 101, (status, headers)
    ws = RawWs(sock, rest)
    ws.status, ws.headers = status, headers
    assert ws.recv_json()["type"] == "connected"
    return ws


@pytest.mark.parametrize("offer,answer", OFFERS, ids=[repr(o) for o, _ in OFFERS])
def test_each_offer_gets_the_exact_answer_or_is_declined(sidecar, offer, answer):
    ws = handshake_raw(sidecar.port, [offer])
    assert ws.headers.get("sec-websocket-extensions") == answer, ws.headers
    ws.close()


def test_offers_across_several_headers_are_one_list(sidecar_factory, redis):
    sc = sidecar_factory()
    ws = handshake_raw(sc.port, ["permessage-deflate; bogus", "x-foo",
                                 "permessage-deflate; client_max_window_bits=10"])
    assert ws.headers["sec-websocket-extensions"] == B + "; client_max_window_bits=10"
    declined = handshake_raw(sc.port, ["permessage-deflate; bogus", 'x; a="unterminated'])
    assert "sec-websocket-extensions" not in declined.headers
    # A declined client gets plain frames, and the process is still well.
    wait_subscribed(redis, n=1)
    payload = json_text(1024)
    redis.publish("org:acme", payload)
    assert next_data_frame(ws).rsv == 0b100
    f = next_data_frame(declined)
    assert (f.rsv, f.payload) == (0, payload)
    ws.close()
    declined.close()


def test_config_bounds_the_client_window_and_off_negotiates_nothing(sidecar_factory):
    sc = sidecar_factory(extra_yaml={"compression": {"client_max_window_bits": 10}})
    for offer, answer in [
            ("permessage-deflate; client_max_window_bits", B + "; client_max_window_bits=10"),
            ("permessage-deflate; client_max_window_bits=12", B + "; client_max_window_bits=10"),
            ("permessage-deflate; client_max_window_bits=9", B + "; client_max_window_bits=9"),
            # The client did not let us choose: we may not ask, and inflate with 15.
            ("permessage-deflate", B)]:
        ws = handshake_raw(sc.port, [offer])
        assert ws.headers.get("sec-websocket-extensions") == answer, offer
        ws.close()
    off = sidecar_factory(extra_yaml=OFF)
    ws = handshake_raw(off.port, ["permessage-deflate", "permessage-deflate; client_max_window_bits"])
    assert "sec-websocket-extensions" not in ws.headers
    ws.close()


# ----------------------------------------------------------------------------- client messages


def inbound(sidecar_factory, **extra):
    return sidecar_factory(extra_yaml={"inbound": {"stream": "inbound:{org}"}, **extra})


def compressed_frame(payload: bytes, opcode: int = OP_TEXT, **kw) -> bytes:
    return encode_frame(opcode, deflate(payload), rsv=0b100, **kw)


def test_compressed_client_messages_arrive_inflated(sidecar_factory, redis):
    sc = inbound(sidecar_factory)
    # Python websockets compresses what it sends once deflate is agreed.
    sent = [json.dumps({"type": "chat", "text": "héllo ✓ " * n}, ensure_ascii=False)
            for n in (0, 1, 300)]

    async def go():
        conn = await connect_ws(sc.ws_url("/ws/acme"), compression="deflate")
        try:
            for text in sent:
                await conn.send(text)
            entries = await asyncio.to_thread(wait_entries, redis, "inbound:acme", len(sent))
            return [e["data"] for e in entries]
        finally:
            await conn.close()

    assert run(go()) == sent
    # By hand: one message, then one fragmented across three frames with a ping between them
    # (RSV1 on the first frame only).
    ws = raw_connect(sc, "permessage-deflate; client_max_window_bits")
    one = json.dumps({"type": "one", "pad": "x" * 5000}).encode()
    ws.send(compressed_frame(one))
    two = json.dumps({"type": "two", "pad": "yz" * 4000}).encode()
    body = deflate(two)
    third = len(body) // 3
    ws.send(encode_frame(OP_TEXT, body[:third], fin=False, rsv=0b100)
            + encode_frame(OP_PING, b"mid")
            + encode_frame(OP_CONT, body[third:2 * third], fin=False)
            + encode_frame(OP_CONT, body[2 * third:]))
    pong = ws.recv_frame()
    assert pong.opcode == 0xA and pong.payload == b"mid"
    entries = wait_entries(redis, "inbound:acme", len(sent) + 2)
    assert [e["data"].encode() for e in entries[-2:]] == [one, two]
    ws.close()


def bad_connection_closes_with(sc, frames: bytes, code: int, offer="permessage-deflate"):
    ws = raw_connect(sc, offer)
    ws.send(frames)
    assert ws.recv_close(10 * SLOW) == code
    ws.close()


def test_bad_compressed_messages_close_only_their_connection(sidecar_factory, redis):
    sc = inbound(sidecar_factory)  # limits.max_message_bytes: 64 KiB
    bystander = raw_connect(sc, "permessage-deflate")
    plain_bystander = raw_connect(sc)
    wait_subscribed(redis)

    # A bomb: 32 MiB of zeros in about 32 KiB of deflate stream, well under the wire limit.
    bomb = deflate(b"\0" * (32 << 20))
    assert len(bomb) < 65536
    bad_connection_closes_with(sc, encode_frame(OP_TEXT, bomb, rsv=0b100), 1009)
    # Just over the limit when inflated, though small on the wire.
    bad_connection_closes_with(sc, compressed_frame(b"a" * 65537), 1009)
    # RSV1 on a control frame, on a continuation, and without an agreement.
    bad_connection_closes_with(sc, encode_frame(OP_PING, b"", rsv=0b100), 1002)
    bad_connection_closes_with(
        sc, encode_frame(OP_TEXT, b"", fin=False, rsv=0b100)
        + encode_frame(OP_CONT, deflate(b'{"a":1}'), rsv=0b100), 1002)
    bad_connection_closes_with(sc, compressed_frame(b'{"type":"x"}'), 1002, offer=None)
    # RSV2 and RSV3 are never agreed.
    bad_connection_closes_with(sc, encode_frame(OP_TEXT, deflate(b"{}"), rsv=0b010), 1002)
    # Truncated: the stream stops inside a block; garbage: a reserved block type; text that
    # inflates to invalid UTF-8.
    whole = deflate(json.dumps({"type": "t", "pad": "q" * 3000}).encode())
    bad_connection_closes_with(sc, encode_frame(OP_TEXT, whole[:len(whole) // 2], rsv=0b100), 1007)
    bad_connection_closes_with(sc, encode_frame(OP_TEXT, b"\x07\xff\xff\xff", rsv=0b100), 1007)
    bad_connection_closes_with(sc, compressed_frame(b'{"t":"\xff\xfe"}'), 1007)

    # Counted by kind.
    text = metrics(sc)
    assert 'sidecar_inflate_errors_total{kind="too_big"} 2' in text, text
    assert 'sidecar_inflate_errors_total{kind="corrupt"} 2' in text, text
    # Everyone else carries on: compressed and plain deliveries, and inbound messages.
    payload = json_text(3000)
    redis.publish("org:acme", payload)
    f = next_data_frame(bystander)
    assert f.rsv == 0b100 and inflate(f.payload) == payload
    assert next_data_frame(plain_bystander).payload == payload
    bystander.send(compressed_frame(b'{"type":"still-here"}'))
    entries = wait_entries(redis, "inbound:acme", 1)
    assert entries[-1]["data"] == '{"type":"still-here"}'
    bystander.close()
    plain_bystander.close()


def test_websockets_client_sending_a_bomb_gets_1009(sidecar_factory, redis):
    sc = inbound(sidecar_factory, limits={"max_message_bytes": "1MiB"})

    async def go():
        conn = await connect_ws(sc.ws_url("/ws/acme"), compression="deflate")
        await conn.send(json.dumps({"type": "big", "pad": "z" * (2 << 20)}))
        return await ws_close_code(conn, 10)

    assert run(go()) == 1009
    assert sc.running()
