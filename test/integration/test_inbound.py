"""Client-to-backend messages: with inbound.stream "inbound:{org}" every JSON object a client sends
is added to its org's Redis stream with org, user, conn and data fields, read back here with
`redis-cli XRANGE`; invalid JSON and non-objects get an INVALID_JSON error and the connection stays
open; without inbound.stream other messages get UNSUPPORTED and the connection stays open."""

from __future__ import annotations

import json
import time

import jwt
import pytest

from harness import OP_BINARY, OP_TEXT, encode_frame, wait_until
from security_util import accepted, assert_delivery, close_all, next_non_probe

SECRET = "inbound-test-secret-0123456789abcdef"


def xrange(redis, stream: str) -> list[dict]:
    """``redis-cli --json XRANGE stream - +`` as a list of {"id", field: value...}."""
    out = json.loads(redis.cli("-2", "--json", "XRANGE", stream, "-", "+"))
    entries = []
    for entry_id, fields in out:
        e = dict(zip(fields[::2], fields[1::2]))
        assert "id" not in e
        e["id"] = entry_id
        entries.append(e)
    return entries


def wait_entries(redis, stream: str, n: int, timeout: float = 5.0) -> list[dict]:
    wait_until(lambda: redis.command("XLEN", stream) >= n, timeout, f"{n} entries in {stream}")
    return xrange(redis, stream)


def inbound_sidecar(sidecar_factory, auth: bool = False, maxlen: int | None = None, **extra):
    cfg = {"inbound": {"stream": "inbound:{org}"}}
    if maxlen is not None:
        cfg["inbound"]["maxlen"] = maxlen
    if auth:
        cfg["auth"] = {"mode": "jwt", "jwt": {"secret": SECRET}}
    cfg.update(extra)
    return sidecar_factory(extra_yaml=cfg)


def send_text(ws, text: str | bytes):
    ws.send_frame(OP_TEXT, text.encode() if isinstance(text, str) else text)


def expect_error(ws, code: str):
    msg = json.loads(next_non_probe(ws))
    assert msg["type"] == "error" and msg["code"] == code, msg
    assert msg["recoverable"] is True and isinstance(msg["message"], str), msg


def expect_pong(ws):
    msg = json.loads(next_non_probe(ws))
    assert msg["type"] == "pong" and isinstance(msg["timestamp"], int), msg


# ----------------------------------------------------------------------------- forwarding


def test_messages_are_added_to_the_org_stream_verbatim(sidecar_factory, redis):
    sc = inbound_sidecar(sidecar_factory, auth=True)
    tok = jwt.encode({"org": "acme", "sub": "alice", "exp": int(time.time()) + 300}, SECRET)
    ws = accepted(sc, redis, "/ws/acme", {"Authorization": f"Bearer {tok}"})
    sent = ['{"type":"chat","text":"hello"}',
            '{ "type" : "chat", "text" : "spaces kept",  "n": [1, 2.5, null, true] }',
            json.dumps({"type": "cursor", "text": "héllo ✓ 𝄞", "nested": {"a": {"b": []}}},
                       ensure_ascii=False),
            '{}']
    for text in sent:
        send_text(ws, text)
    entries = wait_entries(redis, "inbound:acme", len(sent))
    assert len(entries) == len(sent), entries
    for e, text in zip(entries, sent):
        assert e["org"] == "acme", e
        assert e["user"] == "alice", e
        assert e["conn"] == ws.welcome["connection_id"], e
        assert e["data"] == text, e  # in order, byte for byte
        assert set(e) == {"id", "org", "user", "conn", "data"}, e
    close_all(ws)


def test_each_org_has_its_own_stream_and_anonymous_user_is_empty(sidecar_factory, redis):
    sc = inbound_sidecar(sidecar_factory)
    a = accepted(sc, redis, "/ws/acme")
    b = accepted(sc, redis, "/ws/beta")
    send_text(a, '{"from":"acme"}')
    send_text(b, '{"from":"beta"}')
    ea = wait_entries(redis, "inbound:acme", 1)
    eb = wait_entries(redis, "inbound:beta", 1)
    assert [e["data"] for e in ea] == ['{"from":"acme"}'], ea
    assert [e["data"] for e in eb] == ['{"from":"beta"}'], eb
    assert ea[0]["user"] == "" and ea[0]["org"] == "acme", ea
    assert ea[0]["conn"] == a.welcome["connection_id"]
    assert eb[0]["conn"] == b.welcome["connection_id"]
    assert ea[0]["conn"] != eb[0]["conn"]
    close_all(a, b)


