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
from support.sink import Behaviour, RecordingSink
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
    assert any("answers again; limits and breakers are shared" in line for line in said)


@pytest.mark.parametrize("counter", ["messages = 5", "recipients = 5"])
def test_a_burst_split_across_two_engines_trips_the_breaker_at_its_threshold(
    tmp_path_factory: pytest.TempPathFactory,
    dns_server: DNSServer,
    redis_server: RedisServer,
    counter: str,
) -> None:
    """A compromised account injects on two nodes: 4 + 4 messages (to 8 recipients) against
    a breaker of 5. Alone each engine saw 4 and held nothing; counted in Redis, exactly 5 go
    and the other 3 are held, on both nodes, which both hold the sender."""
    clock = FakeClock(BIRTH)
    homes = _homes(tmp_path_factory, dns_server, 2)
    with RecordingSink("127.0.4.33") as sink:
        for node, home in enumerate(homes):
            home.routes(f"far.test:[127.0.4.33]:{sink.port}")
            home.write_config(delivery={"rescan_seconds": 0.2})
            (home.home / "policy.toml").write_text(
                f'redis_url = "{redis_server.url}"\n\n[[breaker]]\nname = "burst"\n'
                f'scope = "domain"\n{counter}\n'
            )
            for number in range(4):
                envelope = Envelope("wp@hacked.test", (f"n{node}u{number}@far.test",), BIRTH)
                home.instance.queue().inject(envelope, b"Subject: x\n\nhi\n")

        async def steps(managers: list[QueueManager]) -> None:
            await _until(lambda: len(managers[0].held) + len(managers[1].held) == 3)
            await _until(lambda: all("domain:hacked.test" in m.policy.holds for m in managers))
            await _until(lambda: len(sink.received()) == 5)
            await asyncio.sleep(0.3)
            assert len(sink.received()) == 5
            assert len(managers[0].held) + len(managers[1].held) == 3

        _run(homes, clock, steps)


def test_failures_split_across_two_engines_trip_the_breaker_at_its_share(
    tmp_path_factory: pytest.TempPathFactory, dns_server: DNSServer, redis_server: RedisServer
) -> None:
    """Half or more of 6 attempts failing trips the breaker; each node makes 3 attempts that
    all bounce, too few alone (min_attempts 6), enough together: the sender is held on
    both, and its next message waits there."""
    clock = FakeClock(BIRTH)
    homes = _homes(tmp_path_factory, dns_server, 2)
    refuse = Behaviour(rcpt_reply=lambda recipient: "550 5.1.1 no such user")
    with RecordingSink("127.0.4.34", behaviour=refuse) as sink:
        for node, home in enumerate(homes):
            home.routes(f"far.test:[127.0.4.34]:{sink.port}")
            home.write_config(delivery={"rescan_seconds": 0.2})
            (home.home / "policy.toml").write_text(
                f'redis_url = "{redis_server.url}"\n\n[[breaker]]\nname = "failing"\n'
                'scope = "domain"\nfailure_share = 0.5\nmin_attempts = 6\n'
            )
            for number in range(3):
                envelope = Envelope("wp@listy.test", (f"n{node}u{number}@far.test",), BIRTH)
                home.instance.queue().inject(envelope, b"Subject: x\n\nhi\n")

        async def steps(managers: list[QueueManager]) -> None:
            await _until(lambda: all("domain:listy.test" in m.policy.holds for m in managers))
            _inject(homes[1], 1, BIRTH + 5, sender="wp@listy.test")
            await _until(lambda: len(managers[1].held) == 1)

        _run(homes, clock, steps)
    assert sink.received() == []


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
            await _until(lambda: len(sink.received()) == 3)  # fine.test's, counted in Redis
            redis_server.stop()  # what was recorded stays held
            await asyncio.sleep(0.5)
            assert len(managers[1].held) == 2
            assert "domain:hacked.test" in managers[1].policy.holds

        _run(homes, clock, steps)
    assert len(sink.received()) == 3  # two from hacked.test before the trip, one from fine.test
