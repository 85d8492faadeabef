"""The delivery pool driven directly against a real sink: failures inside a transaction."""

from __future__ import annotations

import asyncio

from support.sink import RecordingSink

from sendworx.config import DeliveryConfig, ResolverConfig
from sendworx.engine.delivery import (
    DeliveryJob,
    DeliveryPool,
    DestinationKey,
    Outcome,
    RecipientResult,
)
from sendworx.engine.limiter import ConnectionLimiter
from sendworx.engine.resolver import DestinationResolver
from sendworx.engine.routes import Relay
from sendworx.settings import Settings


def _unreadable() -> bytes:
    raise PermissionError(13, "Permission denied")


def test_a_job_whose_message_cannot_be_read_is_deferred_and_the_next_still_goes() -> None:
    results: dict[str, list[RecipientResult]] = {}

    async def scenario(port: int) -> None:
        pool = DeliveryPool(
            resolver=DestinationResolver(ResolverConfig(nameservers=["127.0.0.1"]), 25),
            limiter=ConnectionLimiter(5),
            helo_name="pool.test",
            config=DeliveryConfig(destination_concurrency=1, idle_connection_seconds=0.2),
            settings=Settings,
            tls_context=None,
        )
        done = asyncio.Event()

        def record(job: DeliveryJob, outcome: list[RecipientResult]) -> None:
            results[job.message_id] = outcome
            if len(results) == 2:
                done.set()

        key = DestinationKey("relay", f"[127.0.0.105]:{port}", Relay("127.0.0.105", port, True))
        for message_id, loader in (("broken", _unreadable), ("fine", lambda: b"Subject: ok\r\n")):
            pool.submit(key, DeliveryJob(message_id, "s@o.test", ["r@far.test"], loader, record))
        async with asyncio.timeout(10):
            await done.wait()
        pool.stop()
        assert await pool.wait_stopped(5)

    with RecordingSink("127.0.0.105") as sink:
        asyncio.run(scenario(sink.port))
        [delivered] = sink.wait_for_messages(1)
    [broken] = results["broken"]
    assert broken.outcome is Outcome.DEFERRED
    assert broken.reply.startswith("local error:") and "Permission denied" in broken.reply
    assert results["fine"][0].outcome is Outcome.DELIVERED
    assert delivered.content.startswith(b"Subject: ok")
