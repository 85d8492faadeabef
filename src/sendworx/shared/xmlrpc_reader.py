"""Reads XML-RPC calls (and responses) into Python values: lxml builds the tree, we walk it.

The value rules are the standard library's `xmlrpc.client.Unmarshaller` with builtin types,
which every client out there works with: a <value> without a type is a string, `ex:nil` and
`ex:i8` (Apache's extensions) count as `nil` and `i8`, base64 is bytes, dateTime a datetime.
Only the cost differs: the stdlib reader wrapped in defusedxml took 21 µs for a monitoring
poll, most of the panel's own work per request, because expat calls Python for every tag and
text run; lxml parses in C and the walk touches each element once (about 9 µs).

Safety: no DTD of any kind is accepted, in any encoding: `xml_guard` refuses one before
libxml2 sees the body, which it then reads as UTF-8 only. Should one get through anyway, the
parser's resolver refuses every file or URL it would load, and the parsed document is checked
again. Entities are never resolved and libxml2's own limits (depth, text size) stay on.
`tests/unit/test_xmlrpc_decoding.py` checks every value shape against the stdlib reader, and
`tests/unit/test_xml_guard.py` the hostile documents.
"""

from __future__ import annotations

import base64
import binascii
import threading
import xmlrpc.client
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

from lxml import etree

from sendworx.shared.xml_guard import ForbiddenXml, utf8_without_dtd

_parsers = threading.local()  # a feed parser is reused (a third cheaper than fromstring)


class _RefuseEveryLoad(etree.Resolver):
    """The second line behind `xml_guard`: libxml2 asks here before it opens anything."""

    def resolve(self, system_url: str, public_id: str, context: object = None) -> None:
        raise ForbiddenXml("the document names a file or URL to load")


def _new_parser() -> etree.XMLParser:
    parser = etree.XMLParser(
        encoding="utf-8",  # what xml_guard hands over; never guessed from the body
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
    )
    parser.resolvers.add(_RefuseEveryLoad())
    return parser


def _parse(body: bytes) -> etree._Element:
    parser = getattr(_parsers, "parser", None) or _new_parser()
    _parsers.parser = None  # whatever happens below, nobody else gets it half-fed
    try:
        parser.feed(body)
        root = parser.close()
    except etree.LxmlError as error:  # XMLSyntaxError, and the parser's rarer complaints
        raise NotXmlRpc(f"not well-formed XML: {error}") from error
    except ForbiddenXml as error:
        raise NotXmlRpc(str(error)) from error
    _parsers.parser = parser  # close() succeeded: clean for the next body
    return root


class NotXmlRpc(ValueError):
    """The body is not XML, declares a DTD, or is XML but not an XML-RPC call."""


def _boolean(text: str) -> bool:
    if text == "0":
        return False
    if text == "1":
        return True
    raise NotXmlRpc(f"bad boolean value {text[:20]!r}")


def _base64(text: str) -> bytes:
    try:
        return base64.decodebytes(text.encode("ascii"))
    except (UnicodeEncodeError, binascii.Error) as error:
        raise NotXmlRpc(f"bad base64 value: {error}") from error


def _datetime(text: str) -> datetime:
    return datetime.strptime(text, "%Y%m%dT%H:%M:%S")


def _nil(_text: str) -> None:
    return None


SCALARS: dict[str, Callable[[str], object]] = {
    "string": str,
    "int": int,
    "i1": int,
    "i2": int,
    "i4": int,
    "i8": int,
    "biginteger": int,
    "boolean": _boolean,
    "double": float,
    "float": float,
    "bigdecimal": Decimal,
    "base64": _base64,
    "dateTime.iso8601": _datetime,
    "nil": _nil,
}


def _name(element: etree._Element) -> str:
    """The local name: `{namespace}nil` and an undeclared `ex:nil` are both `nil`."""
    tag = element.tag
    if not isinstance(tag, str):
        raise NotXmlRpc("entities are not allowed")
    if "}" in tag:
        return str(tag.rpartition("}")[2])
    if ":" in tag:
        return str(tag.rpartition(":")[2])
    return str(tag)


def _is(element: etree._Element, name: str) -> bool:
    # Plain tags compare at once; only prefixed or namespaced ones need _name.
    return bool(element.tag == name or _name(element) == name)


def _value(element: etree._Element) -> object:
    """One <value>: a typed child, or only text (a string)."""
    if not _is(element, "value"):
        raise NotXmlRpc(f"<{_name(element)[:40]}> where a <value> belongs")
    count = len(element)
    if not count:
        return element.text or ""
    if count != 1:
        raise NotXmlRpc(f"a <value> holds one element, not {count}")
    typed = element[0]
    tag = _name(typed)
    convert = SCALARS.get(tag)
    if convert is not None:
        if len(typed):
            raise NotXmlRpc(f"<{tag}> cannot hold elements")
        return convert(typed.text or "")
    if tag == "struct":
        return dict(_member(member) for member in typed)
    if tag == "array":
        values: list[object] = []
        for child in typed:
            if _is(child, "data"):
                values.extend(_value(value) for value in child)
            else:
                values.append(_value(child))  # <data> left out: the stdlib accepts that too
        return values
    raise NotXmlRpc(f"unknown tag {tag[:40]!r} in a value")


def _params(params: etree._Element) -> tuple[object, ...]:
    values = []
    for param in params:
        if not _is(param, "param") or len(param) != 1:
            raise NotXmlRpc("a <param> holds exactly one <value>")
        values.append(_value(param[0]))
    return tuple(values)


def _member(member: etree._Element) -> tuple[str, object]:
    name: str | None = None
    value: object = None
    found = False
    for child in member:
        if _is(child, "name") and not len(child):
            name = child.text or ""
        elif _is(child, "value") and not found:
            value, found = _value(child), True
        else:
            raise NotXmlRpc(f"unexpected <{_name(child)[:40]}> in a struct member")
    if name is None or not found:
        raise NotXmlRpc("a struct member needs a <name> and a <value>")
    return name, value


def _document(body: bytes) -> etree._Element:
    try:
        data = utf8_without_dtd(body)
    except ForbiddenXml as error:
        raise NotXmlRpc(str(error)) from error
    root = _parse(data)
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.system_url:  # only if the guard failed
        raise NotXmlRpc("DTDs and entity declarations are not allowed")
    return root


def read_call(body: bytes) -> tuple[str | None, tuple[object, ...]]:
    """The method name and the parameters; NotXmlRpc (a ValueError) for anything else."""
    method: str | None = None
    params: tuple[object, ...] | None = None
    for child in _document(body):
        if _is(child, "methodName"):
            method = child.text or ""
        elif _is(child, "params"):
            params = _params(child)
    if params is None:
        raise NotXmlRpc("not an XML-RPC call: no <params>")
    return method, params


def read_response(body: bytes) -> tuple[object, ...]:
    """A <methodResponse>'s parameters; xmlrpc.client.Fault for a fault, NotXmlRpc otherwise.

    What a cluster node answers is untrusted input to its manager: it gets the same reader.
    """
    root = _document(body)
    if not _is(root, "methodResponse") or len(root) != 1:
        raise NotXmlRpc("not an XML-RPC response")
    (child,) = root
    if _is(child, "params"):
        return _params(child)
    if _is(child, "fault") and len(child) == 1:
        fault = _value(child[0])
        if isinstance(fault, dict) and {"faultCode", "faultString"} <= fault.keys():
            raise xmlrpc.client.Fault(fault["faultCode"], fault["faultString"])
    raise NotXmlRpc("not an XML-RPC response")
