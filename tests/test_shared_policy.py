"""Limits and holds shared by several engines through a real Redis (`redis_url`), and what
happens when Redis goes away: delivery goes on with local counters, nothing is lost, and
holds already recorded stay. Managers run in this process on injected time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest
from support.dns_server import DNSServer
from support.instance import SendworxHome
from support.redis_server import RedisServer
from support.sink import RecordingSink
from test_queue_manager_time import BIRTH, FakeClock, _until

from sendworx.engine.queue_manager import QueueManager
from sendworx.shared.queue_format import Envelope

CAP = """
redis_url = "{url}"

[[limit]]
name = "shop"
scope = "domain"
messages_per_hour = 3
"""


def _homes(
    tmp_path_factory: pytest.TempPathFactory, dns: DNSServer, count: int
) -> list[SendworxHome]:
    return [
        SendworxHome(tmp_path_factory.mktemp(f"node{n}") / "home", dns_port=dns.port)
        for n in range(count)
    ]


def _inject(home: SendworxHome, count: int, at: float, sender: str = "a@shop.test") -> None:
    for number in range(count):
        envelope = Envelope(sender, (f"u{number}@far.test",), at)
        home.instance.queue().inject(envelope, b"Subject: x\n\nhi\n")


def _run(
    homes: list[SendworxHome],
    clock: FakeClock,
    steps: Callable[[list[QueueManager]], Awaitable[None]],
) -> None:
    """One queue manager per home, in this process, while `steps` drive them; then every
    home's processes and files are cleaned up."""

    async def scenario() -> None:
        managers = [QueueManager(home.instance, clock=clock) for home in homes]
        tasks = [asyncio.create_task(manager.run()) for manager in managers]
        await asyncio.sleep(0.1)
        try:
            await steps(managers)
        finally:
            for manager in managers:
                manager.stop()
            await asyncio.gather(*tasks)

    try:
        asyncio.run(scenario())
    finally:
        for home in homes:
            home.close()


def test_two_engines_enforce_one_cap_together(
    tmp_path_factory: pytest.TempPathFactory, dns_server: DNSServer, redis_server: RedisServer
) -> None:
    """shop.test may send 3 messages an hour across the cluster: 4 queued on each node, 3 go
    in all, the other 5 wait for the window and then go."""
    clock = FakeClock(BIRTH)
    homes = _homes(tmp_path_factory, dns_server, 2)
    with RecordingSink("127.0.4.30") as sink:
        for home in homes:
            home.routes(f"far.test:[127.0.4.30]:{sink.port}")
            (home.home / "policy.toml").write_text(CAP.format(url=redis_server.url))
            _inject(home, 4, BIRTH)

        async def steps(managers: list[QueueManager]) -> None:
            await _until(lambda: len(sink.received()) == 3)
            await asyncio.sleep(0.5)
            assert len(sink.received()) == 3
            clock.now = BIRTH + 3660  # the first minute's bucket has left the hour
            for manager in managers:
                manager.retry_now()
            await _until(lambda: len(sink.received()) == 6)
            await asyncio.sleep(0.3)
            assert len(sink.received()) == 6
            clock.now = BIRTH + 2 * 3660
            for manager in managers:
                manager.retry_now()
            await _until(lambda: len(sink.received()) == 8)

        _run(homes, clock, steps)


def test_redis_stopped_mid_run_loses_nothing_and_says_so(
    home: SendworxHome, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(BIRTH)
    home.write_config(delivery={"rescan_seconds": 0.2})
    (home.home / "policy.toml").write_text(CAP.format(url=redis_server.url).replace("= 3", "= 100"))
    with RecordingSink("127.0.4.31") as sink:
        home.routes(f"far.test:[127.0.4.31]:{sink.port}")
        _inject(home, 5, BIRTH)

        async def steps(managers: list[QueueManager]) -> None:
            shared = managers[0].policy.shared
            await _until(lambda: len(sink.received()) == 5)
            assert shared is not None and shared.up
            redis_server.stop()
            _inject(home, 5, BIRTH + 1)
            await _until(lambda: len(sink.received()) == 10)
            await _until(home.queue_empty)
            assert not shared.up and shared.errors >= 1
            redis_server.start()
            _inject(home, 1, BIRTH + 2)
            await _until(lambda: len(sink.received()) == 11)
            assert shared.up

        with caplog.at_level(logging.INFO, logger="sendworx.engine"):
            _run([home], clock, steps)
    said = [record.getMessage() for record in caplog.records]
    assert sum("does not answer" in line for line in said) == 1
    assert any("answers again; limits are shared" in line for line in said)


def test_a_hold_recorded_on_one_node_holds_the_sender_on_the_other(
    tmp_path_factory: pytest.TempPathFactory, dns_server: DNSServer, redis_server: RedisServer
) -> None:
    clock = FakeClock(BIRTH)
    homes = _homes(tmp_path_factory, dns_server, 2)
    with RecordingSink("127.0.4.32") as sink:
        for home in homes:
            home.routes(f"far.test:[127.0.4.32]:{sink.port}")
            home.write_config(delivery={"rescan_seconds": 0.2})
            (home.home / "policy.toml").write_text(
                f'redis_url = "{redis_server.url}"\n\n[[breaker]]\nname = "burst"\n'
                'scope = "domain"\nmessages = 2\n'
            )
        _inject(homes[0], 3, BIRTH, sender="wp@hacked.test")

        async def steps(managers: list[QueueManager]) -> None:
            await _until(lambda: "domain:hacked.test" in managers[1].policy.holds)
            _inject(homes[1], 2, BIRTH + 5, sender="x@HACKED.test")
            _inject(homes[1], 1, BIRTH + 5, sender="ok@fine.test")
            await _until(lambda: len(managers[1].held) == 2)
            redis_server.stop()  # what was recorded stays held
            await asyncio.sleep(0.5)
            assert len(managers[1].held) == 2
            assert "domain:hacked.test" in managers[1].policy.holds

        _run(homes, clock, steps)
    assert len(sink.received()) == 3  # two from hacked.test before the trip, one from fine.test
