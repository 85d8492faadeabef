"""Writes `iworx.route`'s reply {status, payload, reply_code} as an XML-RPC methodResponse.

Byte for byte what `xmlrpc.client.dumps((reply,), methodresponse=True, allow_none=True)`
writes (a test checks that for every value shape), so no client can tell, except that an
integer past 32 bits, which the standard library refuses, is written as a double; it skips the
stdlib Marshaller's per-call object and per-value method dispatch, a quarter of the cost
of answering a monitoring poll.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime
from typing import Any
from xmlrpc.client import MAXINT, MININT, escape

HEAD = (
    "<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n<value><struct>\n"
    "<member>\n<name>status</name>\n"
)
TAIL = "</struct></value>\n</param>\n</params>\n</methodResponse>\n"


def _int(value: int, out: list[str]) -> None:
    if value > MAXINT or value < MININT:
        # XML-RPC's int has 32 bits; the standard library refuses more. A count or a size past
        # it (a queue of more than 2 GB) goes as a double, which every client reads (exact up
        # to 2**53); SOAP sends xsd:long and JSON the integer.
        if abs(value) > 2**53:
            raise OverflowError("int exceeds XML-RPC limits")
        _float(float(value), out)
        return
    out.append(f"<value><int>{int(value)}</int></value>\n")


def _bool(value: bool, out: list[str]) -> None:
    out.append(f"<value><boolean>{int(value)}</boolean></value>\n")


def _str(value: str, out: list[str]) -> None:
    out.append(f"<value><string>{escape(value)}</string></value>\n")


def _float(value: float, out: list[str]) -> None:
    out.append(f"<value><double>{value!r}</double></value>\n")


def _nil(_value: None, out: list[str]) -> None:
    out.append("<value><nil/></value>")


def _bytes(value: bytes | bytearray, out: list[str]) -> None:
    out.append(f"<value><base64>\n{base64.encodebytes(value).decode('ascii')}</base64></value>\n")


def _datetime(value: datetime, out: list[str]) -> None:
    stamp = f"{value.year:04d}{value.strftime('%m%dT%H:%M:%S')}"  # the year always 4 digits
    out.append(f"<value><dateTime.iso8601>{stamp}</dateTime.iso8601></value>\n")


def _array(value: list[Any] | tuple[Any, ...], out: list[str], depth: int) -> None:
    out.append("<value><array><data>\n")
    for item in value:
        _any(item, out, depth + 1)
    out.append("</data></array></value>\n")


def _struct(value: dict[Any, Any], out: list[str], depth: int) -> None:
    out.append("<value><struct>\n")
    for key, item in value.items():
        out.append("<member>\n")
        if not isinstance(key, str):
            raise TypeError("dictionary key must be string")
        out.append(f"<name>{escape(key)}</name>\n")
        _any(item, out, depth + 1)
        out.append("</member>\n")
    out.append("</struct></value>\n")


_SCALARS: dict[type, Callable[[Any, list[str]], None]] = {
    bool: _bool,
    int: _int,
    str: _str,
    float: _float,
    type(None): _nil,
    bytes: _bytes,
    bytearray: _bytes,
    datetime: _datetime,
}
MAX_DEPTH = 100  # payloads are ours and shallow; a deeper one is a cycle


def _any(value: Any, out: list[str], depth: int) -> None:
    write = _SCALARS.get(type(value))
    if write is not None:
        write(value, out)
    elif depth > MAX_DEPTH:
        raise TypeError("cannot marshal recursive or too deeply nested values")
    elif type(value) is dict:
        _struct(value, out, depth)
    elif type(value) in (list, tuple):
        _array(value, out, depth)
    else:
        raise TypeError(f"cannot marshal {type(value)} objects")


def encode_reply(status: int, payload: Any, reply_code: int) -> bytes:
    out = [HEAD]
    _int(status, out)
    out.append("</member>\n<member>\n<name>payload</name>\n")
    _any(payload, out, 0)
    out.append("</member>\n<member>\n<name>reply_code</name>\n")
    _int(reply_code, out)
    out.append("</member>\n")
    out.append(TAIL)
    return "".join(out).encode()
