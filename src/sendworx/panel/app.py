"""The panel's HTTP surface: POST /xmlrpc (query strings ignored, errors always HTTP 200).

Bodies are read with a size cap so a huge upload costs nothing but a fault reply.
"""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sendworx.api.auth import Authenticator
from sendworx.api.errors import ApiError
from sendworx.api.registry import Registry, Reply
from sendworx.transports import xmlrpc

log = logging.getLogger("sendworx.panel")
XML = "text/xml; charset=utf-8"
READ_ONLY_PREFIXES = ("is", "list", "query", "getSession")


class TooLarge(Exception):
    pass


def drain_limit(limit: int) -> int:
    """Oversized bodies are read and discarded up to here so the client can read our fault."""
    return max(limit * 8, 64 * 1024 * 1024)


async def read_capped(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > drain_limit(limit):
        raise TooLarge
    if declared.isdigit() and int(declared) <= limit:
        return await request.body()  # the common case: a declared, acceptable length
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > drain_limit(limit):
            raise TooLarge
        if size <= limit:
            chunks.append(chunk)
    if size > limit:
        raise TooLarge
    return b"".join(chunks)


def create_app(
    registry: Registry, authenticator: Authenticator, max_request_bytes: int
) -> Starlette:
    async def route_xmlrpc(request: Request) -> Response:
        try:
            body = await read_capped(request, max_request_bytes)
            call = xmlrpc.parse_call(body)
        except TooLarge:
            fault = xmlrpc.encode_fault(
                xmlrpc.FAULT_TOO_LARGE, f"request larger than {max_request_bytes} bytes"
            )
            return Response(fault, media_type=XML)
        except xmlrpc.MalformedRequest as error:
            return Response(xmlrpc.encode_fault(error.code, error.message), media_type=XML)
        peer = request.client.host if request.client else "unknown"
        caller_email = "-"
        try:
            caller = await authenticator.authenticate(call.auth, peer)
        except ApiError as error:
            reply = Reply.from_error(error)
        except Exception:
            # A broken users file must still answer in the API's format, not as an HTTP 500.
            log.exception("authentication failed unexpectedly")
            reply = Reply(1, "internal error; see the panel log", 500)
        else:
            caller_email = caller.email
            reply = await registry.run(caller, call.controller, call.action, call.input)
        # Monitoring polls (successful reads) at DEBUG; changes and failures are the audit trail.
        quiet = reply.status == 0 and call.action.startswith(READ_ONLY_PREFIXES)
        log.log(
            logging.DEBUG if quiet else logging.INFO,
            "api peer=%s user=%s controller=%r action=%r status=%d",
            peer,
            caller_email,
            call.controller[:100],
            call.action[:100],
            reply.status,
        )
        return Response(xmlrpc.encode_reply(reply.as_struct()), media_type=XML)

    return Starlette(routes=[Route("/xmlrpc", route_xmlrpc, methods=["POST"])])
