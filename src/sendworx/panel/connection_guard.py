"""Slow and greedy HTTP clients cannot starve the panel: deadlines for a request's headers
and body, and caps on open connections, overall and per client address.

uvicorn arms no timer on a connection until its first response, so a thousand connections
that never finish their headers stay open until the process runs out of file descriptors
and new clients are reset. The guard is uvicorn's own httptools protocol with timers:
- the headers of each request must arrive within `header_seconds` of the connection (or of
  the first byte after a keep-alive pause), its body within `body_seconds` of the headers;
  a late one is cut (a request the application is reading sees a disconnect);
- a connection beyond `max_connections`, or beyond `max_per_address` from one address, is
  closed as soon as it is accepted, before it costs more than its socket;
- garbage after a request on a kept-alive connection never hides that request's reply:
  uvicorn answers it with a bare 400 and closes the connection while the request is being
  served, so the action ran and its client never heard; the request now gets its own reply,
  requests queued behind it are dropped unrun, and then the connection closes.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@dataclass(frozen=True)
class Limits:
    header_seconds: float
    body_seconds: float
    max_connections: int
    max_per_address: int


def guarded_protocol(limits: Limits) -> type[HttpToolsProtocol]:
    """An HttpToolsProtocol class enforcing `limits` for every connection of one listener."""
    open_by_address: Counter[str] = Counter()

    class GuardedProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _address: str | None = None
        _in_request = False
        _garbage = False  # unparsable bytes arrived while a request was being served

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            address = self.client[0] if self.client else ""
            over = open_by_address[address] >= limits.max_per_address
            if over or len(self.connections) > limits.max_connections:
                transport.close()  # connection_lost follows; nothing was counted
                return
            self._address = address
            open_by_address[address] += 1
            self._arm(limits.header_seconds)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._address is not None:
                open_by_address[self._address] -= 1
                if open_by_address[self._address] <= 0:
                    del open_by_address[self._address]
                self._address = None
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if not self._in_request and self._deadline is None:
                self._arm(limits.header_seconds)  # the next request on a kept-alive connection
            super().data_received(data)

        def on_message_begin(self) -> None:
            self._in_request = True
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._arm(limits.body_seconds)
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm()
            self._in_request = False
            super().on_message_complete()

        def send_400_response(self, msg: str) -> None:
            if self.cycle is not None and not self.cycle.response_complete:
                self._garbage = True
                self.pipeline.clear()  # not started: they never run
                self.flow.pause_reading()
                return
            super().send_400_response(msg)

        def on_response_complete(self) -> None:
            if self._garbage:
                self.server_state.total_requests += 1
                self.transport.close()
                return
            super().on_response_complete()

        def _arm(self, seconds: float) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self, *_: Any) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedProtocol
