"""One webhook request, under the rules that keep a receiver from hurting us or being used
against others:

- where: the URL's host, if an address, and every address its name resolves to, must be
  allowed (shared/network_guard.py); the connection goes to an address judged so (a name's
  answer is kept a minute, then asked again and judged again);
- how long: `webhooks.timeout_seconds` from resolving and connecting to the reply's last byte
  read;
- how much: the reply's headers up to 16 KiB, its body read up to `webhooks.reply_bytes`
  (past that the connection is dropped, not read on);
- never followed: a redirect is an answer like any other non-2xx (a failure);
- TLS: certificates verified (against the system's and `webhooks.ca_file`) for the URL's
  host name, unless `webhooks.tls_verify` is false; no proxy, no cookies, no compression.

A `Lane` is one worker's keep-alive connection to one endpoint (http_client.py).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from sendworx import __version__
from sendworx.shared.config import WebhooksConfig
from sendworx.shared.network_guard import AddressGuard, RefusedAddress, Target
from sendworx.webhooks.http_client import Connection, NoAnswer, ReplyError

USER_AGENT = f"sendworx-webhooks/{__version__}"
_FIXED_HEADERS = f"User-Agent: {USER_AGENT}\r\nContent-Type: application/json\r\n"
RESOLVED_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Answer:
    status: int  # the HTTP status; 0 when there was none
    reply: str  # the body's start, a redirect's Location, or what went wrong
    milliseconds: float


def tls_context(config: WebhooksConfig) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not config.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif config.ca_file is not None:
        context.load_verify_locations(cafile=str(config.ca_file))
    return context


def _printable(text: str) -> str:
    if text.isprintable():  # most replies (and every empty one)
        return text.strip()
    return "".join(char if char.isprintable() else " " for char in text).strip()


@dataclass(frozen=True, slots=True)
class _Url:
    target: Target
    head: bytes  # the request line and the Host header


class Poster:
    """What every lane shares: the rules, TLS, checked URLs and judged name answers."""

    def __init__(self, config: WebhooksConfig, guard: AddressGuard) -> None:
        self.config = config
        self.guard = guard
        self.tls = tls_context(config)
        self._urls: dict[str, _Url] = {}
        self._resolved: dict[tuple[str, int], tuple[float, list[str]]] = {}

    def url(self, url: str) -> _Url:
        known = self._urls.get(url)
        if known is None:
            target = self.guard.check_url(url)
            parts = urlsplit(url)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            host = target.host.encode("idna").decode() if not target.literal else target.host
            if target.literal is not None and target.literal.version == 6:
                host = f"[{host}]"
            default = 443 if target.scheme == "https" else 80
            authority = host if target.port == default else f"{host}:{target.port}"
            head = f"POST {path} HTTP/1.1\r\nHost: {authority}\r\n".encode()
            known = _Url(target, head)
            if len(self._urls) > 1000:
                self._urls.clear()
            self._urls[url] = known
        return known

    async def addresses(self, target: Target) -> list[str]:
        """Where to connect: judged addresses of the host (RefusedAddress if any is not
        allowed)."""
        if target.literal is not None:
            return [str(target.literal)]
        key = (target.host, target.port)
        now = time.monotonic()
        known = self._resolved.get(key)
        if known is not None and known[0] > now:
            return known[1]
        loop = asyncio.get_running_loop()
        try:
            found = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            raise ReplyError(f"{target.host} does not resolve: {error.strerror}") from error
        addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
        refusal = self.guard.name_refusal(target.host, addresses)
        if refusal is not None:
            raise RefusedAddress(refusal)
        self._resolved[key] = (now + RESOLVED_SECONDS, addresses)
        return addresses

    def lane(self) -> Lane:
        return Lane(self)


class Lane:
    """One worker's connection to an endpoint, kept between requests."""

    def __init__(self, poster: Poster) -> None:
        self.poster = poster
        self._connection: Connection | None = None
        self._url = ""

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        started = time.monotonic()

        def answer(status: int, reply: str) -> Answer:
            return Answer(status, reply, (time.monotonic() - started) * 1000)

        timeout = self.poster.config.timeout_seconds
        too_late = f"no answer within {timeout:g}s"
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            status, text = await self._post(url, body, headers, deadline, too_late)
            return answer(status, text)
        except TimeoutError:  # resolving or connecting
            self.close()
            return answer(0, too_late)
        except RefusedAddress as error:
            self.close()
            return answer(0, f"refused: {error}")
        except ssl.SSLCertVerificationError as error:
            self.close()
            return answer(0, f"TLS certificate not trusted: {error.verify_message}")
        except ReplyError as error:
            self.close()
            return answer(0, str(error))
        except (OSError, ssl.SSLError) as error:
            self.close()
            return answer(0, _printable(f"{type(error).__name__}: {error}")[:300])

    async def _post(
        self, url: str, body: bytes, headers: dict[str, str], deadline: float, too_late: str
    ) -> tuple[int, str]:
        poster = self.poster
        checked = poster.url(url)
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = b"".join(
            (
                checked.head,
                f"{_FIXED_HEADERS}Content-Length: {len(body)}\r\n{extra}\r\n".encode(),
                body,
            )
        )
        now = time.monotonic()
        reused = self._connection is not None and self._url == url and self._connection.usable(now)
        if not reused:
            async with asyncio.timeout_at(deadline):
                await self._connect(url, checked.target)
        assert self._connection is not None
        try:
            reply = await self._connection.request(request, deadline, too_late)
        except NoAnswer:
            raise
        except ReplyError:
            if not reused or self._connection.got_bytes:
                raise
            # The receiver had closed the kept connection: once more, on a new one.
            async with asyncio.timeout_at(deadline):
                await self._connect(url, checked.target)
            reply = await self._connection.request(request, deadline, too_late)
        if 300 <= reply.status < 400:
            return reply.status, f"redirect to {reply.location!r} not followed"
        return reply.status, _printable(bytes(reply.body).decode("utf-8", "replace"))

    async def _connect(self, url: str, target: Target) -> None:
        self.close()
        poster = self.poster
        addresses = await poster.addresses(target)
        tls = poster.tls if target.scheme == "https" else None
        failure: OSError | None = None
        for address in addresses:
            connection = Connection(poster.config.reply_bytes)
            try:
                await connection.open(address, target.port, tls, target.host)
            except ssl.SSLError:
                raise
            except OSError as error:
                failure = error
                continue
            self._connection, self._url = connection, url
            return
        raise ReplyError(f"cannot connect to {target.host} port {target.port}: {failure}")


async def resolve_refusal(guard: AddressGuard, url: str) -> tuple[str | None, bool]:
    """For the API, when an endpoint is added or changed: why its URL is refused (None if
    not), and whether its host resolved at all."""
    try:
        target = guard.check_url(url)
    except RefusedAddress as error:
        return str(error), False
    if target.literal is not None:
        return None, True
    loop = asyncio.get_running_loop()
    try:
        found = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return None, False
    return guard.name_refusal(target.host, (str(info[4][0]) for info in found)), True
