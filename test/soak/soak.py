#!/usr/bin/python3
"""Soak test: the real sidecar under light, steady, changing load for many minutes.

It starts a private redis-server on a free loopback port and the sidecar binary (``--bin``), then
for ``--minutes`` runs, all at once:

- steady clients, a few per room, that stay connected throughout and record every
  sequence-numbered message they receive (text and binary);
- a publisher that PUBLISHes at a steady rate, round-robin over the rooms, with sizes from a few
  bytes to a few KiB, one in ten a binary (invalid UTF-8) payload;
- churn: short-lived clients that connect, read a little and leave, some with a close handshake
  and some by dropping TCP, at a bounded rate and with a bounded number open at once;
- a SIGHUP (config reload) every ``reload_every`` seconds;
- one Redis restart (SIGKILL, a few seconds down, start on the same port) at half time.

Every 10 s it samples the sidecar's RSS, its open file descriptors (/proc/PID/fd), its session
count and the loss so far, and prints one row. At the end it stops the churn, checks that the
descriptors came back to the baseline, sends SIGTERM and checks the exit code.

Verdict (last line, PASS or FAIL with the reasons):
- RSS: last sample minus the first sample after warm-up must not exceed 10 % + 2 MiB;
- fds: after churn has ended, within +-4 of the baseline taken before churn started;
- loss: every message whose PUBLISH succeeded must reach every steady client of its room, once
  and in order, except messages published inside the Redis outage window: from 0.25 s before the
  kill (replies already on the wire when Redis died) until 1 s after the sidecar logs redis_ready;
- steady clients stay connected the whole time (a Redis outage must not disconnect them);
- reloads: each SIGHUP logs "reloaded", none "reload_rejected";
- churn connects fail only inside the outage window;
- the sidecar never exits by itself and exits 0 on the final SIGTERM.

Only 127.0.0.1 is used; only processes started here are signalled, by pid; every loop is bounded
in time and count. Debian 12's websockets 10.4 is used through its legacy asyncio API.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import struct
import sys
import time
from pathlib import Path

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from harness import HOST, RedisServer, Sidecar, connect_ws, resp_encode  # noqa: E402

SAMPLE_EVERY_S = 10.0
RSS_TOLERANCE = 0.10          # relative growth allowed after warm-up
RSS_SLACK_KIB = 2 * 1024      # plus this much absolute growth
FD_TOLERANCE = 4              # fds may differ from the baseline by this much at the end
WINDOW_BEFORE_KILL_S = 0.25   # replies already on the wire when Redis is killed
WINDOW_AFTER_READY_S = 1.0    # after redis_ready, the re-SUBSCRIBE may still be on its way
REDIS_DOWN_S = 3.0            # how long Redis stays down
BINARY_MARK = b"\xff\xfeSOAK"  # invalid UTF-8, so the sidecar relays it as a binary frame


def log(msg: str):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def note_pids(*pids: int):
    """Writes the pids of the processes we started to $SOAK_PIDFILE, so that scripts/soak.sh can
    stop them even if this driver is killed before its own cleanup runs."""
    path = os.environ.get("SOAK_PIDFILE")
    if path:
        Path(path).write_text("".join(f"{p}\n" for p in pids if p))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Ledger:
    """What was published: per room, (seq, monotonic send time) in publication order; a publish
    whose reply did not arrive is absent."""

    def __init__(self, rooms: int):
        self.sent: list[list[tuple[int, float]]] = [[] for _ in range(rooms)]
        self.failed_publishes = 0
        self.zero_receivers = 0
        self.windows: list[tuple[float, float]] = []  # outage windows, monotonic

    def in_window(self, t: float) -> bool:
        return any(a <= t <= b for a, b in self.windows)


class SteadyClient:
    def __init__(self, room: int, idx: int):
        self.room = room
        self.idx = idx
        self.got = bytearray()  # got[seq] == 1: received (a bytearray: 30 minutes stay small)
        self.last_seq = -1
        self.checked = 0  # how far into the room's ledger the loss count has looked
        self.expected = self.lost = self.lost_in = 0
        self.out_of_order = 0
        self.duplicates = 0
        self.unparsed = 0
        self.closed: str | None = None  # why it ended, if it did before the end
        self.conn = None

    def on_message(self, msg):
        seq = parse_seq(msg, self.room)
        if seq is None:
            self.unparsed += 1
            return
        if seq >= len(self.got):
            self.got.extend(bytes(seq + 1024 - len(self.got)))
        if self.got[seq]:
            self.duplicates += 1
        elif seq < self.last_seq:
            self.out_of_order += 1
        self.got[seq] = 1
        self.last_seq = max(self.last_seq, seq)

    def has(self, seq: int) -> bool:
        return seq < len(self.got) and self.got[seq] == 1


def parse_seq(msg, room: int) -> int | None:
    """The seq of a soak message for ``room``, None for anything else (pings are handled by the
    library; the sidecar's own JSON messages have a "type")."""
    if isinstance(msg, bytes):
        if not msg.startswith(BINARY_MARK) or len(msg) < len(BINARY_MARK) + 8:
            return None
        r, s = struct.unpack("!II", msg[len(BINARY_MARK):len(BINARY_MARK) + 8])
        return s if r == room else None
    try:
        obj = json.loads(msg)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("room") != room or not isinstance(obj.get("seq"), int):
        return None
    return obj["seq"]


def make_payload(room: int, seq: int, rng: random.Random) -> bytes:
    size = rng.choice((16, 64, 200, 700, 1500, 4000))
    if seq % 10 == 7:
        return BINARY_MARK + struct.pack("!II", room, seq) + rng.randbytes(size)
    return json.dumps({"room": room, "seq": seq, "pad": "x" * size}).encode()


class Soak:
    def __init__(self, args):
        self.args = args
        self.duration = args.minutes * 60.0
        self.rooms = args.rooms
        self.rng = random.Random(args.seed)
        self.ledger = Ledger(self.rooms)
        self.redis = RedisServer()
        self.sidecar: Sidecar | None = None
        self.steady: list[SteadyClient] = []
        self.t0 = 0.0
        self.samples: list[dict] = []
        self.problems: list[str] = []
        self.churn_ok = 0
        self.churn_failed_outside = 0
        self.churn_failed_inside = 0
        self.churn_open = 0
        self.churn_reasons: dict[str, int] = {}
        self.reloads_sent = 0
        self.redis_restarts = 0
        self.redis_pub_ok = 0
        self.fd_baseline = -1
        self.fatal = False

    # ------------------------------------------------------------------ processes

    def start_processes(self):
        self.redis.start()
        log(f"redis-server pid {self.redis.proc.pid} on {HOST}:{self.redis.port}")
        # info level: debug would log every connect of the churn. The heartbeat is short so that
        # pings run often over a soak; idle timeout stays off (steady clients only listen).
        self.sidecar = Sidecar(self.redis.url, extra_yaml={
            "log": {"level": "info"},
            "websocket": {"heartbeat_ms": 5000},
        })
        os.environ["SIDECAR_BIN"] = self.args.bin  # what harness.Sidecar starts
        self.sidecar.start(timeout=20)
        log(f"sidecar pid {self.sidecar.pid} on {HOST}:{self.sidecar.port} ({self.args.bin}); "
            f"log {self.sidecar.log_path}")
        note_pids(self.redis.proc.pid, self.sidecar.pid)
        self.sidecar.wait_log(r"event=redis_ready", timeout=20)

    def count_log(self, event: str) -> int:
        return len(re.findall(rf"event={event}\b", self.sidecar.log()))

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def done(self) -> bool:
        return self.elapsed() >= self.duration or self.fatal

    # ------------------------------------------------------------------ tasks

    async def run_steady(self, c: SteadyClient):
        url = self.sidecar.ws_url(f"/ws/soak{c.room}")
        try:
            c.conn = await connect_ws(url, timeout=10)
        except Exception as e:  # noqa: BLE001 - any failure to join is a finding
            c.closed = f"connect failed: {e!r}"
            return
        self.ready_steady += 1
        try:
            while True:
                msg = await c.conn.recv()
                c.on_message(msg)
        except websockets.ConnectionClosed as e:
            if not self.finishing:
                code = e.rcvd.code if e.rcvd is not None else 1006
                c.closed = f"closed with {code} at t={self.elapsed():.0f}s"
        except asyncio.CancelledError:
            pass

    async def publisher(self):
        """PUBLISHes ``rate`` messages a second in ticks of 50 ms, pipelined, round-robin over the
        rooms. A failed connection loses the tick's messages (not published, so not expected)
        and is retried next tick."""
        tick = 0.05
        per_tick = max(1, round(self.args.rate * tick))
        seq = [0] * self.rooms
        room = 0
        reader = writer = None
        next_t = time.monotonic()
        while not self.done():
            next_t += tick
            batch = []
            for _ in range(per_tick):
                batch.append((room, seq[room]))
                seq[room] += 1
                room = (room + 1) % self.rooms
            now = time.monotonic()
            try:
                if writer is None:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(HOST, self.redis.port), 1.0)
                writer.write(b"".join(resp_encode("PUBLISH", f"org:soak{r}",
                                                  make_payload(r, s, self.rng))
                                      for r, s in batch))
                await asyncio.wait_for(writer.drain(), 2.0)
                for r, s in batch:
                    line = await asyncio.wait_for(reader.readline(), 2.0)
                    if not line.startswith(b":"):
                        raise ConnectionError(f"unexpected reply {line!r}")
                    receivers = int(line[1:])
                    self.ledger.sent[r].append((s, now))
                    self.redis_pub_ok += 1
                    if receivers == 0:
                        self.ledger.zero_receivers += 1
            except (OSError, ConnectionError, asyncio.TimeoutError, ValueError):
                # Messages whose reply did not arrive may or may not have been published; they
                # are left out of the expected set (a receiver that got one anyway is fine).
                self.ledger.failed_publishes += sum(
                    1 for r, s in batch if not self.ledger.sent[r] or self.ledger.sent[r][-1][0] < s)
                if writer is not None:
                    writer.close()
                writer = None
            delay = next_t - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_t = time.monotonic()  # behind: do not burst to catch up
        if writer is not None:
            writer.close()

    async def churn_one(self, n: int):
        room = self.rng.randrange(self.rooms)
        started = time.monotonic()
        self.churn_open += 1
        conn = None
        try:
            conn = await connect_ws(self.sidecar.ws_url(f"/ws/soak{room}"), timeout=10)
            stay = self.rng.uniform(0.2, 5.0)
            end = time.monotonic() + stay
            if n % 7 == 0:
                await conn.send('{"type":"ping"}')  # one client message, well within its rate
            while time.monotonic() < end:
                try:
                    await asyncio.wait_for(conn.recv(), end - time.monotonic())
                except asyncio.TimeoutError:
                    break
            if n % 3 == 0:
                conn.transport.abort()  # leave without a close handshake
            else:
                await asyncio.wait_for(conn.close(), 5)
            self.churn_ok += 1
        except Exception as e:  # noqa: BLE001 - every way a connect can fail is counted
            if self.ledger.in_window(started) or self.in_outage:
                self.churn_failed_inside += 1
            else:
                self.churn_failed_outside += 1
                key = type(e).__name__ + ": " + str(e)[:80]
                self.churn_reasons[key] = self.churn_reasons.get(key, 0) + 1
            if conn is not None:
                conn.transport.abort()
        finally:
            self.churn_open -= 1

    async def churn(self):
        """Starts ``churn_rate`` clients a second, never more than ``churn_max`` open at once."""
        n = 0
        tasks: set[asyncio.Task] = set()
        interval = 1.0 / self.args.churn_rate
        while not self.done() and not self.churn_stop:
            if self.churn_open < self.args.churn_max:
                t = asyncio.create_task(self.churn_one(n))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                n += 1
            await asyncio.sleep(interval)
        if tasks:
            await asyncio.wait(tasks, timeout=20)
        for t in tasks:
            t.cancel()
        self.churn_total = n

    async def reloader(self):
        interval = self.args.reload_every
        next_t = interval
        while not self.done():
            await asyncio.sleep(0.5)
            if self.elapsed() >= next_t and self.sidecar.running():
                self.sidecar.send_signal(signal.SIGHUP)
                self.reloads_sent += 1
                next_t += interval

    async def redis_restart(self):
        at = self.duration / 2
        while self.elapsed() < at:
            if self.done():
                return
            await asyncio.sleep(0.5)
        ready_before = self.count_log("redis_ready")
        self.in_outage = True
        t_kill = time.monotonic()
        window = [t_kill - WINDOW_BEFORE_KILL_S, float("inf")]
        self.ledger.windows.append(window)  # open-ended until redis_ready is seen
        log(f"killing redis-server pid {self.redis.proc.pid} (SIGKILL) at t={self.elapsed():.0f}s")
        self.redis.kill()
        await asyncio.sleep(REDIS_DOWN_S)
        await asyncio.get_running_loop().run_in_executor(None, self.redis.restart)
        note_pids(self.redis.proc.pid, self.sidecar.pid)
        log(f"redis-server restarted, pid {self.redis.proc.pid}, at t={self.elapsed():.0f}s")
        self.redis_restarts += 1
        deadline = time.monotonic() + 60
        while self.count_log("redis_ready") <= ready_before:
            if time.monotonic() > deadline:
                self.problems.append("no redis_ready within 60 s of the Redis restart")
                break
            await asyncio.sleep(0.05)
        t_ready = time.monotonic()
        window[1] = t_ready + WINDOW_AFTER_READY_S
        self.ledger.windows[-1] = (window[0], window[1])
        self.outage_s = t_ready - t_kill
        log(f"sidecar logged redis_ready {self.outage_s:.1f}s after the kill; loss window "
            f"{window[1] - window[0]:.1f}s")
        await asyncio.sleep(WINDOW_AFTER_READY_S)
        self.in_outage = False

    # ------------------------------------------------------------------ measuring

    def loss(self, settle: float = 5.0) -> tuple[int, int, int]:
        """(deliveries checked, lost outside the window, not delivered inside it) for messages
        published at least ``settle`` seconds ago, over every steady client that connected.
        Each client checks each message once, so a sample costs only what is new."""
        cutoff = time.monotonic() - settle
        for c in self.steady:
            if c.conn is None:
                continue
            sent = self.ledger.sent[c.room]
            i = c.checked
            while i < len(sent) and sent[i][1] <= cutoff:
                seq, t = sent[i]
                if c.has(seq):
                    c.expected += 1
                elif self.ledger.in_window(t):
                    c.lost_in += 1
                else:
                    c.expected += 1
                    c.lost += 1
                i += 1
            c.checked = i
        return (sum(c.expected for c in self.steady), sum(c.lost for c in self.steady),
                sum(c.lost_in for c in self.steady))

    def sample(self, settle: float = 5.0):
        pid = self.sidecar.pid
        row = {"t": self.elapsed(), "rss": rss_kib(pid), "fds": fd_count(pid),
               "steady": sum(1 for c in self.steady if c.conn is not None and c.closed is None),
               "churn": self.churn_open, "pub": self.redis_pub_ok}
        row["exp"], row["lost"], row["lost_in"] = self.loss(settle)
        self.samples.append(row)
        print(f"{row['t']:7.0f} {row['rss']:9d} {row['fds']:5d} {row['steady']:6d} "
              f"{row['churn']:6d} {row['pub']:9d} {row['exp']:10d} {row['lost']:6d} "
              f"{row['lost_in']:8d}", flush=True)

    async def sampler(self):
        print(f"{'t_s':>7} {'rss_kib':>9} {'fds':>5} {'steady':>6} {'churn':>6} {'published':>9} "
              f"{'delivered':>10} {'lost':>6} {'lost_win':>8}", flush=True)
        next_t = SAMPLE_EVERY_S
        while not self.done():
            await asyncio.sleep(0.2)
            if not self.sidecar.running():
                self.problems.append(f"sidecar exited by itself with {self.sidecar.proc.returncode}"
                                     f" at t={self.elapsed():.0f}s")
                self.fatal = True
                return
            if self.elapsed() >= next_t:
                self.sample()
                next_t += SAMPLE_EVERY_S

    # ------------------------------------------------------------------ main

    async def main(self):
        self.finishing = False
        self.churn_stop = False
        self.in_outage = False
        self.ready_steady = 0
        self.outage_s = float("nan")
        self.churn_total = 0
        self.steady = [SteadyClient(r, i) for r in range(self.rooms)
                       for i in range(self.args.steady_per_room)]
        steady_tasks = [asyncio.create_task(self.run_steady(c)) for c in self.steady]
        deadline = time.monotonic() + 30
        while self.ready_steady + sum(1 for c in self.steady if c.closed) < len(self.steady):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        bad = [c.closed for c in self.steady if c.closed]
        if bad:
            self.problems.append(f"{len(bad)} steady clients could not connect: {bad[0]}")
            self.fatal = True
        # Every room is subscribed once its first member joined; wait for Redis to agree so that
        # the first messages have somewhere to go.
        want = {f"org:soak{r}" for r in range(self.rooms)}
        deadline = time.monotonic() + 10
        while not want <= self.redis.pubsub_channels("org:soak*"):
            if time.monotonic() > deadline:
                self.problems.append("rooms not subscribed in Redis within 10 s")
                break
            await asyncio.sleep(0.05)
        self.fd_baseline = fd_count(self.sidecar.pid)
        log(f"{len(self.steady)} steady clients in {self.rooms} rooms; fd baseline "
            f"{self.fd_baseline}; running {self.args.minutes} min at {self.args.rate} msg/s, "
            f"churn {self.args.churn_rate}/s (at most {self.args.churn_max} open), SIGHUP every "
            f"{self.args.reload_every:.0f}s, Redis restart at {self.duration / 2:.0f}s")
        self.t0 = time.monotonic()
        workers = [asyncio.create_task(x) for x in (self.publisher(), self.churn(),
                                                    self.reloader(), self.redis_restart(),
                                                    self.sampler())]
        await asyncio.wait(workers, timeout=self.duration + 120)
        for w in workers:
            w.cancel()
        # Let the last messages arrive, then measure once more with everything settled.
        await asyncio.sleep(3)
        if self.sidecar.running():
            deadline = time.monotonic() + 20
            while fd_count(self.sidecar.pid) > self.fd_baseline + FD_TOLERANCE:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            self.sample(settle=0)
            self.fd_end = fd_count(self.sidecar.pid)
        self.finishing = True
        # Final SIGTERM while the steady clients are still connected: they are told to leave.
        if self.sidecar.running():
            self.sidecar.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        try:
            self.exit_code = await asyncio.wait_for(
                loop.run_in_executor(None, self.sidecar.proc.wait), 30)
        except asyncio.TimeoutError:
            self.exit_code = None
        for t in steady_tasks:
            t.cancel()
        await asyncio.gather(*steady_tasks, return_exceptions=True)

    def verdict(self) -> bool:
        problems = list(self.problems)
        post = [s for s in self.samples if s["t"] >= self.args.warmup_s]
        if len(post) >= 2:
            first, last = post[0]["rss"], post[-1]["rss"]
            allowed = first * RSS_TOLERANCE + RSS_SLACK_KIB
            if last - first > allowed:
                problems.append(f"RSS grew {last - first} KiB after warm-up "
                                f"({first} -> {last}; allowed {allowed:.0f})")
        else:
            problems.append("fewer than two samples after warm-up")
        fd_end = getattr(self, "fd_end", None)
        if fd_end is None or abs(fd_end - self.fd_baseline) > FD_TOLERANCE:
            problems.append(f"fds at the end {fd_end}, baseline {self.fd_baseline} "
                            f"(tolerance +-{FD_TOLERANCE})")
        if self.samples:
            last = self.samples[-1]
            if last["lost"]:
                problems.append(f"{last['lost']} deliveries lost outside the Redis outage window")
        for c in self.steady:
            if c.closed:
                problems.append(f"steady client room {c.room} #{c.idx}: {c.closed}")
                break
        dup = sum(c.duplicates for c in self.steady)
        ooo = sum(c.out_of_order for c in self.steady)
        if dup or ooo:
            problems.append(f"{dup} duplicate and {ooo} out-of-order deliveries")
        reloaded = self.count_log("reloaded")
        rejected = self.count_log("reload_rejected")
        if reloaded != self.reloads_sent or rejected:
            problems.append(f"SIGHUP sent {self.reloads_sent}, reloaded {reloaded}, "
                            f"rejected {rejected}")
        if self.churn_failed_outside:
            problems.append(f"{self.churn_failed_outside} churn clients failed outside the "
                            f"outage window: {self.churn_reasons}")
        if self.redis_restarts != 1:
            problems.append(f"Redis restarts: {self.redis_restarts}, expected 1")
        if self.exit_code != 0:
            problems.append(f"sidecar exit code on SIGTERM: {self.exit_code}")
        for marker in ("ERROR: AddressSanitizer", "runtime error:"):
            if marker in self.sidecar.log():
                problems.append(f"sanitizer report in the sidecar log ({marker})")

        s0 = post[0] if post else (self.samples[0] if self.samples else None)
        last = self.samples[-1] if self.samples else None
        print()
        print("==== soak summary")
        print(f"duration {self.args.minutes} min; samples {len(self.samples)}; "
              f"warm-up {self.args.warmup_s:.0f}s")
        if s0 and last:
            print(f"RSS after warm-up {s0['rss']} KiB -> end {last['rss']} KiB "
                  f"({last['rss'] - s0['rss']:+d} KiB); max "
                  f"{max(s['rss'] for s in self.samples)} KiB")
            print(f"fds baseline {self.fd_baseline}, end {fd_end}, max during churn "
                  f"{max(s['fds'] for s in self.samples)}")
            print(f"published {self.redis_pub_ok} messages ({self.ledger.failed_publishes} "
                  f"publishes failed while Redis was down, {self.ledger.zero_receivers} reached "
                  f"no subscriber); steady deliveries checked {last['exp']}, lost outside the "
                  f"window {last['lost']}, not delivered inside the window {last['lost_in']}")
        print(f"churn clients {self.churn_total} ({self.churn_ok} clean, "
              f"{self.churn_failed_inside} failed inside the outage window, "
              f"{self.churn_failed_outside} outside)")
        outage = "n/a" if self.outage_s != self.outage_s else f"{self.outage_s:.1f}s"  # NaN: none
        print(f"Redis restarts {self.redis_restarts}; outage seen by the sidecar "
              f"{outage} (kill to redis_ready); SIGHUP reloads {self.reloads_sent} "
              f"(logged {reloaded}, rejected {rejected}); exit code on SIGTERM {self.exit_code}")
        if problems:
            print("soak: FAIL")
            for p in problems:
                print(f"  - {p}")
            return False
        print("soak: PASS")
        return True


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, help="sidecar binary")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rooms", type=int, default=5)
    ap.add_argument("--steady-per-room", type=int, default=6)
    ap.add_argument("--rate", type=float, default=200, help="publishes per second, all rooms")
    ap.add_argument("--churn-rate", type=float, default=10, help="new churn clients per second")
    ap.add_argument("--churn-max", type=int, default=100, help="churn clients open at once")
    ap.add_argument("--reload-every", type=float, default=None, help="seconds between SIGHUPs")
    ap.add_argument("--warmup", type=float, default=None, help="seconds before RSS is tracked")
    ap.add_argument("--seed", type=int, default=9)
    args = ap.parse_args()
    duration = args.minutes * 60
    if args.minutes <= 0 or args.minutes > 24 * 60:
        ap.error("--minutes must be in (0, 1440]")
    args.reload_every = args.reload_every or min(60.0, max(duration / 4, 5.0))
    args.warmup_s = args.warmup if args.warmup is not None else min(120.0, duration / 3)

    # SIGTERM (from scripts/soak.sh's trap) unwinds like Ctrl-C, so the finally below still stops
    # the processes this driver started.
    signal.signal(signal.SIGTERM, _interrupt)
    soak = Soak(args)
    ok = False
    try:
        soak.start_processes()
        asyncio.run(asyncio.wait_for(soak.main(), duration + 300))
        ok = soak.verdict()
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - any failure is a FAIL
        log(f"error: {e!r}")
        print("soak: FAIL")
    finally:
        if soak.sidecar is not None:
            keep = os.environ.get("SOAK_KEEP_LOG")
            if keep:
                try:
                    Path(keep).write_text(soak.sidecar.log())
                except OSError:
                    pass
            soak.sidecar.cleanup()
        soak.redis.stop()
        note_pids()  # both are gone; the wrapper's trap must not signal those pids any more
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
