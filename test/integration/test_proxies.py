"""Behind a reverse proxy: X-Forwarded-For names the client only when the TCP peer is listed in
trusted_proxies, and then per-IP limits and the status endpoint use the client's address."""

from __future__ import annotations

import json
import socket

from harness import HOST, read_http_head, upgrade_request, wait_until


def upgrade(sc, forwarded_for: str | None) -> tuple[int, socket.socket]:
    """Opens a raw upgrade with an optional X-Forwarded-For; returns the status and the socket."""
    sock = socket.create_connection((HOST, sc.port), timeout=5)
    extra = {"X-Forwarded-For": forwarded_for} if forwarded_for is not None else None
    sock.sendall(upgrade_request("/ws/acme", extra=extra))
    status = read_http_head(sock)[0]
    return status, sock


def client_ips(sc) -> list[str]:
    status, _, body = sc.http("GET", "/api/websocket/status")
    assert status == 200
    return sorted(c["clientInfo"]["ip"] for c in json.loads(body)["connections"])


def test_forwarded_for_is_ignored_unless_the_peer_is_trusted(sidecar_factory, redis):
    sc = sidecar_factory(extra_yaml={"trusted_proxies": ["10.0.0.0/8"]})
    status, sock = upgrade(sc, "203.0.113.7")
    try:
        assert status == 101
        # The peer (127.0.0.1) is not a trusted proxy, so the client cannot choose its address.
        assert wait_until(lambda: client_ips(sc) == ["127.0.0.1"], 5, "the peer address")
    finally:
        sock.close()


def test_a_trusted_proxy_names_the_client_and_per_ip_limits_count_clients(sidecar_factory,
                                                                           redis):
    sc = sidecar_factory(extra_yaml={"trusted_proxies": ["127.0.0.1"],
                                     "limits": {"max_connections_per_ip": 1}})
    socks = []
    try:
        # Two clients behind the same proxy are two addresses, each within its limit of one.
        for client in ("203.0.113.7", "198.51.100.1"):
            status, sock = upgrade(sc, client)
            socks.append(sock)
            assert status == 101, client
        assert wait_until(lambda: client_ips(sc) == ["198.51.100.1", "203.0.113.7"], 5,
                          "both client addresses in the status endpoint")
        # A second connection of the first client is over its limit; the address the client
        # wrote on the left of the chain does not help it.
        status, sock = upgrade(sc, "6.6.6.6, 203.0.113.7")
        socks.append(sock)
        assert status == 429
        # Without the header the proxy itself is the client, and it has no connection yet.
        status, sock = upgrade(sc, None)
        socks.append(sock)
        assert status == 101
    finally:
        for s in socks:
            s.close()
