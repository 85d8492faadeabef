"""XML-RPC for `iworx.route(auth, controller, action, input)`, parsed without DTDs or entities.

Malformed requests get an XML-RPC fault; everything else gets a {status, payload, reply_code}.
"""

from __future__ import annotations

import xmlrpc.client

from sendworx.transports.route_call import (
    FAULT_METHOD,
    FAULT_PARSE,
    MalformedRequest,
    RouteCall,
    route_call,
)
from sendworx.transports.xmlrpc_reader import read_call
from sendworx.transports.xmlrpc_writer import encode_reply

METHOD = "iworx.route"
__all__ = ["encode_fault", "encode_reply", "parse_call"]


def parse_call(body: bytes) -> RouteCall:
    try:
        method, params = read_call(body)
    except (ValueError, TypeError, OverflowError, RecursionError) as error:
        raise MalformedRequest(FAULT_PARSE, f"malformed XML-RPC request: {error}") from error
    if method != METHOD:
        raise MalformedRequest(FAULT_METHOD, f"unknown method {str(method)[:100]!r}; use {METHOD}")
    return route_call(params)


def encode_fault(code: int, message: str) -> bytes:
    return xmlrpc.client.dumps(xmlrpc.client.Fault(code, message), methodresponse=True).encode()
