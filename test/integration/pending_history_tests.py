"""History tests that do not pass reliably yet; NOT collected by pytest on purpose (no ``test_``
prefix). Run by hand:
``SIDECAR_BIN=build/sidecar /usr/bin/python3 -m pytest -q test/integration/pending_history_tests.py``

- test_aof_redis_killed_and_restarted_keeps_the_epoch_and_resume_recovers (moved out of
  test_history_resume.py): failed 1 run in 3 with the resumed client's welcome
  ``{'recovered': False}``, i.e. its read was answered ``unavailable``. After the kill -9 the
  library is back from the AOF at once (so ``wait_library`` proves nothing about the sidecar), and
  ``/ready`` 200 plus a confirmed SUBSCRIBE do not prove that the sidecar's command link is up
  again with the library loaded. Either the test must wait for the sidecar's history reads to work
  (a metric or /api/websocket/status field saying the library is loaded), or /ready should answer
  503 while history is configured and the command link or the library is not ready; undecided.
"""

from __future__ import annotations

import asyncio

from harness import SLOW, run, wait_until
from resilience_util import ready_status
from test_history_resume import AofRedis, Publisher, assert_numbered, channel_state, connect_v1, \
    epoch_of, history_yaml, wait_library, wait_subscribed


def test_aof_redis_killed_and_restarted_keeps_the_epoch_and_resume_recovers(sidecar_factory):
    aof = AofRedis()
    aof.start()
    try:
        sc = sidecar_factory(redis_url=aof.url, extra_yaml=history_yaml())
        wait_library(aof.port)
        pub = Publisher(aof.port)

        async def main():
            stay = await connect_v1(sc, name="stayed")
            gone = await connect_v1(sc, name="dropped")
            epoch = channel_state(stay)["epoch"]
            await wait_subscribed(aof)
            pub.numbered("org:acme", 1, 4)
            await gone.wait(lambda cl: cl.has_offset(4), 10, "offset 4")
            await gone.drop()
            pub.numbered("org:acme", 5, 10)
            await stay.wait(lambda cl: cl.has_offset(10), 10, "offset 10")
            pub.close()

            await asyncio.to_thread(aof.kill)  # SIGKILL
            await asyncio.to_thread(aof.restart)
            await asyncio.to_thread(wait_library, aof.port)
            await asyncio.to_thread(wait_until, lambda: ready_status(sc)[0] == 200, 10 * SLOW,
                                    "/ready 200")
            await wait_subscribed(aof)
            assert epoch_of(aof.port, "org:acme") == epoch

            back = await connect_v1(sc, recover=[("org:acme", epoch, 4)], name="came back")
            st = channel_state(back)
            assert st["recovered"] is True and st["epoch"] == epoch, st
            await back.wait(lambda cl: cl.has_offset(10), 10, "5..10 replayed")
            pub2 = Publisher(aof.port)
            try:
                pub2.numbered("org:acme", 11, 15)
            finally:
                pub2.close()
            for c in (back, stay):
                await c.wait(lambda cl: cl.has_offset(15), 10, "offset 15")
            assert_numbered(back.envelopes(), 5, 15, epoch)
            # The client that stayed connected lost nothing and was not told to reload.
            assert_numbered(stay.envelopes(), 1, 15, epoch)
            assert not stay.resyncs() and not back.resyncs(), (stay.events, back.events)
            await back.close()
            await stay.close()

        run(main(), 60)
    finally:
        aof.stop()
