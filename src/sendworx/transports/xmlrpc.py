"""XML-RPC for `iworx.route(auth, controller, action, input)`, parsed without DTDs or entities.

Malformed requests get an XML-RPC fault; everything else gets a {status, payload, reply_code}.
"""

from __future__ import annotations

import xmlrpc.client
from dataclasses import dataclass
from typing import Any
from xml.parsers.expat import ExpatError

from defusedxml import DefusedXmlException
from defusedxml.xmlrpc import DefusedExpatParser

METHOD = "iworx.route"
FAULT_PARSE = -32700
FAULT_METHOD = -32601
FAULT_PARAMS = -32602
FAULT_TOO_LARGE = -32000


class MalformedRequest(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class RouteCall:
    auth: object
    controller: str
    action: str
    input: object


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
    if not 3 <= len(params) <= 4:
        raise MalformedRequest(
            FAULT_PARAMS, f"{METHOD} takes 4 parameters (auth, controller, action, input)"
        )
    auth, controller, action = params[:3]
    if not isinstance(controller, str) or not isinstance(action, str):
        raise MalformedRequest(FAULT_PARAMS, "controller and action must be strings")
    return RouteCall(auth, controller, action, params[3] if len(params) == 4 else None)


def encode_reply(reply: dict[str, Any]) -> bytes:
    return xmlrpc.client.dumps((reply,), methodresponse=True, allow_none=True).encode()


def encode_fault(code: int, message: str) -> bytes:
    return xmlrpc.client.dumps(xmlrpc.client.Fault(code, message), methodresponse=True).encode()
