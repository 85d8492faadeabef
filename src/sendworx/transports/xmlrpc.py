"""XML-RPC for `iworx.route(auth, controller, action, input)`, parsed without DTDs or entities.

Malformed requests get an XML-RPC fault; everything else gets a {status, payload, reply_code}.
"""

from __future__ import annotations

import xmlrpc.client
from typing import Any
from xml.parsers.expat import ExpatError

from defusedxml import DefusedXmlException
from defusedxml.xmlrpc import DefusedExpatParser

from sendworx.transports.route_call import (
    FAULT_METHOD,
    FAULT_PARSE,
    MalformedRequest,
    RouteCall,
    route_call,
)

METHOD = "iworx.route"


def parse_call(body: bytes) -> RouteCall:
    unmarshaller = xmlrpc.client.Unmarshaller(use_datetime=False, use_builtin_types=True)
    parser = DefusedExpatParser(unmarshaller, forbid_dtd=True)
    try:
        parser.feed(body)
        parser.close()
        params = unmarshaller.close()
        method = unmarshaller.getmethodname()
    except (
        ExpatError,
        DefusedXmlException,
        xmlrpc.client.ResponseError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        OverflowError,
    ) as error:
        raise MalformedRequest(FAULT_PARSE, f"malformed XML-RPC request: {error}") from error
    if method != METHOD:
        raise MalformedRequest(FAULT_METHOD, f"unknown method {str(method)[:100]!r}; use {METHOD}")
    return route_call(params)


def encode_reply(reply: dict[str, Any]) -> bytes:
    return xmlrpc.client.dumps((reply,), methodresponse=True, allow_none=True).encode()


def encode_fault(code: int, message: str) -> bytes:
    return xmlrpc.client.dumps(xmlrpc.client.Fault(code, message), methodresponse=True).encode()
