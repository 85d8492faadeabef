"""A large queue for the benchmarks that need one, and the timing helpers they share.

`fill` writes N deferred messages straight into an instance's queue (setup only: no fsync):
1,000 destinations, 100 sender domains plus bulk.test (every tenth message), each deferred
once with a real-looking reply, due again in a day.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sendworx.shared.queue_format import (
    AttemptLog,
    DeliveryState,
    Envelope,
    RecipientAttempt,
    encode_message,
    new_message_id,
)

BODY = b"Subject: bench\r\n\r\n" + (b"x" * 76 + b"\r\n") * 26
REPLIES = ("451 4.7.1 greylisted, try again later", "452 4.2.2 mailbox full", "421 4.7.0 rate")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fill(home: Path, count: int) -> None:
    messages, states = home / "queue" / "mess", home / "queue" / "state"
    messages.mkdir(parents=True, exist_ok=True)  # `sendworx init` made them
    states.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for number in range(count):
        message_id = new_message_id()
        recipient = f"u{number}@d{number % 1000}.test"
        # Every tenth message comes from bulk.test: the 10,000 a bulk hold takes.
        domain = "bulk.test" if number % 10 == 0 else f"shop{number % 100}.test"
        sender = f"s{number % 5000}@{domain}"
        envelope = Envelope(sender, (recipient,), now - number % 7200)
        (messages / message_id).write_bytes(encode_message(envelope, BODY))
        reply = REPLIES[number % len(REPLIES)]
        attempt = RecipientAttempt(recipient, "deferred", reply, f"mx.d{number % 1000}.test")
        state = DeliveryState(
            attempts=1,
            next_attempt_at=now + 86400,
            last_errors={recipient: reply},
            history=[AttemptLog(now - 60, (attempt,))],
        )
        (states / message_id).write_bytes(state.to_json())


def timed(call: Callable[[], Any], rounds: int) -> list[float]:
    """Each call's wall time, sorted."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return sorted(times)


def percentile(times: list[float], fraction: float) -> float:
    """Of sorted seconds, in milliseconds."""
    return times[min(len(times) - 1, int(len(times) * fraction))] * 1000
