"""The HTTP endpoints an operator relies on: /health, /ready (and its reasons), /metrics as
Prometheus text that promtool accepts and whose values move with traffic, /api/websocket/status in
seed 002's shape with paging and an org filter, the /ws/config discovery document, admin.token,
admin.listen, and log lines in logfmt and JSON."""

from __future__ import annotations

import calendar
import json
import time

import jwt

from harness import connect_ws, free_port, recv_message, run, wait_until
from ops_util import (events, get_json, http_on, json_log_records, parse_prometheus,
                      promtool_check)

ROOM = "org:acme"
JWT_SECRET = "ops-endpoint-test-secret-0123456789"


def metrics(sc, headers=None, port=None) -> dict[str, float]:
    status, hdrs, body = http_on(port or sc.port, "GET", "/metrics", headers)
    assert status == 200, body
    return parse_prometheus(body.decode())


def status_doc(sc, query: str = "", headers=None, port=None) -> dict:
    status, _, doc = get_json(port or sc.port, "/api/websocket/status" + query, headers)
    assert status == 200, doc
    return doc


# ----------------------------------------------------------------------------- /health and /ready


def test_health_answers_200_with_json(sidecar):
    status, headers, doc = get_json(sidecar.port, "/health")
    assert status == 200
    assert "json" in headers.get("content-type", "")
    assert doc["status"] == "ok"
    assert doc["connections"] == 0


def test_endpoints_refuse_methods_other_than_get(sidecar):
    status, headers, _ = sidecar.http("POST", "/health", body=b"{}")
    assert status == 405
    assert "GET" in headers.get("allow", "")


def test_ready_follows_the_redis_link_and_names_the_reason(redis, sidecar):
    status, _, doc = get_json(sidecar.port, "/ready")
    assert (status, doc["status"]) == (200, "ready")

    redis.kill()
    wait_until(lambda: get_json(sidecar.port, "/ready")[0] == 503, 10, "/ready to turn 503")
    status, _, doc = get_json(sidecar.port, "/ready")
    assert doc["status"] == "not_ready"
    assert "redis" in doc["reason"].lower()
    # Liveness must not follow readiness: a Redis outage is no reason to restart the sidecar.
    assert sidecar.http("GET", "/health")[0] == 200

    redis.restart()
    wait_until(lambda: get_json(sidecar.port, "/ready")[0] == 200, 15, "/ready back to 200")


def test_ready_is_503_when_redis_was_never_reachable(sidecar_factory):
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    sc = sidecar_factory(redis_url=nowhere)
    status, _, doc = get_json(sc.port, "/ready")
    assert status == 503
    assert "redis" in doc["reason"].lower()
    assert sc.http("GET", "/health")[0] == 200


# ----------------------------------------------------------------------------- /metrics


def test_metrics_is_prometheus_text_that_promtool_accepts(sidecar):
    async def with_client():
        c = await connect_ws(sidecar.ws_url())
        status, headers, body = sidecar.http("GET", "/metrics")
        await c.close()
        return status, headers, body

    status, headers, body = run(with_client())
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    rc, out = promtool_check(body.decode())
    assert rc == 0, f"promtool check metrics failed:\n{out}\n---\n{body.decode()}"
    samples = parse_prometheus(body.decode())
    for name in ("sidecar_connections_open", "sidecar_redis_connected",
                 "sidecar_redis_messages_total", "sidecar_frames_delivered_total",
                 "sidecar_handshake_duration_seconds_count"):
        assert name in samples, name
    assert samples["sidecar_redis_connected"] == 1


def test_metrics_move_with_clients_and_publishes(redis, sidecar):
    before = metrics(sidecar)
    assert before["sidecar_connections_open"] == 0

    async def main():
        a = await connect_ws(sidecar.ws_url())
        b = await connect_ws(sidecar.ws_url())
        wait_until(lambda: redis.numsub(ROOM) >= 1, 10, "the sidecar to subscribe")
        m = metrics(sidecar)
        assert m["sidecar_connections_open"] == 2
        assert m["sidecar_connections_upgraded_total"] == before[
            "sidecar_connections_upgraded_total"] + 2
        assert m["sidecar_rooms"] >= 1
        for i in range(3):
            redis.publish(ROOM, json.dumps({"type": "SYNC_SUCCESS", "n": i}))
        for c in (a, b):
            for i in range(3):
                assert json.loads(await recv_message(c))["n"] == i
        after = metrics(sidecar)
        assert after["sidecar_redis_messages_total"] == before["sidecar_redis_messages_total"] + 3
        # Three messages to two members of the room.
        assert after["sidecar_frames_delivered_total"] == before[
            "sidecar_frames_delivered_total"] + 6
        assert after["sidecar_bytes_out_total"] > before["sidecar_bytes_out_total"]
        assert after["sidecar_fanout_latency_seconds_count"] >= 1
        await a.close()
        await b.close()

    run(main())
    wait_until(lambda: metrics(sidecar)["sidecar_connections_open"] == 0, 10,
               "connections_open back to 0")


def test_refused_handshakes_are_counted_by_reason(sidecar):
    key = 'sidecar_connections_refused_total{reason="not_found"}'
    before = metrics(sidecar)[key]
    assert sidecar.http("GET", "/no/such/path")[0] == 404
    assert metrics(sidecar)[key] == before + 1


# ----------------------------------------------------------------------------- /api/websocket/status


def test_status_lists_each_connection_in_seed_002_shape(redis, sidecar_factory):
    sc = sidecar_factory(extra_yaml={"auth": {"mode": "jwt", "jwt": {"secret": JWT_SECRET}}})
    token = jwt.encode({"org": "acme", "sub": "alice", "exp": int(time.time()) + 600},
                       JWT_SECRET, algorithm="HS256")

    async def main():
        c = await connect_ws(sc.ws_url(f"/ws/acme?token={token}"),
                             user_agent_header="ops-test-agent/1.0")
        wait_until(lambda: redis.numsub(ROOM) >= 1, 10, "the sidecar to subscribe")
        doc = status_doc(sc)
        assert doc["status"] == "ok"
        assert doc["summary"]["activeConnections"] == 1
        assert doc["summary"]["redisConnected"] is True
        [conn] = doc["connections"]
        assert conn["id"] == c.welcome["connection_id"]
        assert conn["org"] == "acme"
        assert conn["user"] == "alice"
        assert conn["clientInfo"] == {"ip": "127.0.0.1", "userAgent": "ops-test-agent/1.0"}
        assert conn["lastError"] is None
        connected = time.strptime(conn["connectedAt"][:19], "%Y-%m-%dT%H:%M:%S")
        assert abs(time.mktime(connected) - time.mktime(time.gmtime())) < 120
        sent0, bytes0 = conn["messagesSent"], conn["bytesSent"]

        payload = "x" * 300
        for _ in range(3):
            redis.publish(ROOM, payload)
        for _ in range(3):
            assert await recv_message(c) == payload

        def counted():
            [cc] = status_doc(sc)["connections"]
            return cc if cc["messagesSent"] == sent0 + 3 else None

        cc = wait_until(counted, 5, "messagesSent to count three publishes")
        assert cc["bytesSent"] >= bytes0 + 3 * 300
        assert cc["queuedBytes"] == 0
        assert status_doc(sc)["summary"]["totalMessages"] >= 3
        await c.close()

    run(main())
    wait_until(lambda: status_doc(sc)["connections"] == [], 10, "the closed connection to go")


def test_status_keeps_each_connections_org_and_user_agent_as_others_come_and_go(sidecar):
    """Sessions share one copy of an org and of a User-Agent (issue 14's idle memory): a
    connection that leaves must not take its neighbours' strings with it, and a new one with a
    name that was dropped gets it back whole."""
    ua_a = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0"
    ua_b = "ops-agent/2.0"

    def by_id():
        return {c["id"]: c for c in status_doc(sidecar, "?limit=1000")["connections"]}

    async def main():
        a1 = await connect_ws(sidecar.ws_url("/ws/acme"), user_agent_header=ua_a)
        a2 = await connect_ws(sidecar.ws_url("/ws/acme"), user_agent_header=ua_a)
        b1 = await connect_ws(sidecar.ws_url("/ws/globex"), user_agent_header=ua_b)
        ids = {k: c.welcome["connection_id"] for k, c in (("a1", a1), ("a2", a2), ("b1", b1))}
        seen = wait_until(lambda: (lambda d: d if len(d) == 3 else None)(by_id()), 10,
                          "three connections in the status")
        assert seen[ids["a1"]]["clientInfo"]["userAgent"] == ua_a
        assert seen[ids["b1"]]["clientInfo"]["userAgent"] == ua_b
        assert seen[ids["b1"]]["org"] == "globex"

        await a1.close()
        wait_until(lambda: ids["a1"] not in by_id(), 10, "the closed connection to go")
        await b1.close()
        wait_until(lambda: ids["b1"] not in by_id(), 10, "the second closed connection to go")
        left = by_id()[ids["a2"]]
        assert left["org"] == "acme"
        assert left["clientInfo"]["userAgent"] == ua_a
        # Its connection time is where it was: it is derived from the loop clock, not stored.
        assert abs(_iso_ms(left["connectedAt"]) - _iso_ms(seen[ids["a2"]]["connectedAt"])) <= 50

        # globex and ops-agent were dropped with b1; a newcomer brings them back whole.
        b2 = await connect_ws(sidecar.ws_url("/ws/globex"), user_agent_header=ua_b)
        back = wait_until(lambda: by_id().get(b2.welcome["connection_id"]), 10, "the newcomer")
        assert back["org"] == "globex"
        assert back["clientInfo"]["userAgent"] == ua_b
        await a2.close()
        await b2.close()

    run(main())


