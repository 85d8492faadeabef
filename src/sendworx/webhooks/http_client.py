"""One keep-alive HTTP/1.1 connection that posts webhook requests: asyncio's transports (and
its TLS) carry the bytes, httptools (llhttp, the C parser uvicorn uses) reads the replies.

Why not a general client: the sender makes one request per event, and at a relay's pace that
is thousands a second on the same machine as the mail. With aiohttp's client the sender spent
about twice the CPU per event (10,000 events to the same receiver: 2.75 s against 1.36-1.51 s,
start-up included; docs/benchmarks.md); and a webhook request needs little of a general
client: a POST of bytes we built, one reply read under caps, no redirects, no cookies, no
proxies, no compression.

What it does:
- connects to an address already judged (network_guard.py; the caller resolves), with TLS
  verified against the URL's host name for https;
- writes the whole request at once; reads the status line and headers (at most
  MAX_HEADER_BYTES) and the body up to a cap, keeping its first REPLY_KEPT_CHARS: a longer
  body ends the connection instead of being read;
- keeps the connection (and its parser) for the next request when the reply allows it; a
  reused connection that the peer had closed (no byte of reply came) is retried once on a
  new one;
- gives up on a reply not complete by the request's deadline (NoAnswer): one timer per
  connection, moved on only when it fires, rather than one set and cancelled per request.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httptools

MAX_HEADER_BYTES = 16384
REPLY_KEPT_CHARS = 1000
IDLE_SECONDS = 30.0  # a connection unused this long is closed rather than reused


class ReplyError(Exception):
    """No usable reply: the connection closed, or the reply broke HTTP or our caps."""


class NoAnswer(ReplyError):
    """The reply was not complete by the deadline."""


@dataclass
class Reply:
    status: int = 0
    body: bytearray = field(default_factory=bytearray)
    location: str = ""
    read: int = 0  # body bytes read
    truncated: bool = False  # more than the cap: the connection was closed


class _Exchange(asyncio.Protocol):
    """The connection's protocol: a reply at a time, parsed as it arrives."""

    def __init__(self, reply_cap: int) -> None:
        self.reply_cap = reply_cap
        self.transport: asyncio.BaseTransport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Reply] | None = None
        self._reply = Reply()
        self._header_bytes = 0
        self.got_bytes = False
        self._deadline = 0.0  # on the loop's clock
        self._too_late = ""
        self._watch: asyncio.TimerHandle | None = None

    # asyncio's side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's transports are not asyncio.Transport's kin

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        if self._waiter is None or self._waiter.done():
            self._abort(ReplyError("bytes from the receiver when no request was waiting"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._abort(ReplyError("the receiver switched protocols"))
        except httptools.HttpParserError as error:
            cause = error.__context__
            self._abort(
                cause if isinstance(cause, ReplyError) else ReplyError(f"not HTTP: {error}")
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ReplyError("the receiver closed the connection"))

    # httptools' callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > MAX_HEADER_BYTES:
            raise ReplyError(f"reply headers over {MAX_HEADER_BYTES} bytes")
        if name.lower() == b"location":
            self._reply.location = value[:300].decode("latin-1")

    def on_headers_complete(self) -> None:
        self._reply.status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        reply = self._reply
        reply.read += len(body)
        if len(reply.body) < REPLY_KEPT_CHARS:
            reply.body += body[: REPLY_KEPT_CHARS - len(reply.body)]
        if reply.read > self.reply_cap:
            reply.truncated = True
            self._finish(keep=False)

    def on_message_complete(self) -> None:
        self._finish(keep=self._parser.should_keep_alive())

    # ours
    def _finish(self, *, keep: bool) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(self._reply)
        if not keep:
            self.close()

    def _abort(self, error: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self.transport is not None:
            self.transport.abort()  # type: ignore[attr-defined]

    def send(self, request: bytes, deadline: float, too_late: str) -> asyncio.Future[Reply]:
        """Writes `request`; the future is the reply, or NoAnswer(too_late) at `deadline`
        (the loop's clock)."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._reply, self._header_bytes = Reply(), 0
        self._waiter = loop.create_future()
        self.got_bytes = False
        self._deadline, self._too_late = deadline, too_late
        if self._watch is None:
            self._watch = loop.call_at(deadline, self._check)
        self.transport.write(request)  # type: ignore[attr-defined]
        return self._waiter

    def _check(self) -> None:
        """The timer fired: a reply overdue ends the connection; one still in time (a later
        request's) sets the timer again, for its deadline; with none waiting it stops."""
        self._watch = None
        if self._waiter is None or self._waiter.done():
            return
        loop = asyncio.get_running_loop()
        if loop.time() >= self._deadline:
            self._abort(NoAnswer(self._too_late))
        else:
            self._watch = loop.call_at(self._deadline, self._check)


class Connection:
    """A worker's connection to one endpoint, opened when first needed and kept."""

    def __init__(self, reply_cap: int) -> None:
        self.reply_cap = reply_cap
        self._exchange: _Exchange | None = None
        self._used_at = 0.0
        self.peer = ""

    async def open(
        self, address: str, port: int, tls: object | None, server_hostname: str | None
    ) -> None:
        loop = asyncio.get_running_loop()
        exchange = _Exchange(self.reply_cap)
        await loop.create_connection(
            lambda: exchange,
            address,
            port,
            ssl=tls,  # type: ignore[arg-type]
            server_hostname=server_hostname if tls is not None else None,
        )
        self._exchange = exchange
        self.peer = address

    def usable(self, now: float) -> bool:
        exchange = self._exchange
        return exchange is not None and not exchange.closed and now - self._used_at < IDLE_SECONDS

    async def request(self, request: bytes, deadline: float, too_late: str) -> Reply:
        """Posts `request` on the open connection; ReplyError if no reply came, NoAnswer if
        none complete by `deadline` (the loop's clock)."""
        exchange = self._exchange
        assert exchange is not None
        self._used_at = time.monotonic()
        try:
            return await exchange.send(request, deadline, too_late)
        except BaseException:
            exchange.close()
            raise

    @property
    def got_bytes(self) -> bool:
        return self._exchange is not None and self._exchange.got_bytes

    def close(self) -> None:
        if self._exchange is not None:
            self._exchange.close()
            self._exchange = None
