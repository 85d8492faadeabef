"""POST /xmlrpc: `iworx.route` over XML-RPC (query strings ignored, errors always HTTP 200).

A plain ASGI app rather than a Request -> Response function: this is the path monitoring
polls hit thousands of times a second, and the two objects per request were measurable.
"""

from __future__ import annotations

import logging

from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from sendworx.api.dispatcher import Dispatcher
from sendworx.shared.wire import Reply
from sendworx.transports import xmlrpc
from sendworx.transports.http_body import TooLarge, peer_of, read_body
from sendworx.transports.route_call import FAULT_TOO_LARGE, MalformedRequest

XML = b"text/xml; charset=utf-8"
log = logging.getLogger("sendworx.panel")


def header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def encode(result: Reply) -> bytes:
    try:
        return xmlrpc.encode_reply(result.status, result.payload, result.reply_code)
    except (TypeError, OverflowError, ValueError):
        # A payload XML-RPC cannot carry is our bug: answer in the API's format, and log it.
        log.exception("cannot encode the reply to an XML-RPC call")
        failed = Reply.internal_error()
        return xmlrpc.encode_reply(failed.status, failed.payload, failed.reply_code)


class XmlRpcEndpoint:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.limit = dispatcher.max_request_bytes
        self.calls = xmlrpc.RecentCalls()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await read_body(receive, header(scope, b"content-length"), self.limit)
            request = self.calls.parse(body)
        except ClientDisconnect:
            return  # gone before its request was complete: nobody to answer
        except TooLarge:
            reply = xmlrpc.encode_fault(FAULT_TOO_LARGE, f"request larger than {self.limit} bytes")
        except MalformedRequest as error:
            reply = xmlrpc.encode_fault(error.code, error.message)
        else:
            reply = encode(await self.dispatcher.dispatch(request, peer_of(scope), "xmlrpc"))
        headers = [(b"content-type", XML), (b"content-length", b"%d" % len(reply))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": reply})
