"""A large queue for the benchmarks that need one, and the timing helpers they share.

`fill` writes N deferred messages straight into an instance's queue (setup only: no fsync):
1,000 destinations, 100 sender domains plus bulk.test (every tenth message), 5,000 senders,
each deferred once, due again in a day, with a last reply like a real backlog's: a third the
same greylisting text, a third "mailbox full" naming the recipient, a third a rate limit
naming the MX host and a session (so most replies are distinct, as real ones are).

`prepared_home` makes an instance with such a queue, or reuses one a previous run left in
the directory given (`--home`: filling a million takes minutes; the panel's index, kept in
the same home, is reused with it).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
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
GREYLISTED = "451 4.7.1 greylisted, try again later"


def reply_for(number: int, recipient: str) -> str:
    kind = number % 3
    if kind == 0:
        return GREYLISTED
    if kind == 1:
        return f"452 4.2.2 <{recipient}>: mailbox full"
    return f"421 4.7.0 [mx.d{number % 1000}.test] too many connections, session {number:08x}"


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
        reply = reply_for(number, recipient)
        attempt = RecipientAttempt(recipient, "deferred", reply, f"mx.d{number % 1000}.test")
        state = DeliveryState(
            attempts=1,
            next_attempt_at=now + 86400,
            last_errors={recipient: reply},
            history=[AttemptLog(now - 60, (attempt,))],
        )
        (states / message_id).write_bytes(state.to_json())


def prepared_home(count: int, home: Path | None, http_port: int) -> tuple[Path, bool]:
    """An instance whose queue holds `count` messages from `fill`, its panel on `http_port`
    (plain HTTP) and nothing leaving (concurrency_remote 0); and whether it was reused."""
    if home is None:
        home = Path(tempfile.mkdtemp(prefix="sendworx-large-"))
    home.mkdir(parents=True, exist_ok=True)
    (home / "sendworx.toml").write_text(
        'helo_name = "bench.test"\n[metrics]\nport = 0\n'
        f"[panel]\nhttps_port = 0\nhttp_port = {http_port}\n"
    )
    marker = home / f".filled-{count}"
    if marker.exists():
        return home, True
    command = [sys.executable, "-m", "sendworx", "--home", str(home)]
    subprocess.run([*command, "init"], check=True, capture_output=True)
    (home / "control" / "concurrencyremote").write_text("0\n")
    started = time.monotonic()
    fill(home, count)
    print(f"filled {count} messages in {time.monotonic() - started:.1f}s", flush=True)
    marker.touch()
    return home, False


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
