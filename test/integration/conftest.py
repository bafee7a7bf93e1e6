"""pytest fixtures shared by every integration test: a private Redis per test and sidecars that
are always stopped at teardown, failing the test if a sanitizer reported a problem or the sidecar
did not end as it should (died on its own, or a SIGTERM that did not exit 0)."""

from __future__ import annotations

import pytest

from harness import RedisServer, Sidecar


@pytest.fixture
def redis():
    """A private redis-server on a free loopback port, started for this test only."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sidecar_factory(redis):
    """``sidecar_factory(config_text=None, extra_yaml=None, env=None, redis_url=None,
    start=True)`` makes a Sidecar on ``redis`` (or ``redis_url``) and starts it unless ``start``
    is False. Every sidecar made is stopped at teardown with SIGTERM, which must end it with exit
    code 0; one that had already exited fails the test unless the test expected that
    (``sc.expect_exit = True``, ``sc.wait_exit()``, or ``sc.send_signal(SIGKILL)``)."""
    made: list[Sidecar] = []

    def make(config_text=None, extra_yaml=None, env=None, redis_url=None, start=True):
        sc = Sidecar(redis_url or redis.url, config_text=config_text, extra_yaml=extra_yaml,
                     env=env)
        made.append(sc)
        if start:
            sc.start()
        return sc

    yield make

    reports, exits = [], []
    for sc in made:
        sc.stop()
        # pytest shows this only when the test failed: the sidecar's own account of it.
        tail = sc.log().splitlines()[-150:]
        print(f"---- sidecar log (port {sc.port}), last {len(tail)} lines")
        print("\n".join(tail))
        report = sc.sanitizer_report()
        if report:
            reports.append(report)
        # A crash or std::terminate after the test got what it wanted is still a failure, and
        # so is a SIGTERM that does not end in exit code 0.
        problem = sc.exit_problem()
        if problem:
            exits.append(f"{problem} (port {sc.port}); log tail:\n" + "\n".join(tail[-20:]))
    for sc in made:
        sc.cleanup()
    if reports:
        pytest.fail("sanitizer reported a problem in the sidecar:\n" + "\n".join(reports),
                    pytrace=False)
    if exits:
        pytest.fail("\n".join(exits), pytrace=False)


@pytest.fixture
def sidecar(sidecar_factory):
    """One sidecar with the default config on the test's ``redis``."""
    return sidecar_factory()
