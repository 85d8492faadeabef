"""A recording SMTP server (aiosmtpd in a thread) with the faults delivery must survive.

Behaviour hooks decide replies per recipient or per message; counters record connections.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from support.net import free_port, wait_for


@dataclass(frozen=True)
class Received:
    mail_from: str
    recipients: tuple[str, ...]
    content: bytes
    mail_options: tuple[str, ...]
    encrypted: bool
    at: float
    helo: str = ""  # the name the client gave in EHLO or HELO


@dataclass
class Behaviour:
    """Replies to choose; None means the normal positive reply."""

    rcpt_reply: Callable[[str], str | None] = lambda recipient: None
    # Refuse every RCPT with this reply until a test sets it back to None.
    refuse_rcpt: str | None = None
    data_reply: Callable[[Received], str | None] = lambda message: None
    data_delay: float = 0.0
    refuse_ehlo: bool = False


@dataclass
class Stats:
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler:
    def __init__(self, sink: RecordingSink) -> None:
        self.sink = sink

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> Any:
        if self.sink.behaviour.refuse_ehlo:
            return ["502 5.5.1 EHLO not implemented"]
        session.host_name = hostname
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.sink.behaviour.refuse_rcpt or self.sink.behaviour.rcpt_reply(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        message = Received(
            "" if envelope.mail_from in (None, "<>") else str(envelope.mail_from),
            tuple(envelope.rcpt_tos),
            envelope.original_content or b"",
            tuple(envelope.mail_options),
            session.ssl is not None,
            time.time(),
            str(session.host_name or ""),
        )
        if self.sink.behaviour.data_delay:
            await asyncio.sleep(self.sink.behaviour.data_delay)
        reply = self.sink.behaviour.data_reply(message)
        if reply is not None:
            return reply
        with self.sink.lock:
            self.sink.messages.append(message)
        return "250 2.0.0 accepted"


class _CountingSMTP(SMTP):
    def __init__(self, stats: Stats, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stats = stats

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        with self._stats.lock:
            self._stats.connections += 1
            self._stats.open_now += 1
            self._stats.most_open = max(self._stats.most_open, self._stats.open_now)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        with self._stats.lock:
            self._stats.open_now -= 1
        super().connection_lost(error)


class _Controller(Controller):
    def __init__(self, sink: RecordingSink, **kwargs: Any) -> None:
        self._sink = sink
        super().__init__(_Handler(sink), **kwargs)

    def factory(self) -> SMTP:
        return _CountingSMTP(self._sink.stats, self.handler, **self.SMTP_kwargs)


class RecordingSink:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        behaviour: Behaviour | None = None,
        tls_context: ssl.SSLContext | None = None,
        hostname: str = "sink.test",
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.behaviour = behaviour or Behaviour()
        self.messages: list[Received] = []
        self.lock = threading.Lock()
        self.stats = Stats()
        kwargs: dict[str, Any] = {"enable_SMTPUTF8": True, "server_hostname": hostname}
        if tls_context is not None:
            kwargs["tls_context"] = tls_context
        self._controller = _Controller(
            self, hostname=host, port=self.port, ready_timeout=5, **kwargs
        )

    def __enter__(self) -> RecordingSink:
        self._controller.start()
        # The controller's readiness probe is a session of its own; count only ours.
        wait_for(lambda: self.stats.open_now == 0, timeout=5)
        with self.stats.lock:
            self.stats.connections = self.stats.most_open = 0
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.messages)

    def wait_for_messages(self, count: int, timeout: float = 15.0) -> list[Received]:
        wait_for(lambda: len(self.received()) >= count, timeout)
        return self.received()

    def recipients(self) -> list[str]:
        return [recipient for message in self.received() for recipient in message.recipients]
