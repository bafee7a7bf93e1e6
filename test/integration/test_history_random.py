"""History under random interleavings (issue 11): publishes, client drops and resumes (some while
publications keep coming), trims, lost history and Redis restarts without persistence, in an order
drawn from a seed. The seed is printed; ``SIDECAR_HISTORY_SEED=N`` replays a run and
``SIDECAR_HISTORY_STEPS`` changes its length.

The oracle, per client across all its connections: every envelope is the next position after the
one before it in the same epoch, with the payload that was published there; a ``resync`` is
allowed only where being complete was impossible (a resume the model says cannot recover, with
the model's reason; or an epoch that really changed) and delivery continues from the position it
carries. A connected client must hear of a Redis restart without waiting for a publication, and a
resume the model says can recover must be recovered.
"""

from __future__ import annotations

import asyncio
import os
import random

from harness import SLOW, run, wait_until
from resilience_util import ready_status
from test_history_resume import HistoryClient, Publisher, channel_state, connect_v1, \
    history_yaml, metric, metrics, payload_of, wait_library

MAX_RECOVER = 15
ORGS = ("acme", "beta")
SLOTS = 6  # clients, each bound to one org, each connected or dropped at a time
MAX_RESTARTS = 2


class Channel:
    """What Redis holds for one channel, as the test knows it."""

    def __init__(self, name: str):
        self.name = name
        self.epoch: str | None = None  # None: lost, and no new one made yet
        self.epochs_seen: list[str] = []
        self.top = 0
        self.first = 1  # the oldest offset still in the stream
        self.published = False  # whether anything was published in this epoch
        self.payloads: dict[tuple[str, int], int] = {}  # (epoch, offset) -> n

    def last(self, epoch: str) -> int:
        """The last offset published in `epoch` (0 when nothing was)."""
        return max((o for e, o in self.payloads if e == epoch), default=0)


class Slot:
    """One client, across its connections, with the oracle's cursor."""

    def __init__(self, index: int, org: str):
        self.index, self.org, self.channel = index, org, f"org:{org}"
        self.client: HistoryClient | None = None
        self.seen = 0            # events of the current connection already judged
        self.cursor: tuple[str, int] | None = None  # the last position delivered
        self.expect_resync: str | None = None  # the reason a resume's verdict must be
        self.resyncs: list[dict] = []
        self.messages = 0
        self.connections = 0