def _iso_ms(text: str) -> int:
    """Milliseconds since the epoch of the status endpoint's "2026-11-30T00:10:19.123Z"."""
    head, _, frac = text.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S")) * 1000 + int(frac or 0)


def test_status_pages_with_limit_and_offset_and_filters_by_org(sidecar):
    async def main():
        conns = [await connect_ws(sidecar.ws_url("/ws/acme")) for _ in range(5)]
        conns += [await connect_ws(sidecar.ws_url("/ws/globex")) for _ in range(2)]
        seen = []
        for offset in (0, 2, 4, 6):
            doc = status_doc(sidecar, f"?limit=2&offset={offset}")
            assert doc["page"] == {"offset": offset, "limit": 2, "matched": 7}
            assert len(doc["connections"]) == (2 if offset < 6 else 1)
            seen += [c["id"] for c in doc["connections"]]
        assert len(seen) == 7 and len(set(seen)) == 7, seen
        assert status_doc(sidecar, "?offset=7")["connections"] == []

        globex = status_doc(sidecar, "?org=globex")
        assert {c["org"] for c in globex["connections"]} == {"globex"}
        assert len(globex["connections"]) == 2
        assert globex["page"]["matched"] == 2
        assert status_doc(sidecar, "?org=nobody")["connections"] == []
        # The summary counts the whole sidecar whatever the page shows.
        assert globex["summary"]["activeConnections"] == 7
        for c in conns:
            await c.close()

    run(main())


# ----------------------------------------------------------------------------- /ws/config


def test_ws_config_describes_routes_auth_and_limits(sidecar_factory):
    sc = sidecar_factory(extra_yaml={
        "routes": [{"path": "/api/ws/sync/{org}", "channel": "org:{org}"}],
        "websocket": {"heartbeat_ms": 12000},
        "limits": {"max_message_bytes": 4096},
    })
    status, _, doc = get_json(sc.port, "/ws/config")
    assert status == 200
    cfg = doc["websocket_config"]
    assert cfg["endpoints"]["routes"] == ["/api/ws/sync/{org}"]
    assert cfg["endpoints"]["websocket"] == "/api/ws/sync/{org}"
    assert cfg["auth"]["required"] is False
    assert cfg["connection_limits"]["heartbeat_interval"] == 12000
    assert cfg["connection_limits"]["max_message_bytes"] == 4096
    assert cfg["features"]["heartbeat_supported"] is True


def test_ws_config_may_be_read_by_the_origins_that_may_connect(sidecar_factory):
    # No allowlist: every origin may connect, so any page may read discovery ("*", no Vary).
    open_sc = sidecar_factory()
    status, headers, _ = open_sc.http("GET", "/ws/config", {"Origin": "https://any.example"})
    assert status == 200 and headers["access-control-allow-origin"] == "*"
    # An allowlist: only a listed origin is echoed, and caches are told the answer varies.
    sc = sidecar_factory(extra_yaml={"origins": ["https://app.example.com"]})
    status, headers, _ = sc.http("GET", "/ws/config", {"Origin": "https://app.example.com"})
    assert status == 200
    assert headers["access-control-allow-origin"] == "https://app.example.com"
    assert headers["vary"] == "Origin"
    for origin in ("https://evil.example", "null", "https://app.example.com.evil.example"):
        status, headers, _ = sc.http("GET", "/ws/config", {"Origin": origin})
        assert status == 200 and "access-control-allow-origin" not in headers, origin
    status, headers, _ = sc.http("GET", "/ws/config")
    assert "access-control-allow-origin" not in headers and headers["vary"] == "Origin"
    # /health stays as it was: no CORS.
    assert "access-control-allow-origin" not in sc.http("GET", "/health")[1]


