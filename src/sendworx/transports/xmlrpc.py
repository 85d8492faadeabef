"""XML-RPC for `iworx.route(auth, controller, action, input)`, parsed without DTDs or entities.

Malformed requests get an XML-RPC fault; everything else gets a {status, payload, reply_code}.
Requests are parsed by libxml2 (lxml) into a tree and decoded by `decode_value`: the stdlib
unmarshaller's ~90 Python callbacks per request were most of the API's cost.
"""

from __future__ import annotations

import base64
import binascii
import xmlrpc.client
from dataclasses import dataclass
from typing import Any

from lxml import etree

METHOD = "iworx.route"
FAULT_PARSE = -32700
FAULT_METHOD = -32601
FAULT_PARAMS = -32602
FAULT_TOO_LARGE = -32000

# No DTD loading, no entity expansion, no network, libxml2's default depth and size limits.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


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


def _elements(node: etree._Element) -> list[etree._Element]:
    return [child for child in node if isinstance(child.tag, str)]


def decode_value(value: etree._Element) -> Any:
    """One XML-RPC <value>, decoded as xmlrpc.client does (use_builtin_types=True)."""
    children = _elements(value)
    if not children:
        return value.text or ""  # a bare <value> is a string
    node = children[0]
    tag, text = node.tag, node.text or ""
    if tag == "string":
        return text
    if tag in ("int", "i4", "i8", "i1", "i2", "biginteger"):
        return int(text.strip())
    if tag == "boolean":
        if text.strip() not in ("0", "1"):
            raise ValueError(f"bad boolean {text[:20]!r}")
        return text.strip() == "1"
    if tag in ("double", "float", "bigdecimal"):
        return float(text.strip())
    if tag == "nil":
        return None
    if tag == "struct":
        decoded = {}
        for member in node.iterfind("member"):
            name, member_value = member.findtext("name"), member.find("value")
            if name is None or member_value is None:
                raise ValueError("struct member without name or value")
            decoded[name] = decode_value(member_value)
        return decoded
    if tag == "array":
        return [decode_value(item) for item in node.iterfind("data/value")]
    if tag == "base64":
        return base64.b64decode(text.encode("ascii"), validate=False)
    if tag == "dateTime.iso8601":
        return text.strip()
    raise ValueError(f"unknown XML-RPC type <{str(tag)[:40]}>")


def parse_call(body: bytes) -> RouteCall:
    try:
        root = etree.fromstring(body, _PARSER)
        if root.getroottree().docinfo.internalDTD is not None:
            raise ValueError("DTDs are not allowed")
        if root.tag != "methodCall":
            raise ValueError(f"expected <methodCall>, got <{str(root.tag)[:40]}>")
        method = (root.findtext("methodName") or "").strip()
        params = [decode_value(value) for value in root.iterfind("params/param/value")]
    except (
        etree.XMLSyntaxError,
        ValueError,
        TypeError,
        RecursionError,
        binascii.Error,
        UnicodeError,
    ) as error:
        raise MalformedRequest(FAULT_PARSE, f"malformed XML-RPC request: {error}") from error
    if method != METHOD:
        raise MalformedRequest(FAULT_METHOD, f"unknown method {method[:100]!r}; use {METHOD}")
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