def test_ping_is_answered_not_forwarded(sidecar_factory, redis):
    sc = inbound_sidecar(sidecar_factory)
    ws = accepted(sc, redis, "/ws/acme")
    send_text(ws, '{"type":"ping"}')
    expect_pong(ws)
    send_text(ws, '{"type":"marker"}')
    entries = wait_entries(redis, "inbound:acme", 1)
    assert [e["data"] for e in entries] == ['{"type":"marker"}'], entries
    close_all(ws)


def test_stream_is_trimmed_near_maxlen(sidecar_factory, redis):
    sc = inbound_sidecar(sidecar_factory, maxlen=10, limits={"inbound_rate": 100000,
                                                             "inbound_burst": 100000})
    ws = accepted(sc, redis, "/ws/acme")
    n = 600
    ws.send(b"".join(encode_frame(OP_TEXT, b'{"i":%d}' % i) for i in range(n)))
    last = '{"i":%d}' % (n - 1)

    def last_arrived():
        top = redis.command("XREVRANGE", "inbound:acme", "+", "-", "COUNT", 1)
        return bool(top) and dict(zip(top[0][1][::2], top[0][1][1::2]))[b"data"] == last.encode()

    wait_until(last_arrived, 10, "the last message in the stream")
    # MAXLEN ~ trims whole macro nodes, so the length is approximate, but far below n.
    assert redis.command("XLEN", "inbound:acme") < n // 2
    close_all(ws)


# ----------------------------------------------------------------------------- refusals that keep the session


@pytest.mark.parametrize("text", ["not json", '{"type":', '{"a":1}}', "[1,2,3]", '"a string"',
                                  "42", "null", "true", "", "{'single':'quotes'}"])
def test_invalid_json_or_non_object_gets_invalid_json_and_stays_open(sidecar_factory, redis,
                                                                     text):
    sc = inbound_sidecar(sidecar_factory)
    ws = accepted(sc, redis, "/ws/acme")
    send_text(ws, text)
    expect_error(ws, "INVALID_JSON")
    send_text(ws, '{"type":"ping"}')
    expect_pong(ws)
    # Nothing of the invalid message reached the stream: the first entry is the next valid one.
    send_text(ws, '{"after":true}')
    entries = wait_entries(redis, "inbound:acme", 1)
    assert [e["data"] for e in entries] == ['{"after":true}'], entries
    close_all(ws)


def test_too_deep_json_gets_invalid_json(sidecar_factory, redis):
    sc = inbound_sidecar(sidecar_factory, limits={"max_json_depth": 4})
    ws = accepted(sc, redis, "/ws/acme")
    send_text(ws, '{"a":{"b":{"c":{"d":{}}}}}')  # depth 5
    expect_error(ws, "INVALID_JSON")
    send_text(ws, '{"a":{"b":{"c":[]}}, "s":"{{{{{{{{"}')  # depth 4; braces in strings do not count
    entries = wait_entries(redis, "inbound:acme", 1)
    assert [e["data"] for e in entries] == ['{"a":{"b":{"c":[]}}, "s":"{{{{{{{{"}'], entries
    send_text(ws, '{"type":"ping"}')
    expect_pong(ws)
    close_all(ws)


def test_binary_message_gets_unsupported_and_stays_open(sidecar_factory, redis):
    sc = inbound_sidecar(sidecar_factory)
    ws = accepted(sc, redis, "/ws/acme")
    ws.send_frame(OP_BINARY, b'{"type":"chat"}')
    expect_error(ws, "UNSUPPORTED")
    send_text(ws, '{"type":"ping"}')
    expect_pong(ws)
    assert redis.command("XLEN", "inbound:acme") == 0
    close_all(ws)


def test_without_inbound_stream_messages_get_unsupported_and_stay_open(sidecar, redis):
    ws = accepted(sidecar, redis, "/ws/acme")
    for text in ['{"type":"chat","text":"hi"}', '{}']:
        send_text(ws, text)
        expect_error(ws, "UNSUPPORTED")
    send_text(ws, "not json")
    expect_error(ws, "INVALID_JSON")
    send_text(ws, '{"type":"ping"}')
    expect_pong(ws)
    # Still a full member of its room, and no stream was created anywhere.
    assert_delivery(redis, ws)
    assert redis.command("KEYS", "*") == []
    close_all(ws)