# ----------------------------------------------------------------------------- admin.token


def test_admin_token_protects_metrics_and_status_only(sidecar_factory):
    sc = sidecar_factory(extra_yaml={"admin": {"token": "s3cret-admin"}})
    for path in ("/metrics", "/api/websocket/status"):
        status, headers, _ = sc.http("GET", path)
        assert status == 401, path
        assert headers.get("www-authenticate", "").startswith("Bearer")
        assert sc.http("GET", path, {"Authorization": "Bearer wrong-token!"})[0] == 401
        assert sc.http("GET", path, {"Authorization": "Bearer s3cret-admin"})[0] == 200
    # Probes and discovery carry no token.
    for path in ("/health", "/ready", "/ws/config"):
        assert sc.http("GET", path)[0] == 200, path


def test_admin_token_from_environment_overrides_the_file(sidecar_factory):
    sc = sidecar_factory(extra_yaml={"admin": {"token": "from-file"}},
                         env={"SIDECAR_ADMIN_TOKEN": "from-env"})
    assert sc.http("GET", "/metrics", {"Authorization": "Bearer from-file"})[0] == 401
    assert sc.http("GET", "/metrics", {"Authorization": "Bearer from-env"})[0] == 200


# ----------------------------------------------------------------------------- admin.listen


def test_admin_listen_moves_metrics_and_status_to_their_own_port(sidecar_factory):
    admin_port = free_port()
    sc = sidecar_factory(extra_yaml={"admin": {"listen": f"127.0.0.1:{admin_port}",
                                               "token": "adm"}})
    auth = {"Authorization": "Bearer adm"}
    wait_until(lambda: http_on(admin_port, "GET", "/health")[0] == 200, 5, "admin listener")
    for path in ("/metrics", "/api/websocket/status"):
        assert sc.http("GET", path, auth)[0] == 404, f"{path} still on the main listener"
        assert http_on(admin_port, "GET", path, auth)[0] == 200, path
        assert http_on(admin_port, "GET", path)[0] == 401, path
    # Probes stay on the main port, so a platform's probes need no second port.
    assert sc.http("GET", "/health")[0] == 200
    assert sc.http("GET", "/ready")[0] == 200
    # The admin port serves endpoints only, never WebSocket routes.
    assert http_on(admin_port, "GET", "/ws/acme")[0] == 404
    rc, out = promtool_check(http_on(admin_port, "GET", "/metrics", auth)[2].decode())
    assert rc == 0, out


# ----------------------------------------------------------------------------- logs


def test_logfmt_lines_carry_time_level_and_event(redis, sidecar):
    async def main():
        c = await connect_ws(sidecar.ws_url())
        await c.close()

    run(main())
    sidecar.wait_log(r"event=disconnect")
    lines = [line for line in sidecar.log().splitlines() if line.strip()]
    assert lines
    for line in lines:
        assert line.startswith("time="), line
        assert " level=" in line and " event=" in line, line
    assert events(sidecar, "listening")
    assert events(sidecar, "redis_ready")


def test_json_log_format_makes_every_stderr_line_json(redis, sidecar_factory):
    sc = sidecar_factory(extra_yaml={"log": {"format": "json", "level": "debug"}})

    async def main():
        c = await connect_ws(sc.ws_url())
        wait_until(lambda: redis.numsub(ROOM) >= 1, 10, "the sidecar to subscribe")
        redis.publish(ROOM, '{"type":"SYNC_PROCESSING"}')
        await recv_message(c)
        await c.close()

    run(main())
    assert sc.http("GET", "/nowhere")[0] == 404
    sc.wait_log(r'"event":"disconnect"')
    redis.kill()  # a warning or error path as well, not only the happy one
    sc.wait_log(r'"event":"redis_(lost|down)"')
    records = json_log_records(sc.log())
    assert len(records) >= 4
    for r in records:
        assert isinstance(r.get("time"), str) and r["time"], r
        assert r.get("level") in ("debug", "info", "warn", "error"), r
        assert isinstance(r.get("event"), str) and r["event"], r
    names = {r["event"] for r in records}
    assert {"listening", "redis_ready", "disconnect"} <= names
    # Sending SIGTERM and reading the shutdown lines proves they are JSON too.
    sc.send_signal(15)
    assert sc.wait_exit(15) == 0
    names = {r["event"] for r in json_log_records(sc.log())}
    assert "shutdown_complete" in names
