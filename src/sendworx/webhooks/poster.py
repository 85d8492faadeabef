"""One webhook request, under the rules that keep a receiver from hurting us or being used
against others:

- where: the URL's host, if an address, and every address its name resolves to, must be
  allowed (shared/network_guard.py); the connection goes to an address judged so;
- how long: `webhooks.timeout_seconds` from connecting to the reply's last byte read;
- how much: the reply's headers within aiohttp's line and field limits, its body read up to
  `webhooks.reply_bytes` (the connection is dropped rather than read further);
- never followed: a redirect is an answer like any other non-2xx (a failure);
- TLS: certificates verified (against the system's and `webhooks.ca_file`), unless
  `webhooks.tls_verify` is false; no proxy from the environment, no cookies kept.

aiohttp does the HTTP (keep-alive connections per endpoint, up to
`webhooks.connections_per_endpoint`); this module decides what it may do.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from sendworx import __version__
from sendworx.shared.config import WebhooksConfig
from sendworx.shared.network_guard import AddressGuard, RefusedAddress

REPLY_KEPT_CHARS = 1000
USER_AGENT = f"sendworx-webhooks/{__version__}"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int  # the HTTP status; 0 when there was none
    reply: str  # the body's start, a redirect's Location, or what went wrong
    milliseconds: float


class GuardedResolver(AbstractResolver):
    """Resolves as the system does, then refuses the whole name if any of its addresses is
    not allowed: the connection is only ever made to addresses returned from here."""

    def __init__(self, guard: AddressGuard) -> None:
        self._guard = guard
        self._resolver = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._resolver.resolve(host, port, family)
        for result in found:
            why = self._guard.refusal(ipaddress.ip_address(result["host"]))
            if why is not None:
                raise RefusedAddress(f"{host} resolves to {why}")
        return found

    async def close(self) -> None:
        await self._resolver.close()


def tls_context(config: WebhooksConfig) -> ssl.SSLContext:
    if not config.tls_verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context = ssl.create_default_context()
    if config.ca_file is not None:
        context.load_verify_locations(cafile=str(config.ca_file))
    return context


class Poster:
    def __init__(self, config: WebhooksConfig, guard: AddressGuard) -> None:
        self.config = config
        self.guard = guard
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            config = self.config
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(self.guard),
                limit=0,
                limit_per_host=config.connections_per_endpoint,
                ssl=tls_context(config),
                ttl_dns_cache=60,
                keepalive_timeout=30,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=config.timeout_seconds, connect=min(config.timeout_seconds, 10.0)
                ),
                auto_decompress=False,
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                raise_for_status=False,
                skip_auto_headers=("Accept-Encoding",),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        started = time.monotonic()

        def answer(status: int, reply: str) -> Answer:
            return Answer(status, reply, (time.monotonic() - started) * 1000)

        try:
            self.guard.check_url(url)
            session = self._open()
            sent = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers}
            async with session.post(url, data=body, headers=sent, allow_redirects=False) as reply:
                text = await self._read(reply)
                if 300 <= reply.status < 400:
                    where = reply.headers.get("Location", "")[:300]
                    return answer(reply.status, f"redirect to {where!r} not followed")
                return answer(reply.status, text)
        except RefusedAddress as error:
            return answer(0, f"refused: {error}")
        except TimeoutError:
            return answer(0, f"no answer within {self.config.timeout_seconds:g}s")
        except aiohttp.ClientConnectorCertificateError as error:
            return answer(0, f"TLS certificate not trusted: {error.certificate_error}")
        except aiohttp.ClientError as error:
            return answer(0, _described(error))
        except (OSError, ssl.SSLError, ValueError) as error:
            return answer(0, f"{type(error).__name__}: {error}")

    async def _read(self, reply: aiohttp.ClientResponse) -> str:
        """The body's start, reading at most `reply_bytes`; past that the connection is
        dropped, not read on."""
        cap, kept, total = self.config.reply_bytes, bytearray(), 0
        while total < cap:
            chunk = await reply.content.readany()
            if not chunk:
                break
            total += len(chunk)
            if len(kept) < REPLY_KEPT_CHARS:
                kept += chunk[: REPLY_KEPT_CHARS - len(kept)]
        if total >= cap and not reply.content.at_eof():
            reply.close()  # a reply too long for us: this connection is not reused
        return _printable(bytes(kept).decode("utf-8", "replace"))


def _printable(text: str) -> str:
    return "".join(char if char.isprintable() else " " for char in text).strip()


def _described(error: Any) -> str:
    text = str(error) or type(error).__name__
    return _printable(f"{type(error).__name__}: {text}")[:REPLY_KEPT_CHARS]


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
    for *_, address in found:
        why = guard.refusal(ipaddress.ip_address(address[0]))
        if why is not None:
            return f"{target.host} resolves to {why}; webhooks.allow_networks can allow it", True
    return None, True
