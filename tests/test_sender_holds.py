"""The circuit breaker of the sending policy: a sender that bursts, or whose mail mostly fails,
is put on hold — its queued and new mail kept, never attempted — until an operator releases
or purges the hold. The manager runs in this process on injected time against real sinks.
"""

from __future__ import annotations

import asyncio
import email
import json
import subprocess

from support.instance import SendworxHome
from support.sink import Behaviour, RecordingSink
from test_queue_manager_time import BIRTH, FakeClock, _run, _until

from sendworx.engine.queue_manager import QueueManager
from sendworx.shared.holds import HoldAction, read_holds
from sendworx.shared.queue_format import Envelope, Origin

ALICE, BOB = Origin("sendmail", 1001, "alice"), Origin("sendmail", 1002, "bob")
BURST_POLICY = """
[[breaker]]
name = "burst"
scope = "account"
window_minutes = 10
messages = 3
notify = "abuse@admin.test"
"""


def _inject(home: SendworxHome, origin: Origin, count: int, at: float, tag: str) -> None:
    queue = home.instance.queue()
    for number in range(count):
        envelope = Envelope(f"{tag}@{tag}.test", (f"{tag}{number}@far.test",), at, origin=origin)
        queue.inject(envelope, f"Subject: {tag} {number}\n\nhi\n".encode())


def _subjects(sink: RecordingSink) -> list[str]:
    return sorted(str(email.message_from_bytes(m.content)["Subject"]) for m in sink.received())


def _held_by(home: SendworxHome) -> list[str]:
    """Each queued message's hold ("" when it has none or no state yet)."""
    states = set(home.queue_files("state"))
    return sorted(
        home.state(message_id).get("held_by", "") if message_id in states else ""
        for message_id in home.queue_files()
    )


def test_a_burst_from_one_account_holds_it_and_not_the_other(home: SendworxHome) -> None:
    """alice sends 6 within the window (3 allowed), bob 2: alice's 3 go, then she is on hold
    with the 3 others kept; bob's go; the admin is told; a release lets alice's mail go."""
    (home.home / "policy.toml").write_text(BURST_POLICY)
    clock = FakeClock(BIRTH)
    with RecordingSink("127.0.3.4") as far, RecordingSink("127.0.3.5") as admin:
        home.routes(f"far.test:[127.0.3.4]:{far.port}", f"admin.test:[127.0.3.5]:{admin.port}")
        _inject(home, ALICE, 6, BIRTH, "alice")
        _inject(home, BOB, 2, BIRTH, "bob")

        async def steps(manager: QueueManager) -> None:
            await _until(lambda: len(far.received()) == 5 and len(admin.received()) == 1)
            await _until(lambda: _held_by(home) == ["account:alice"] * 3)
            await asyncio.sleep(0.3)
            assert len(far.received()) == 5
            [hold] = read_holds(home.instance.holds_path).values()
            assert (hold.hold_id, hold.rule) == ("account:alice", "burst")
            assert hold.reason == "more than 3 messages in 10 minutes"
            # New mail from alice is held at once, even long after the burst.
            clock.now = BIRTH + 7200
            _inject(home, ALICE, 1, clock.now, "alice")
            manager.wake()
            await _until(lambda: _held_by(home) == ["account:alice"] * 4)
            status = manager.status()
            assert status["held"] == 4
            released = await manager.end_hold("account:alice", HoldAction.RELEASE)
            assert len(released.touched) == 4
            await _until(lambda: len(far.received()) == 9)
            await _until(home.queue_empty)
            assert read_holds(home.instance.holds_path) == {}

        _run(home, clock, steps)
        [notice] = admin.received()
    assert _subjects(far).count("bob 0") == 1 and len(_subjects(far)) == 9
    text = email.message_from_bytes(notice.content)
    assert text["Subject"] == "Outbound mail held: account alice"
    assert "more than 3 messages in 10 minutes" in text.get_payload()
    assert notice.mail_from == ""


def test_a_hold_survives_a_restart_and_purge_deletes_what_it_held(home: SendworxHome) -> None:
    (home.home / "policy.toml").write_text(BURST_POLICY.replace('notify = "abuse@admin.test"', ""))
    clock = FakeClock(BIRTH)
    with RecordingSink("127.0.3.4") as far:
        home.routes(f"far.test:[127.0.3.4]:{far.port}")
        _inject(home, ALICE, 5, BIRTH, "alice")

        async def burst(manager: QueueManager) -> None:
            await _until(lambda: _held_by(home) == ["account:alice"] * 2)

        _run(home, clock, burst)
        _inject(home, ALICE, 1, BIRTH + 1, "alice")  # while the engine is stopped

        async def after_restart(manager: QueueManager) -> None:
            await _until(lambda: _held_by(home) == ["account:alice"] * 3)
            assert sorted(manager.held) == sorted(home.queue_files())
            purged = await manager.end_hold("account:alice", HoldAction.PURGE)
            assert len(purged.touched) == 3
            assert home.queue_empty()

        _run(home, clock, after_restart)
    assert len(far.received()) == 3


def test_mostly_failing_mail_trips_the_failure_share(home: SendworxHome) -> None:
    """A sender whose recipients are refused (a spam run to harvested addresses) is held once
    at least min_attempts recipients were tried and half of them were deferred or bounced."""
    (home.home / "policy.toml").write_text(
        '[[breaker]]\nname = "bad-lists"\nscope = "domain"\nfailure_share = 0.5\nmin_attempts = 4\n'
    )
    clock = FakeClock(BIRTH)
    refused = Behaviour(refuse_rcpt="450 4.2.1 mailbox busy")
    with RecordingSink("127.0.3.4", behaviour=refused) as far:
        home.routes(f"far.test:[127.0.3.4]:{far.port}")
        for number in range(8):
            envelope = Envelope("x@spam.test", (f"u{number}@far.test",), BIRTH, origin=ALICE)
            home.instance.queue().inject(envelope, b"hi\n")

        async def steps(manager: QueueManager) -> None:
            # Deferred before the trip or after it, every one ends up held, none is lost.
            await _until(lambda: _held_by(home) == ["domain:spam.test"] * 8)

        _run(home, clock, steps)
    hold = read_holds(home.instance.holds_path)["domain:spam.test"]
    assert hold.reason.startswith("4 of 4 recipients deferred or bounced")
    assert json.loads(home.instance.holds_path.read_text())["holds"][0]["rule"] == "bad-lists"


def test_an_unreadable_holds_file_stops_the_engine_instead_of_dropping_the_holds(
    home: SendworxHome,
) -> None:
    home.instance.holds_path.write_text('{"holds": [{"scope": "planet"}]}')
    started = subprocess.run(home.command("send"), capture_output=True, text=True, timeout=30)
    assert started.returncode == 78
    assert "holds.json: not a holds file" in started.stderr
