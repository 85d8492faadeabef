"""What every endpoint shares: reading a capped body, and running one route call for a peer.

Authentication, the registry and the audit log line are the same whatever the wire format.
"""

from __future__ import annotations

import logging

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from sendworx.api.auth import Authenticator
from sendworx.api.registry import Registry
from sendworx.shared import wire
from sendworx.shared.errors import ApiError
from sendworx.shared.wire import Reply

log = logging.getLogger("sendworx.panel")
READ_ONLY_PREFIXES = ("is", "list", "query", "getSession")


class TooLarge(Exception):
    pass


# What an endpoint returns for a client that left mid-request: never sent, nothing logged.
GONE = Response(status_code=400)


def drain_limit(limit: int) -> int:
    """Oversized bodies are read and discarded up to here so the client can read our fault."""
    return max(limit * 8, 64 * 1024 * 1024)


async def read_body(receive: Receive, declared: str, limit: int) -> bytes:
    """The request body, at most `limit` bytes; TooLarge (after draining) for more.

    `declared` is the Content-Length header as sent, or "" for a chunked body.
    """
    drain = drain_limit(limit)
    if declared.isdigit() and int(declared) > drain:
        raise TooLarge
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > drain:
            raise TooLarge
        if size <= limit:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if size > limit:
        raise TooLarge
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_capped(request: Request, limit: int) -> bytes:
    return await read_body(request.receive, request.headers.get("content-length", ""), limit)


def peer_of(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class Dispatcher:
    def __init__(
        self, registry: Registry, authenticator: Authenticator, max_request_bytes: int
    ) -> None:
        self.registry = registry
        self.authenticator = authenticator
        self.max_request_bytes = max_request_bytes

    async def dispatch(self, request: wire.Request, peer: str, transport: str) -> Reply:
        caller_email = "-"
        call = request.call
        try:
            caller = await self.authenticator.authenticate(request.auth, peer)
        except ApiError as error:
            reply = Reply.from_error(error)
        except Exception:
            # A broken users file must still answer in the API's format, not as an HTTP 500.
            log.exception("authentication failed unexpectedly")
            reply = Reply.internal_error()
        else:
            caller_email = caller.email
            reply = await self.registry.run(caller, call)
        # Monitoring polls (successful reads) at DEBUG; changes and failures are the audit trail.
        quiet = reply.status == 0 and call.action.startswith(READ_ONLY_PREFIXES)
        level = logging.DEBUG if quiet else logging.INFO
        if not log.isEnabledFor(level):  # the usual case for a poll: no arguments to build
            return reply
        log.log(
            level,
            "api %s peer=%s user=%s controller=%r action=%r status=%d",
            transport,
            peer,
            caller_email,
            call.controller[:100],
            call.action[:100],
            reply.status,
        )
        return reply
