"""POST /xmlrpc: `iworx.route` over XML-RPC (query strings ignored, errors always HTTP 200)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from sendworx.panel.dispatch import Dispatcher, TooLarge, peer_of, read_capped
from sendworx.transports import xmlrpc
from sendworx.transports.route_call import FAULT_TOO_LARGE, MalformedRequest

XML = "text/xml; charset=utf-8"


def xmlrpc_endpoint(dispatcher: Dispatcher) -> Callable[[Request], Awaitable[Response]]:
    limit = dispatcher.max_request_bytes

    async def endpoint(request: Request) -> Response:
        try:
            call = xmlrpc.parse_call(await read_capped(request, limit))
        except TooLarge:
            fault = xmlrpc.encode_fault(FAULT_TOO_LARGE, f"request larger than {limit} bytes")
            return Response(fault, media_type=XML)
        except MalformedRequest as error:
            return Response(xmlrpc.encode_fault(error.code, error.message), media_type=XML)
        reply = await dispatcher.dispatch(call, peer_of(request), "xmlrpc")
        return Response(xmlrpc.encode_reply(reply.as_struct()), media_type=XML)

    return endpoint