class Run:
    def __init__(self, seed: int, steps: int, sc, redis):
        self.rng = random.Random(seed)
        self.seed, self.steps, self.sc, self.redis = seed, steps, sc, redis
        self.pub = Publisher(redis.port)
        self.chans = {f"org:{o}": Channel(f"org:{o}") for o in ORGS}
        self.slots = [Slot(i, ORGS[i % len(ORGS)]) for i in range(SLOTS)]
        self.n = 0  # payload counter, unique over the run
        self.restarts = 0
        self.log: list[str] = []
        self.expected_results = {"recovered": 0, "too_many": 0, "trimmed": 0,
                                 "bad_position": 0, "epoch_changed": 0}

    # -------------------------------------------------------------- oracle

    def fail(self, slot: Slot, why: str):
        raise AssertionError(
            f"seed {self.seed}: client {slot.index} ({slot.channel}): {why}\nlast steps:\n  "
            + "\n  ".join(self.log[-12:]) + f"\nits events: {slot.client.events[-12:]}")

    def judge(self, slot: Slot) -> None:
        """Consumes the current connection's new events, asserting the oracle on each."""
        ch = self.chans[slot.channel]
        events = slot.client.events
        while slot.seen < len(events):
            e = events[slot.seen]
            slot.seen += 1
            if not isinstance(e, dict) or e.get("channel") != slot.channel:
                self.fail(slot, f"unexpected message {e!r}")
            if e.get("type") == "message":
                if slot.expect_resync:
                    self.fail(slot, f"a message before the {slot.expect_resync} resync: {e}")
                pos = (e.get("epoch"), e.get("offset"))
                # After a resync that carried no position, the next message sets it.
                want = pos if slot.cursor is None else (slot.cursor[0], slot.cursor[1] + 1)
                if slot.cursor is not None and pos == (ch.epoch, 1) and \
                        slot.cursor[0] != ch.epoch and slot.cursor[1] == ch.last(slot.cursor[0]):
                    # The history was lost while this client was live and had every message of
                    # the old epoch: the new epoch's first message continues it with nothing
                    # missed, so no resync is owed (the envelope's epoch says it changed).
                    want = pos
                if pos != want or pos[0] != ch.epoch:
                    self.fail(slot, f"got {pos}, the next position is {want} (hole, repeat or "
                                    f"an epoch change without resync)")
                if ch.payloads.get(pos) != (e.get("data") or {}).get("n"):
                    self.fail(slot, f"{pos} carries {e.get('data')}, published was "
                                    f"{ch.payloads.get(pos)}")
                slot.cursor = pos
                slot.messages += 1
            elif e.get("type") == "resync":
                reason = e.get("reason")
                slot.resyncs.append(e)
                if slot.expect_resync:
                    if reason != slot.expect_resync:
                        self.fail(slot, f"resync {reason}, the model says {slot.expect_resync}")
                    slot.expect_resync = None
                elif reason == "epoch_changed":
                    new = e.get("epoch", ch.epoch)
                    if slot.cursor is not None and new == slot.cursor[0]:
                        self.fail(slot, f"epoch_changed to the epoch it is in: {e}")
                    if new not in ch.epochs_seen and new != ch.epoch and ch.epoch is not None:
                        self.fail(slot, f"resync to an epoch Redis never had: {e}")
                else:
                    self.fail(slot, f"a resync where nothing was lost: {e}")
                if "epoch" in e and "offset" in e:
                    if e["offset"] > self.chans[slot.channel].top and e["epoch"] == ch.epoch:
                        self.fail(slot, f"resync to beyond the top {ch.top}: {e}")
                    slot.cursor = (e["epoch"], e["offset"])
                else:
                    slot.cursor = None  # the next message tells
            else:
                self.fail(slot, f"unexpected message {e!r}")

    async def settle(self, what: str):
        """Waits until every connected client is at its channel's top (when the epoch is
        known), judging every event on the way."""
        for slot in self.slots:
            if slot.client is None:
                continue
            ch = self.chans[slot.channel]

            def done(_c, slot=slot, ch=ch):
                self.judge(slot)
                if slot.expect_resync:
                    return False
                if ch.epoch is None or slot.cursor is None:
                    return True  # nothing to reach yet, or no way to know where it is
                if slot.cursor[0] != ch.epoch and not ch.published:
                    # The history was lost and nothing published since: a client still in the
                    # old epoch has had nothing it could notice (a restart is checked apart).
                    return True
                return slot.cursor == (ch.epoch, ch.top)

            await slot.client.wait(done, 10, f"seed {self.seed}: {what}: client {slot.index} "
                                             f"at {(ch.epoch, ch.top)}, cursor {slot.cursor}")

    def refresh_epochs(self):
        for ch in self.chans.values():
            if ch.epoch is None:
                e = self.redis.command("HGET", f"sidecar:{{{ch.name}}}:m", "epoch")
                if e is not None:
                    ch.epoch = e.decode()
                    ch.epochs_seen.append(ch.epoch)

    # -------------------------------------------------------------- steps

    def publish(self, ch: Channel, k: int):
        payloads = []
        for _ in range(k):
            self.n += 1
            payloads.append(self.n)
        got = self.pub.many(ch.name, (payload_of(n) for n in payloads))
        assert got == list(range(ch.top + 1, ch.top + k + 1)), (self.seed, got, ch.top)
        epoch = self.redis.command("HGET", f"sidecar:{{{ch.name}}}:m", "epoch").decode()
        if ch.epoch is None:
            ch.epoch = epoch
            ch.epochs_seen.append(epoch)
        assert epoch == ch.epoch, (self.seed, "the epoch changed under a publish", epoch)
        for off, n in zip(got, payloads):
            ch.payloads[(epoch, off)] = n
        ch.top = got[-1]
        ch.published = True

    def verdict(self, slot: Slot, ch: Channel, offset_override: int | None = None):
        """What the sidecar must answer to a resume from ``slot.cursor``."""
        epoch, offset = slot.cursor
        if offset_override is not None:
            offset = offset_override
        if ch.epoch is None or epoch != ch.epoch:
            return "epoch_changed"
        if offset > ch.top:
            return "bad_position"
        if ch.top - offset > MAX_RECOVER:
            return "too_many"
        if ch.top > offset and ch.first > offset + 1:
            return "trimmed"
        return "recovered"

    async def connect(self, slot: Slot, recover=None, concurrent: int = 0):
        ch = self.chans[slot.channel]
        slot.connections += 1
        if concurrent:
            client, _ = await asyncio.gather(
                connect_v1(self.sc, f"/ws/{slot.org}", recover=recover or (),
                           name=f"c{slot.index}"),
                asyncio.to_thread(self.publish, ch, concurrent))
        else:
            client = await connect_v1(self.sc, f"/ws/{slot.org}", recover=recover or (),
                                      name=f"c{slot.index}")
        slot.client, slot.seen = client, 0
        return channel_state(client, slot.channel)

    async def step_resume(self, slot: Slot, bogus: bool = False):
        ch = self.chans[slot.channel]
        if slot.cursor is None:
            st = await self.connect(slot)
            slot.cursor = (st["epoch"], st["offset"])
            self.log.append(f"client {slot.index} connects afresh (no position to resume)")
            return
        offset = slot.cursor[1] + self.rng.randint(1, 4) if bogus else slot.cursor[1]
        verdict = self.verdict(slot, ch, offset)
        concurrent = 0
        if verdict == "recovered" and ch.top - offset + 6 <= MAX_RECOVER and \
                self.rng.random() < 0.5:
            concurrent = self.rng.randint(1, 6)
        self.log.append(f"client {slot.index} resumes from {(slot.cursor[0], offset)}: model "
                        f"says {verdict} (top {ch.top}, first {ch.first}, epoch {ch.epoch})"
                        + (f", {concurrent} published meanwhile" if concurrent else ""))
        self.expected_results[verdict] += 1
        st = await self.connect(slot, [(slot.channel, slot.cursor[0], offset)], concurrent)
        if verdict == "recovered":
            if st["recovered"] is not True or st["epoch"] != slot.cursor[0]:
                self.fail(slot, f"not recovered: welcome {st}")
            slot.cursor = (slot.cursor[0], offset)
        else:
            if st["recovered"] is not False:
                self.fail(slot, f"recovered, but the model says {verdict}: welcome {st}")
            slot.expect_resync = verdict
            slot.cursor = None

    async def step_fresh(self, slot: Slot):
        ch = self.chans[slot.channel]
        st = await self.connect(slot)
        self.log.append(f"client {slot.index} connects without a position: welcome {st}")
        if st["recovered"] is not False:
            self.fail(slot, f"a fresh connection says recovered: {st}")
        if st["epoch"] == ch.epoch and st["offset"] != ch.top:
            self.fail(slot, f"welcome offset {st['offset']}, the top is {ch.top}")
        slot.cursor = (st["epoch"], st["offset"])

    async def step_drop(self, slot: Slot):
        self.judge(slot)
        abrupt = self.rng.random() < 0.7
        self.log.append(f"client {slot.index} {'drops' if abrupt else 'closes'} at "
                        f"{slot.cursor}")
        if abrupt:
            await slot.client.drop()
        else:
            await slot.client.close()
        self.judge(slot)  # whatever arrived before the end still counts
        if slot.expect_resync:
            slot.expect_resync = None
            slot.cursor = None
        slot.client = None

    def step_trim(self, ch: Channel):
        keep = self.rng.randint(0, 8)
        # Half the time, cut just past a dropped client's position, so that its resume meets
        # a hole (a random cut mostly lands where too_many decides first).
        behind = [s for s in self.slots if s.client is None and s.cursor is not None
                  and s.cursor[0] == self.chans[s.channel].epoch
                  and 1 < self.chans[s.channel].top - s.cursor[1] <= MAX_RECOVER]
        if behind and self.rng.random() < 0.5:
            slot = self.rng.choice(behind)
            ch = self.chans[slot.channel]
            keep = self.rng.randint(0, ch.top - slot.cursor[1] - 2)
        self.pub.command("XTRIM", f"sidecar:{{{ch.name}}}:s", "MAXLEN", str(keep))
        if ch.epoch is not None:
            ch.first = max(ch.first, ch.top - keep + 1)
        self.log.append(f"XTRIM {ch.name} MAXLEN {keep}: first {ch.first}, top {ch.top}")

    def step_lose(self, ch: Channel):
        self.pub.command("DEL", f"sidecar:{{{ch.name}}}:s", f"sidecar:{{{ch.name}}}:m")
        ch.epoch, ch.top, ch.first, ch.published = None, 0, 1, False
        self.log.append(f"DEL {ch.name}'s history")

    async def step_restart(self):
        self.restarts += 1
        self.log.append("redis-server restarts without persistence")
        self.pub.close()
        await asyncio.to_thread(self.redis.restart)
        for ch in self.chans.values():
            ch.epoch, ch.top, ch.first, ch.published = None, 0, 1, False
        await asyncio.to_thread(wait_library, self.redis.port)
        await asyncio.to_thread(wait_until, lambda: ready_status(self.sc)[0] == 200, 10 * SLOW,
                                "/ready 200 after the restart")
        self.pub = Publisher(self.redis.port)
        # Every connected client is told, without waiting for a publication.
        for slot in self.slots:
            if slot.client is None:
                continue
            before = len(slot.resyncs)

            def told(_c, slot=slot, before=before):
                self.judge(slot)
                return len(slot.resyncs) > before

            await slot.client.wait(told, 15, f"seed {self.seed}: client {slot.index} told of "
                                             f"the restart")
            if slot.resyncs[-1].get("reason") != "epoch_changed":
                self.fail(slot, f"after a restart: {slot.resyncs[-1]}")
        self.refresh_epochs()

    async def play(self):
        for slot in self.slots:
            await self.step_fresh(slot)
        for org in ORGS:
            await asyncio.to_thread(wait_until, lambda o=org: self.redis.numsub(f"org:{o}") >= 1,
                                    10 * SLOW, f"org:{org} subscribed")
        for i in range(self.steps):
            r = self.rng.random()
            connected = [s for s in self.slots if s.client is not None]
            dropped = [s for s in self.slots if s.client is None]
            ch = self.chans[self.rng.choice(list(self.chans))]
            if r < 0.33:
                k = self.rng.choice([1, 1, 2, 3, 5, 8, MAX_RECOVER + 3])
                self.log.append(f"step {i}: publish {k} on {ch.name}")
                self.publish(ch, k)
            elif r < 0.53 and connected:
                self.log.append(f"step {i}: drop")
                await self.step_drop(self.rng.choice(connected))
            elif r < 0.80 and dropped:
                self.log.append(f"step {i}: resume")
                await self.step_resume(self.rng.choice(dropped), bogus=self.rng.random() < 0.08)
            elif r < 0.90:
                self.log.append(f"step {i}: trim")
                self.step_trim(ch)
            elif r < 0.93:
                self.log.append(f"step {i}: lose history")
                self.step_lose(ch)
            elif r < 0.96 and self.restarts < MAX_RESTARTS:
                self.log.append(f"step {i}: restart")
                await self.step_restart()
            else:
                self.log.append(f"step {i}: publish 1 on {ch.name}")
                self.publish(ch, 1)
            self.refresh_epochs()
            await self.settle(f"after step {i}")
        # The end: everyone comes back and hears one last publication on each channel.
        for slot in self.slots:
            if slot.client is None:
                await self.step_resume(slot)
        for ch in self.chans.values():
            self.publish(ch, 1)
        await self.settle("the end")
        for slot in self.slots:
            await slot.client.close()
            self.judge(slot)


