#!/usr/bin/env python3
"""Redis time of the presence Function library's renewal and one-user update in a room of N
members, for two versions of sidecar/presence.cpp, in one sitting on one private redis-server.

    /usr/bin/python3 test/bench/presence_function_compare.py OLD.cpp NEW.cpp [--members 10000]
        [--calls 50]
    e.g. OLD.cpp from `git show 51bbea5:sidecar/presence.cpp > /tmp/old_presence.cpp`

Each library is loaded (FUNCTION LOAD REPLACE, text taken from the file's R"LUA(...)LUA"
literal), a room of N users is written by one `full` batch of sidecar A plus one user on sidecar
B, then `--calls` renewals (empty deltas) and `--calls` one-user deltas of A are timed with
INFO commandstats (usec_per_call of FCALL, i.e. Redis's own time, not the network's)."""

from __future__ import annotations

import argparse
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))

from harness import RedisServer  # noqa: E402


def library(path: str) -> str:
    text = open(path).read()
    m = re.search(r'R"LUA\((.*?)\)LUA"', text, re.S)
    if not m:
        sys.exit(f"{path}: no R\"LUA(...)LUA\" literal")
    return m.group(1)


def fcall_usec(redis) -> float:
    for line in redis.command("INFO", "commandstats").decode().splitlines():
        if line.startswith("cmdstat_fcall:"):
            return float(dict(kv.split("=") for kv in line.split(":", 1)[1].split(","))[
                "usec_per_call"])
    return 0.0


def measure(redis, lib: str, members: int, calls: int) -> tuple[float, float]:
    redis.command("FLUSHALL")
    redis.command("FUNCTION", "LOAD", "REPLACE", lib)
    room = [a for i in range(members) for a in (f"user{i}", "1")]
    base = ["1", "org:bench", "aaaa0001", "60000", "org:bench:presence"]
    redis.command("FCALL", "sidecar_presence", *base[:2], "aaaa0001", "60000", "", "full", *room)
    redis.command("FCALL", "sidecar_presence", *base[:2], "bbbb0002", "60000", "", "full",
                  "user0", "1")
    redis.command("CONFIG", "RESETSTAT")
    for _ in range(calls):
        redis.command("FCALL", "sidecar_presence", *base, "delta")
    renewal = fcall_usec(redis)
    redis.command("CONFIG", "RESETSTAT")
    for i in range(calls):
        redis.command("FCALL", "sidecar_presence", *base, "delta", f"user{i}", "2")
    return renewal, fcall_usec(redis)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--members", type=int, default=10000)
    ap.add_argument("--calls", type=int, default=50)
    args = ap.parse_args()
    redis = RedisServer().start()
    try:
        rows = {name: measure(redis, library(path), args.members, args.calls)
                for name, path in (("old", args.old), ("new", args.new))}
    finally:
        redis.stop()
    print(f"presence function, a room of {args.members} members, {args.calls} calls each, "
          f"Redis time per FCALL (usec_per_call)")
    print("| library | renewal (empty delta) | one-user delta |")
    print("|---|---|---|")
    for name, (renewal, delta) in rows.items():
        print(f"| {name} ({getattr(args, name)}) | {renewal:.0f} us | {delta:.0f} us |")
    (ro, do), (rn, dn) = rows["old"], rows["new"]
    print(f"ratio old/new: renewal {ro / rn:.0f}x, one-user delta {do / dn:.0f}x")


if __name__ == "__main__":
    main()
