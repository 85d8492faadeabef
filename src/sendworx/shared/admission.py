"""Asking the engine, before a message is queued, whether its sender is over a sending limit
whose action is `reject` (the engine keeps the counters; `engine/queue_manager.py` answers).

One request per connection on `run/admit.sock`: a JSON line {"sender", "account",
"recipients"}, a JSON line back: {} to go ahead, or {"rule", "code", "until"} to refuse. The
engine counts what it lets through. Whoever cannot ask (the engine stopped, slow, or the
socket out of reach) goes ahead: limits fail open, and the engine still applies the
`defer` rules at delivery.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from sendworx.shared import unix_sockets

TIMEOUT_SECONDS = 2.0
MAX_REPLY_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Refusal:
    rule: str
    code: int  # 451 (try later) or 550
    until: float  # when the window allows the message (wall-clock seconds)

    def text(self) -> str:
        if self.code == 550:
            return f"Sending limit {self.rule} reached"
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.until))
        return f"Sending limit {self.rule} reached; try again after {when}"

    def smtp_reply(self) -> str:
        return f"{self.code} {'5.7.1' if self.code == 550 else '4.7.1'} {self.text()}"


def _request(sender: str, account: str | None, recipients: int) -> bytes:
    document = {"sender": sender, "account": account, "recipients": recipients}
    return json.dumps(document).encode() + b"\n"


def _refusal(line: bytes) -> Refusal | None:
    document = json.loads(line)
    if not isinstance(document, dict) or "rule" not in document:
        return None
    return Refusal(str(document["rule"]), int(document["code"]), float(document["until"]))


def ask(path: Path, sender: str, account: str | None, recipients: int) -> Refusal | None:
    """For a process without an event loop (sendmail); None: go ahead."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(TIMEOUT_SECONDS)
            unix_sockets.connect(client, path)
            client.sendall(_request(sender, account, recipients))
            with client.makefile("rb") as reader:
                return _refusal(reader.readline(MAX_REPLY_BYTES))
    except (OSError, ValueError, KeyError, TypeError):
        return None


async def ask_async(
    path: Path, sender: str, account: str | None, recipients: int
) -> Refusal | None:
    """For the SMTP listener; None: go ahead."""
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            with unix_sockets.short_path(path) as address:
                reader, writer = await asyncio.open_unix_connection(address)
            try:
                writer.write(_request(sender, account, recipients))
                return _refusal(await reader.readline())
            finally:
                writer.close()
    except (OSError, TimeoutError, ValueError, KeyError, TypeError):
        return None
