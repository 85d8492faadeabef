"""The delivery pool driven directly against a real sink: failures inside a transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from support.sink import RecordingSink

from sendworx.engine.attempts import Outcome, RecipientResult
from sendworx.engine.delivery import DeliveryPool
from sendworx.engine.delivery_job import DeliveryJob
from sendworx.engine.resolver import DestinationResolver
from sendworx.shared.config import DeliveryConfig, ResolverConfig
from sendworx.shared.destinations import RelayHost
from sendworx.shared.policy import Policy
from sendworx.shared.routes import Relay
from sendworx.shared.settings import Settings


def _pool(settings: Callable[[], Settings]) -> DeliveryPool:
    """One session per destination, no DNS needed (the tests route to address relays)."""
    return DeliveryPool(
        resolver=DestinationResolver(ResolverConfig(nameservers=["127.0.0.1"]), 25),
        limit=5,
        helo_name=lambda: "pool.test",
        config=DeliveryConfig(destination_concurrency=1, idle_connection_seconds=0.2),
        settings=settings,
        policy=Policy,
        tls_context=None,
    )


def _unreadable() -> bytes:
    raise PermissionError(13, "Permission denied")


def test_a_job_whose_message_cannot_be_read_is_deferred_and_the_next_still_goes() -> None:
    results: dict[str, list[RecipientResult]] = {}

    async def scenario(port: int) -> None:
        pool = _pool(Settings)
        done = asyncio.Event()

        def record(job: DeliveryJob, outcome: list[RecipientResult]) -> None:
            results[job.message_id] = outcome
            if len(results) == 2:
                done.set()

        key = RelayHost(Relay("127.0.0.105", port, True))
        async with pool.running():
            for message_id, loader in (
                ("broken", _unreadable),
                ("fine", lambda: b"Subject: ok\r\n"),
            ):
                job = DeliveryJob(message_id, "s@o.test", ["r@far.test"], loader, record)
                pool.submit(key, job)
            async with asyncio.timeout(10):
                await done.wait()
        assert not pool.cut

    with RecordingSink("127.0.0.105") as sink:
        asyncio.run(scenario(sink.port))
        [delivered] = sink.wait_for_messages(1)
    [broken] = results["broken"]
    assert broken.outcome is Outcome.DEFERRED
    assert broken.reply.startswith("local error:") and "Permission denied" in broken.reply
    assert results["fine"][0].outcome is Outcome.DELIVERED
    assert delivered.content.startswith(b"Subject: ok")


def test_an_unexpected_error_in_a_session_defers_its_mail_and_the_next_session_delivers() -> None:
    """Whatever escapes a session (here: settings that cannot be read once) becomes a recorded
    temporary failure for the mail it held, never a job left unfinished."""
    results: dict[str, list[RecipientResult]] = {}
    reads = 0

    def settings_failing_once() -> Settings:
        nonlocal reads
        reads += 1
        if reads == 1:
            raise RuntimeError("control files unreadable")
        return Settings()

    async def scenario(port: int) -> None:
        pool = _pool(settings_failing_once)
        recorded = {name: asyncio.Event() for name in ("first", "second")}

        def record(job: DeliveryJob, outcome: list[RecipientResult]) -> None:
            results[job.message_id] = outcome
            recorded[job.message_id].set()

        key = RelayHost(Relay("127.0.0.106", port, True))
        async with pool.running():
            for name in ("first", "second"):
                pool.submit(key, DeliveryJob(name, "s@o.test", ["r@far.test"], _content, record))
                async with asyncio.timeout(10):
                    await recorded[name].wait()
        assert not pool.cut

    with RecordingSink("127.0.0.106") as sink:
        asyncio.run(scenario(sink.port))
        sink.wait_for_messages(1)
    [first] = results["first"]
    assert first.outcome is Outcome.DEFERRED and first.status == "4.3.0"
    assert "control files unreadable" in first.reply
    assert results["second"][0].outcome is Outcome.DELIVERED


def _content() -> bytes:
    return b"Subject: ok\r\n"
