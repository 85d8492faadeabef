"""XML-RPC for `iworx.route(auth, controller, action, input)`, parsed without DTDs or entities.

Malformed requests get an XML-RPC fault; everything else gets a {status, payload, reply_code}.
"""

from __future__ import annotations

import xmlrpc.client
from collections.abc import Mapping
from types import MappingProxyType

from sendworx.shared.wire import NO_INPUT, Call, Request
from sendworx.shared.xmlrpc_reader import read_call
from sendworx.transports.route_call import (
    FAULT_METHOD,
    FAULT_PARSE,
    MalformedRequest,
    route_request,
)
from sendworx.transports.xmlrpc_writer import encode_reply

METHOD = "iworx.route"
__all__ = ["RecentCalls", "encode_fault", "encode_reply", "parse_request"]
UNCHANGEABLE = (str, int, float, type(None))  # values kept as they are (bool is an int)


def parse_request(body: bytes) -> Request:
    try:
        method, params = read_call(body)
    except (ValueError, TypeError, OverflowError, RecursionError) as error:
        raise MalformedRequest(FAULT_PARSE, f"malformed XML-RPC request: {error}") from error
    if method != METHOD:
        raise MalformedRequest(FAULT_METHOD, f"unknown method {str(method)[:100]!r}; use {METHOD}")
    return route_request(params)


class RecentCalls:
    """Parses calls, keeping the last few small ones to answer the same bytes without parsing.

    Monitoring polls (isRunning, listServiceInfo from every checker, every few seconds) send
    identical bytes each time, and parsing them was about 40% of the panel's CPU per poll
    under load. Only calls nobody can change are kept: the auth a key text or a struct of
    scalars, the input empty or a struct of scalars, both frozen; everything else is parsed
    every time. Authentication and the action still run for every request.
    """

    def __init__(self, capacity: int = 256, max_body_bytes: int = 8192) -> None:
        self._calls: dict[bytes, Request] = {}
        self._capacity = capacity
        self._max_body_bytes = max_body_bytes

    def __len__(self) -> int:
        return len(self._calls)

    def parse(self, body: bytes) -> Request:
        if len(body) > self._max_body_bytes:
            return parse_request(body)  # never kept: not even worth hashing for the lookup
        known = self._calls.get(body)
        if known is not None:
            return known
        request = parse_request(body)
        frozen = _frozen_request(request)
        if frozen is None:
            return request
        if len(self._calls) >= self._capacity:
            del self._calls[next(iter(self._calls))]  # the oldest
        self._calls[body] = frozen
        return frozen


def _frozen_request(request: Request) -> Request | None:
    """`request` with nothing in it a reader could change, or None if it holds other containers."""
    auth = request.auth if isinstance(request.auth, str) else _frozen_struct(request.auth)
    if auth is None:
        return None
    call = request.call
    if call.input in NO_INPUT:
        return Request(auth, Call(call.controller, call.action))
    values = _frozen_struct(call.input)
    return None if values is None else Request(auth, Call(call.controller, call.action, values))


def _frozen_struct(value: object) -> Mapping[str, object] | None:
    if not isinstance(value, dict):
        return None
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, UNCHANGEABLE):
            return None
    return MappingProxyType(value)  # the parser's own dict: the proxy is its only holder


def encode_fault(code: int, message: str) -> bytes:
    return xmlrpc.client.dumps(xmlrpc.client.Fault(code, message), methodresponse=True).encode()