def test_random_interleavings_are_complete_or_say_resync(sidecar_factory, redis):
    seed = int(os.environ.get("SIDECAR_HISTORY_SEED") or random.SystemRandom().randrange(1 << 32))
    steps = int(os.environ.get("SIDECAR_HISTORY_STEPS", "60"))
    print(f"history random: seed {seed}, {steps} steps; rerun with SIDECAR_HISTORY_SEED={seed}")
    sc = sidecar_factory(extra_yaml=history_yaml(size=1000, max_recover=MAX_RECOVER))
    wait_library(redis.port)
    game = Run(seed, steps, sc, redis)

    async def main():
        await game.play()

    try:
        run(main(), 150 * SLOW)
    finally:
        print("\n".join(game.log))
        game.pub.close()
    m = metrics(sc)
    # Resumes the model predicted, by result (after a restart a counter could only grow).
    for result in ("recovered", "too_many", "trimmed", "bad_position", "epoch_changed"):
        assert metric(m, "sidecar_resumes_total", result=result) == \
            game.expected_results[result], (seed, result, game.expected_results)
    total = sum(s.messages for s in game.slots)
    print(f"seed {seed}: {total} messages judged, {sum(len(s.resyncs) for s in game.slots)} "
          f"resyncs, resumes {game.expected_results}, restarts {game.restarts}")
