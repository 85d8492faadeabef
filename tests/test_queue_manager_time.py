"""The queue manager on injected time: retries and lifetimes without waiting for the wall clock.

The manager runs in this process with a clock the test moves, against a real SMTP sink; the
queue, the state files and the sockets are the real ones. What takes 400 s or a week of wall
time in production takes milliseconds here, and the schedule is checked to the second.
"""

from __future__ import annotations

import asyncio
import email
import logging
from collections.abc import Awaitable, Callable

import pytest
from support.instance import SendworxHome
from support.sink import Behaviour, RecordingSink

from sendworx.engine.queue_manager import QueueManager
from sendworx.shared.logs import FORMAT
from sendworx.shared.queue_format import Envelope, Origin

BIRTH = 2_000_000_000.0


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _until(condition: Callable[[], bool]) -> None:
    """Poll a condition on files and on the sink's thread (no event to wait for), for 10 s."""
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def _run(
    home: SendworxHome, clock: FakeClock, steps: Callable[[QueueManager], Awaitable[None]]
) -> None:
    """Run the manager in this process while `steps` drive it; its delivery lines go to the
    instance's send.log as in the real process."""
    log_file = home.instance.log_file("send")
    assert log_file is not None
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    delivery_log = logging.getLogger("sendworx.delivery")
    delivery_log.addHandler(handler)
    delivery_log.setLevel(logging.INFO)

    async def scenario() -> None:
        manager = QueueManager(home.instance, clock=clock)
        running = asyncio.create_task(manager.run())
        try:
            await steps(manager)
        finally:
            manager.stop()
            await running

    try:
        asyncio.run(scenario())
    finally:
        delivery_log.removeHandler(handler)
        handler.close()


def _deliveries(home: SendworxHome, result: str) -> int:
    return sum(1 for line in home.deliveries() if line["result"] == result)


def test_a_deferred_message_waits_exactly_qmails_delay_then_goes(home: SendworxHome) -> None:
    clock = FakeClock(BIRTH)
    with RecordingSink("127.0.3.1", behaviour=Behaviour(refuse_rcpt="451 4.7.1 later")) as sink:
        home.routes(f"later.test:[127.0.3.1]:{sink.port}")
        home.instance.queue().inject(Envelope("s@origin.test", ("u@later.test",), BIRTH), b"hi\n")

        async def steps(manager: QueueManager) -> None:
            await _until(lambda: _deliveries(home, "deferred") == 1)
            [message_id] = home.queue_files()
            due = home.state(message_id)["next_attempt_at"]
            # qmail: birth + (isqrt(age) + 20)^2 with age 0, plus at most 5% of it as jitter.
            assert BIRTH + 400 <= due <= BIRTH + 420
            sink.behaviour.refuse_rcpt = None
            clock.now = due - 1  # a second early: nothing happens
            manager.wake()
            await asyncio.sleep(0.3)
            assert sink.received() == []
            clock.now = due
            manager.wake()
            await _until(lambda: len(sink.received()) == 1)
            await _until(home.queue_empty)

        _run(home, clock, steps)
    lines = home.deliveries()
    assert [line["result"] for line in lines] == ["deferred", "delivered"]
    assert [line["attempt"] for line in lines] == ["1", "2"]


def test_the_lifetime_turns_the_next_deferral_into_a_bounce(home: SendworxHome) -> None:
    home.set_control("queuelifetime", "86400\n")
    clock = FakeClock(BIRTH)
    busy = Behaviour(refuse_rcpt="450 4.2.1 mailbox busy")
    with RecordingSink("127.0.3.2", behaviour=busy) as remote, RecordingSink("127.0.3.3") as origin:
        home.routes(
            f"busy.test:[127.0.3.2]:{remote.port}", f"origin.test:[127.0.3.3]:{origin.port}"
        )
        home.instance.queue().inject(Envelope("a@origin.test", ("u@busy.test",), BIRTH), b"hi\n")

        async def steps(manager: QueueManager) -> None:
            await _until(lambda: _deliveries(home, "deferred") == 1)
            clock.now = BIRTH + 86400  # not yet past the lifetime: deferred again
            manager.retry_now()
            await _until(lambda: _deliveries(home, "deferred") == 2)
            assert origin.received() == []
            clock.now = BIRTH + 86401
            manager.retry_now()
            await _until(lambda: len(origin.received()) == 1)
            await _until(home.queue_empty)

        _run(home, clock, steps)
    [bounce] = origin.received()
    report = email.message_from_bytes(bounce.content).as_string()
    assert "Status: 4.4.7" in report
    assert "delivery time expired; last error: 450 4.2.1 mailbox busy" in report
    [failed] = [line for line in home.deliveries() if line["result"] == "failed"]
    assert (failed["status"], failed["attempt"]) == ("4.4.7", "3")


def test_an_account_over_its_hourly_limit_waits_for_the_window_and_others_do_not(
    home: SendworxHome, caplog: pytest.LogCaptureFixture
) -> None:
    """alice may send 2 messages an hour: her third waits (nothing written, no attempt) until
    the hour has slid past her first; bob and a bounce from alice's script go at once."""
    clock = FakeClock(BIRTH)
    (home.home / "policy.toml").write_text(
        '[[limit]]\nname = "accounts"\nscope = "account"\nmessages_per_hour = 2\n'
    )
    alice, bob = Origin("sendmail", 1001, "alice"), Origin("sendmail", 1002, "bob")
    queue = home.instance.queue()
    with RecordingSink("127.0.3.3") as sink:
        home.routes(f"far.test:[127.0.3.3]:{sink.port}")
        for number, (sender, origin) in enumerate(
            [("a@shop.test", alice)] * 3 + [("b@blog.test", bob), ("", alice)]
        ):
            envelope = Envelope(sender, (f"r{number}@far.test",), BIRTH, origin=origin)
            queue.inject(envelope, f"Subject: {number}\n\nhi\n".encode())

        async def steps(manager: QueueManager) -> None:
            await _until(lambda: len(sink.received()) == 4)
            await asyncio.sleep(0.3)
            assert len(sink.received()) == 4
            [waiting] = home.queue_files("mess")
            assert home.queue_files("state") == []  # it was never attempted
            assert manager.due.next_due_at() == BIRTH + 3600
            clock.now = BIRTH + 3599
            manager.wake()
            await asyncio.sleep(0.3)
            assert len(sink.received()) == 4
            clock.now = BIRTH + 3600
            manager.wake()
            await _until(lambda: len(sink.received()) == 5)
            await _until(home.queue_empty)
            assert waiting not in home.queue_files("mess")

        with caplog.at_level(logging.INFO, logger="sendworx.engine"):
            _run(home, clock, steps)
    subjects = [email.message_from_bytes(m.content)["Subject"] for m in sink.received()]
    assert sorted(subjects[:4]) == ["0", "1", "3", "4"] and subjects[4] == "2"
    said = [r.getMessage() for r in caplog.records if "limit accounts" in r.getMessage()]
    assert len(said) == 1 and 'reached for account "alice"' in said[0]
