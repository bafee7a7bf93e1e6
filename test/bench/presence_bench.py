#!/usr/bin/env python3
"""What presence (issue 15) costs Redis: a sidecar with presence on, N idle authenticated
connections spread over R rooms (distinct users), then `INFO commandstats` deltas over a window.

    SIDECAR_BIN=build/sidecar python3 test/bench/presence_bench.py [--conns 2000] [--rooms 4]
        [--ttl 30] [--window 30]

Prints the FCALLs and all commands per second while idle (renewals only: one FCALL per room
every ttl/3, whatever the number of members), and during the connect storm. Uses the integration
harness (a private redis-server on a free port, the real binary)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))

import jwt  # noqa: E402

from harness import RedisServer, Sidecar, connect_ws, wait_until  # noqa: E402

SECRET = "presence-bench-secret-with-enough-bytes-0123456789"
ADMIN = "bench-admin"


def commandstats(redis, field: str = "calls") -> dict:
    out = {}
    for line in redis.command("INFO", "commandstats").decode().splitlines():
        if line.startswith("cmdstat_"):
            name, rest = line[len("cmdstat_"):].split(":", 1)
            values = dict(kv.split("=") for kv in rest.split(","))
            out[name] = float(values[field]) if field != "calls" else int(values[field])
    return out


def present(sc, room: str) -> int:
    import json
    status, _, body = sc.http("GET", f"/api/presence?channel=org:{room}",
                              {"Authorization": f"Bearer {ADMIN}"})
    return len(json.loads(body)["users"]) if status == 200 else -1


async def main(args):
    redis = RedisServer().start()
    sc = Sidecar(redis.url, extra_yaml={
        "auth": {"mode": "jwt", "jwt": {"secret": SECRET}},
        "admin": {"token": ADMIN},
        "log": {"level": "info"},
        "limits": {"max_connections_per_ip": 0, "handshakes_per_ip_per_s": 0},
        "presence": [{"channel": "org:{org}", "ttl_s": args.ttl, "events": "org:{org}:presence"}],
    })
    sc.start()
    conns = []
    try:
        exp = int(time.time()) + 3600
        rooms = [f"room{r}" for r in range(args.rooms)]
        redis.command("CONFIG", "RESETSTAT")
        t0 = time.monotonic()
        for start in range(0, args.conns, 100):
            batch = []
            for i in range(start, min(start + 100, args.conns)):
                room = rooms[i % args.rooms]
                tok = jwt.encode({"org": room, "sub": f"user{i}", "exp": exp}, SECRET,
                                 algorithm="HS256")
                batch.append(connect_ws(sc.ws_url(f"/ws/{room}?token={tok}"), timeout=30))
            conns += await asyncio.gather(*batch)
        per_room = args.conns // args.rooms
        wait_until(lambda: all(present(sc, r) >= per_room for r in rooms), 60,
                   "every member present")
        storm_s = time.monotonic() - t0
        storm = commandstats(redis)

        redis.command("CONFIG", "RESETSTAT")
        t1 = time.monotonic()
        await asyncio.sleep(args.window)  # the measured window
        idle = commandstats(redis)
        idle_usec = commandstats(redis, "usec_per_call").get("fcall", 0.0)
        idle_s = time.monotonic() - t1
        client = {k: v for k, v in idle.items() if k in ("fcall", "fcall_ro", "ping", "publish")}
        print(f"presence bench: {args.conns} idle connections, {args.rooms} rooms "
              f"({per_room} members each), ttl_s {args.ttl}")
        print(f"| phase | seconds | FCALL sidecar_presence | FCALL/s | all commands/s "
              f"(incl. inside the function) |")
        print(f"|---|---|---|---|---|")
        print(f"| connect storm | {storm_s:.1f} | {storm.get('fcall', 0)} | "
              f"{storm.get('fcall', 0) / storm_s:.1f} | {sum(storm.values()) / storm_s:.1f} |")
        print(f"| idle | {idle_s:.1f} | {idle.get('fcall', 0)} | "
              f"{idle.get('fcall', 0) / idle_s:.2f} | {sum(idle.values()) / idle_s:.1f} |")
        print(f"idle: {idle_usec:.0f} us of Redis time per FCALL sidecar_presence (renewal)")
        print(f"idle commands from clients: {client}; inside functions: "
              f"{ {k: v for k, v in idle.items() if k not in client} }")
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
        sc.stop()
        sc.cleanup()
        redis.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--conns", type=int, default=2000)
    p.add_argument("--rooms", type=int, default=4)
    p.add_argument("--ttl", type=int, default=30)
    p.add_argument("--window", type=float, default=30.0)
    asyncio.run(main(p.parse_args()))
