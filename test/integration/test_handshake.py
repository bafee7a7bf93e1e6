"""The HTTP side and the RFC 6455 handshake, checked byte by byte over raw sockets: real HTTP
answers for bad requests, no Redis work for refused ones, a request split into tiny writes, a
first frame that arrives with the request, and close codes 1007 and 1009."""

from __future__ import annotations

import json
import socket
import time

from harness import (OP_CLOSE, OP_CONT, OP_PING, OP_TEXT, RawWs, encode_frame, read_http_head,
                     read_http_response, upgrade_request, wait_until)


def exchange(sidecar, request: bytes, timeout: float = 5.0):
    """Sends raw bytes and returns the (status, headers, body) of the answer."""
    with sidecar.raw_connect(timeout) as s:
        s.sendall(request)
        return read_http_response(s, timeout)


def org_channels(redis) -> set:
    return {c for c in redis.pubsub_channels() if c.startswith("org:")}


# ----------------------------------------------------------------------------- plain HTTP


def test_health_answers_200_with_json(sidecar):
    status, headers, body = sidecar.http("GET", "/health")
    assert status == 200
    assert "json" in headers.get("content-type", "")
    assert isinstance(json.loads(body), dict)


def test_unknown_path_answers_404(sidecar):
    status, _, _ = sidecar.http("GET", "/definitely/not/here")
    assert status == 404
    status, _, _ = exchange(sidecar, upgrade_request("/not-a-route/acme"))
    assert status == 404


# ----------------------------------------------------------------------------- refused upgrades


def test_upgrade_without_key_answers_400(sidecar):
    status, _, _ = exchange(sidecar, upgrade_request(key=None))
    assert status == 400


def test_upgrade_with_malformed_key_answers_400(sidecar):
    # A valid key is base64 of exactly 16 bytes; these are not.
    for key in ("not-base64!", "c2hvcnQ=", "QUFBQUFBQUFBQUFBQUFBQUFBQUE="):
        status, _, _ = exchange(sidecar, upgrade_request(key=key))
        assert status == 400, f"key {key!r}"


def test_unsupported_version_answers_426_naming_version_13(sidecar):
    status, headers, _ = exchange(sidecar, upgrade_request(version="8"))
    assert status == 426
    assert headers.get("sec-websocket-version") == "13"


def test_invalid_org_answers_400_without_touching_redis(sidecar, redis):
    for org in ("bad%20org", "a" * 129, "x$y"):
        status, _, _ = exchange(sidecar, upgrade_request(f"/ws/{org}"))
        assert status == 400, f"org {org!r}"
    # Redis commands from one sidecar are ordered: once a later valid join is visible, any
    # subscription the refused requests had made would be visible too.
    ws = RawWs.connect(sidecar.port, "/ws/good")
    assert ws.recv_json()["type"] == "connected"
    wait_until(lambda: "org:good" in redis.pubsub_channels(), 10, "SUBSCRIBE org:good")
    assert org_channels(redis) == {"org:good"}
    ws.close()


def test_org_of_128_characters_is_accepted(sidecar):
    org = "A-z.0:_" * 18 + "ab"
    assert len(org) == 128
    ws = RawWs.connect(sidecar.port, f"/ws/{org}")
    welcome = ws.recv_json()
    assert welcome["type"] == "connected" and welcome["org"] == org
    ws.close()


# ----------------------------------------------------------------------------- odd but valid


def test_request_split_into_single_bytes_still_upgrades(sidecar):
    req = upgrade_request("/ws/acme")
    with sidecar.raw_connect() as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(req)):
            s.sendall(req[i:i + 1])
        status, headers, rest = read_http_head(s)
        assert status == 101
        assert headers.get("upgrade", "").lower() == "websocket"
        ws = RawWs(s, rest)
        assert ws.recv_json()["type"] == "connected"


def test_accept_header_is_computed_from_the_key(sidecar):
    # The RFC 6455 example key and its accept value.
    req = upgrade_request(key="dGhlIHNhbXBsZSBub25jZQ==")
    with sidecar.raw_connect() as s:
        s.sendall(req)
        status, headers, _ = read_http_head(s)
    assert status == 101
    assert headers.get("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_first_frame_in_the_same_write_as_the_request_is_answered(sidecar):
    req = upgrade_request("/ws/acme") + encode_frame(OP_TEXT, b'{"type":"ping"}')
    with sidecar.raw_connect() as s:
        s.sendall(req)
        status, _, rest = read_http_head(s)
        assert status == 101
        ws = RawWs(s, rest)
        types = []
        deadline = time.monotonic() + 5
        while "pong" not in types and time.monotonic() < deadline:
            types.append(ws.recv_json(max(deadline - time.monotonic(), 0.001))["type"])
        assert "connected" in types
        assert "pong" in types


# ----------------------------------------------------------------------------- protocol errors


def test_text_frame_with_invalid_utf8_is_closed_with_1007(sidecar):
    ws = RawWs.connect(sidecar.port)
    assert ws.recv_json()["type"] == "connected"
    ws.send_frame(OP_TEXT, b'{"type":"\xff\xfe"}')
    assert ws.recv_close() == 1007
    ws.close()


def test_invalid_utf8_split_across_fragments_is_closed_with_1007(sidecar):
    ws = RawWs.connect(sidecar.port)
    assert ws.recv_json()["type"] == "connected"
    # "é" is C3 A9: valid only as a pair, here cut by a fragment boundary and then broken.
    ws.send_frame(OP_TEXT, b'{"a":"\xc3', fin=False)
    ws.send_frame(OP_CONT, b'("}', fin=True)
    assert ws.recv_close() == 1007
    ws.close()


def test_message_over_default_limit_is_closed_with_1009(sidecar):
    ws = RawWs.connect(sidecar.port)
    assert ws.recv_json()["type"] == "connected"
    ws.send_frame(OP_TEXT, b'"' + b"x" * 65536 + b'"')  # default limit is 65536 bytes
    assert ws.recv_close(10) == 1009
    ws.close()


def test_fragmented_message_over_configured_limit_is_closed_with_1009(sidecar_factory):
    sc = sidecar_factory(extra_yaml={"limits": {"max_message_bytes": 1024}})
    ws = RawWs.connect(sc.port)
    assert ws.recv_json()["type"] == "connected"
    # Each fragment is small; only the sum exceeds the limit.
    ws.send_frame(OP_TEXT, b"x" * 600, fin=False)
    ws.send_frame(OP_CONT, b"x" * 600, fin=True)
    assert ws.recv_close() == 1009
    ws.close()


def test_message_within_configured_limit_is_not_closed(sidecar_factory):
    sc = sidecar_factory(extra_yaml={"limits": {"max_message_bytes": 1024}})
    ws = RawWs.connect(sc.port)
    assert ws.recv_json()["type"] == "connected"
    ping = b'{"type":"ping","pad":"' + b"x" * 900 + b'"}'
    assert len(ping) <= 1024
    ws.send_frame(OP_TEXT, ping)
    assert ws.recv_json()["type"] == "pong"
    ws.send_frame(OP_PING, b"hi")
    f = ws.recv_frame()
    assert f is not None and f.opcode == 0xA and f.payload == b"hi"
    ws.send_frame(OP_CLOSE, b"\x03\xe8")
    assert ws.recv_close() == 1000
    ws.close()
