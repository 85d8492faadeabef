"""What every HTTP endpoint shares: reading a capped request body, and naming the peer.

A body over the limit is drained (up to a bound) so the client can read the error we send.
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope


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
