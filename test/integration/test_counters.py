"""Per-connection counters count what happened, never by undoing.

The heartbeat used to queue its ping with the fan-out send and then take one off the delivered
count ("a ping is not a message"). When the ping did not fit the byte budget it was never counted,
so the undo made the count one short (and wrapped to 2^64-1 on a connection that had been sent
nothing). This test makes exactly that happen: a client that stops reading, a queue filled to its
budget byte for byte, then the heartbeat's ping is the frame that does not fit."""

from __future__ import annotations

import json
import re
import socket
import threading

from harness import (HOST, OP_PONG, RawWs, encode_frame, read_http_head, upgrade_request,
                     wait_until)

BUDGET = 8 << 20  # limits.max_outbound_bytes
HEARTBEAT_MS = 1500


def frame_size(payload_len: int) -> int:
    """Bytes of an unmasked server frame carrying payload_len bytes."""
    header = 2 if payload_len < 126 else 4 if payload_len < 65536 else 10
    return header + payload_len


def payload_for_frame(size: int) -> int:
    """The payload length whose server frame is exactly size bytes."""
    for header in (2, 4, 10):
        n = size - header
        if n >= 0 and frame_size(n) == size:
            return n
    raise AssertionError(f"no frame is exactly {size} bytes")


def queued_bytes(sc, conn_id: str) -> int | None:
    status, _, body = sc.http("GET", "/api/websocket/status?limit=1000")
    assert status == 200
    for c in json.loads(body)["connections"]:
        if c["id"] == conn_id:
            return c["queuedBytes"]
    return None


def test_a_ping_refused_by_the_budget_leaves_the_delivered_count_exact(sidecar_factory, redis):
    sc = sidecar_factory(extra_yaml={
        "limits": {"max_outbound_bytes": BUDGET},
        "websocket": {"heartbeat_ms": HEARTBEAT_MS, "pong_timeout_ms": 60000},
    })
    # A small receive buffer so that the kernel stops taking bytes early and the rest queues.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect((HOST, sc.port))
    sock.sendall(upgrade_request("/ws/acme"))
    status, _, rest = read_http_head(sock)
    assert status == 101
    ws = RawWs(sock, rest)
    conn_id = ws.recv_json()["connection_id"]
    numeric_id = conn_id.rsplit("-", 1)[1]

    # While the queue is being filled, unsolicited pongs (which need no answer) keep the
    # connection "recently heard from", so the sidecar sends no heartbeat ping yet.
    stop_pongs = threading.Event()

    def keep_quiet_heartbeat():
        while not stop_pongs.wait(0.2):
            sock.sendall(encode_frame(OP_PONG, b"x"))

    pinger = threading.Thread(target=keep_quiet_heartbeat, daemon=True)
    pinger.start()
    try:
        # Fill the kernel buffers until the sidecar itself holds bytes for this client. The
        # kernel's send buffer grows while it is being filled, so a queue only counts once it
        # has stopped shrinking.
        published = 0
        chunk = b"f" * (256 * 1024)
        samples: list[int] = []

        def settled():
            samples.append(queued_bytes(sc, conn_id))
            return len(samples) >= 5 and len(set(samples[-5:])) == 1

        while True:
            assert published < 64, "the queue never started to fill"
            redis.publish("org:acme", chunk)
            published += 1
            samples.clear()
            wait_until(settled, 15, "the queued byte count to settle", interval=0.1)
            if samples[-1] > 0:
                break
        queued = samples[-1]
        room = BUDGET - queued
        assert room >= 2, f"queue already at {queued} of {BUDGET}"
        redis.publish("org:acme", b"t" * payload_for_frame(room))
        published += 1
        wait_until(lambda: queued_bytes(sc, conn_id) == BUDGET, 5, "a queue exactly at budget")
    finally:
        stop_pongs.set()
        pinger.join(5)

    # Now the client falls silent; the next heartbeat ping cannot fit and the slow-consumer
    # close follows. The disconnect line reports how many messages were delivered.
    sc.wait_log(rf"event=slow_consumer conn={numeric_id} .*queued_bytes={BUDGET}\b",
                timeout=HEARTBEAT_MS / 1000 + 10)
    m = sc.wait_log(rf"event=disconnect conn={numeric_id} .*messages_out=(\d+)", timeout=30)
    assert int(m.group(1)) == published, m.group(0)
    sock.close()
