"""SOAP (1.1 and 1.2, RPC/encoded) for the operation `route(apikey, ctrl_name, action, input)`.

Replies are shaped as PHP's SoapClient expects: an apache `ns2:Map` on top, `SOAP-ENC:Array`
for sequences and an `xsi:type` on every value. Malformed requests get a SOAP fault.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element, ParseError, TreeBuilder
from xml.sax.saxutils import escape, quoteattr

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from sendworx.shared.wire import Request
from sendworx.shared.xml_guard import ForbiddenXml, utf8_without_dtd
from sendworx.transports.route_call import (
    FAULT_METHOD,
    FAULT_PARSE,
    MalformedRequest,
    route_request,
)

OPERATION = "route"
SERVICE_NAMESPACE = "urn:InterWorx"
PART_NAMES = ("apikey", "ctrl_name", "action", "input")
XSI = "http://www.w3.org/2001/XMLSchema-instance"
APACHE = "http://xml.apache.org/xml-soap"
MAX_DEPTH = 64  # inputs are flat structs of scalars and string lists; far deeper is an attack
# XML 1.0 cannot carry most control characters, even escaped; they are replaced in replies.
_NOT_XML = {code: "\ufffd" for code in (*range(0, 9), 11, 12, *range(14, 32), 0xFFFE, 0xFFFF)}


@dataclass(frozen=True)
class SoapVersion:
    name: str
    envelope: str
    encoding: str
    content_type: str
    prefix: str  # the envelope prefix PHP uses, so our replies read like PHP's own
    encoding_prefix: str


SOAP_11 = SoapVersion(
    "1.1",
    "http://schemas.xmlsoap.org/soap/envelope/",
    "http://schemas.xmlsoap.org/soap/encoding/",
    "text/xml; charset=utf-8",
    "SOAP-ENV",
    "SOAP-ENC",
)
SOAP_12 = SoapVersion(
    "1.2",
    "http://www.w3.org/2003/05/soap-envelope",
    "http://www.w3.org/2003/05/soap-encoding",
    "application/soap+xml; charset=utf-8",
    "env",
    "enc",
)
_VERSIONS = {version.envelope: version for version in (SOAP_11, SOAP_12)}


class SoapFault(MalformedRequest):
    """A malformed request, answered as a fault in the request's SOAP version."""

    def __init__(self, version: SoapVersion, code: int, message: str) -> None:
        super().__init__(code, message)
        self.version = version


def version_for(content_type: str) -> SoapVersion:
    """The version to answer in before the envelope has been read (for faults about the body)."""
    return SOAP_12 if "application/soap+xml" in content_type.lower() else SOAP_11


def parse_request(body: bytes, content_type: str = "") -> tuple[SoapVersion, Request]:
    version = version_for(content_type)
    try:
        envelope = _parse(body)
    except (ParseError, DefusedXmlException, ForbiddenXml, ValueError) as error:
        raise SoapFault(version, FAULT_PARSE, f"malformed SOAP request: {error}") from error
    namespace, _, local = envelope.tag[1:].partition("}")
    if local != "Envelope" or namespace not in _VERSIONS:
        raise SoapFault(version, FAULT_PARSE, "not a SOAP 1.1 or 1.2 envelope")
    version = _VERSIONS[namespace]
    body_element = envelope.find(f"{{{namespace}}}Body")
    if body_element is None or len(body_element) == 0:
        raise SoapFault(version, FAULT_PARSE, "the SOAP envelope has no body")
    operation = body_element[0]
    if _local(operation.tag) != OPERATION:
        raise SoapFault(
            version, FAULT_METHOD, f"unknown operation {_local(operation.tag)[:100]!r}; use route"
        )
    elements = list(body_element.iter())
    references = {element.get("id"): element for element in elements if element.get("id")}
    decoder = _Decoder(version, references, budget=2 * len(elements))
    parts = list(operation)
    if all(_local(part.tag) in PART_NAMES for part in parts):
        # Named parts (zeep, most toolkits) may come in any order; PHP numbers them in order.
        parts.sort(key=lambda part: PART_NAMES.index(_local(part.tag)))
    try:
        params = [decoder.value(part, 0) for part in parts]
    except (ValueError, RecursionError) as error:
        raise SoapFault(version, FAULT_PARSE, f"malformed SOAP request: {error}") from error
    try:
        return version, route_request(params)
    except MalformedRequest as error:
        raise SoapFault(version, error.code, error.message) from error


def _parse(body: bytes) -> Element:
    """expat, forced to read the UTF-8 `xml_guard` hands over; defusedxml refuses any DTD too."""
    parser = DefusedXMLParser(target=TreeBuilder(), encoding="utf-8", forbid_dtd=True)
    parser.feed(utf8_without_dtd(body))
    root: Element = parser.close()
    return root


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _type_name(element: Element) -> str:
    """The local part of xsi:type (`ns2:Map` -> `Map`); prefixes vary between toolkits."""
    return (element.get(f"{{{XSI}}}type") or "").rpartition(":")[2]


class _Decoder:
    def __init__(
        self, version: SoapVersion, references: dict[str | None, Element], budget: int
    ) -> None:
        self._version = version
        self._references = references
        # References may point at one element many times; a budget stops a multiplying tree.
        self._budget = budget

    def value(self, element: Element, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ValueError(f"values nested deeper than {MAX_DEPTH} levels")
        self._budget -= 1
        if self._budget < 0:
            raise ValueError("too many values for the size of the request")
        href = element.get("href") or element.get(f"{{{self._version.encoding}}}ref")
        if href is not None:
            target = self._references.get(href.lstrip("#"))
            if target is None or target is element:
                raise ValueError(f"unresolved reference {href[:100]!r}")
            return self.value(target, depth + 1)
        if element.get(f"{{{XSI}}}nil") in ("true", "1"):
            return None
        kind = _type_name(element)
        if kind == "Map":
            return self._map(element, depth)
        if kind == "Array" or self._is_array(element):
            return [self.value(item, depth + 1) for item in element]
        if len(element):
            return {_local(child.tag): self.value(child, depth + 1) for child in element}
        return _scalar(kind, element.text or "")

    def _is_array(self, element: Element) -> bool:
        return any(
            element.get(f"{{{self._version.encoding}}}{name}") is not None
            for name in ("arrayType", "itemType", "arraySize")
        )

    def _map(self, element: Element, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for item in element:
            key = item.find("key")
            value = item.find("value")
            if key is None:
                raise ValueError("a Map item has no key")
            name = self.value(key, depth + 1)
            result[str(name)] = None if value is None else self.value(value, depth + 1)
        return result


def _scalar(kind: str, text: str) -> Any:
    if kind in ("int", "integer", "long", "short", "byte") or kind.startswith("unsigned"):
        return int(text.strip())
    if kind == "boolean":
        if text.strip() not in ("true", "false", "1", "0"):
            raise ValueError(f"not a boolean: {text[:20]!r}")
        return text.strip() in ("true", "1")
    if kind in ("float", "double", "decimal"):
        return float(text.strip())
    return text


def encode_reply(version: SoapVersion, reply: Mapping[str, Any]) -> bytes:
    # No SOAP 1.2 `rpc:result` naming the return part: PHP does not need it, zeep rejects it.
    inner = (
        f"<ns1:routeResponse{_encoding_style(version)}>"
        f"{_Encoder(version).element('return', dict(reply))}</ns1:routeResponse>"
    )
    return _envelope(version, inner)


def encode_call(version: SoapVersion, params: list[Any]) -> bytes:
    """A `route` request as PHP's SoapClient writes it (used by tests and benchmarks)."""
    encoder = _Encoder(version)
    names = [*PART_NAMES, *(f"param{index}" for index in range(len(PART_NAMES), len(params)))]
    parts = "".join(
        encoder.element(name, value) for name, value in zip(names, params, strict=False)
    )
    return _envelope(version, f"<ns1:route{_encoding_style(version)}>{parts}</ns1:route>")


def encode_fault(version: SoapVersion, message: str, *, sender: bool = True) -> bytes:
    """`sender` faults blame the request (Client/Sender); the others blame us (Server/Receiver)."""
    text = escape(message.translate(_NOT_XML))
    prefix = version.prefix
    if version is SOAP_12:
        code = "Sender" if sender else "Receiver"
        fault = (
            f"<{prefix}:Fault><{prefix}:Code><{prefix}:Value>{prefix}:{code}</{prefix}:Value>"
            f'</{prefix}:Code><{prefix}:Reason><{prefix}:Text xml:lang="en">{text}'
            f"</{prefix}:Text></{prefix}:Reason></{prefix}:Fault>"
        )
    else:
        code = "Client" if sender else "Server"
        fault = (
            f"<{prefix}:Fault><faultcode>{prefix}:{code}</faultcode>"
            f"<faultstring>{text}</faultstring></{prefix}:Fault>"
        )
    return _envelope(version, fault)


def fault_http_status(version: SoapVersion, *, sender: bool = True) -> int:
    """SOAP 1.1 sends every fault with 500; SOAP 1.2 sends Sender faults with 400."""
    return 400 if version is SOAP_12 and sender else 500


def _encoding_style(version: SoapVersion) -> str:
    return f' {version.prefix}:encodingStyle="{version.encoding}"' if version is SOAP_12 else ""


def _envelope(version: SoapVersion, body: str) -> bytes:
    prefix, encoding_prefix = version.prefix, version.encoding_prefix
    style = f' {prefix}:encodingStyle="{version.encoding}"' if version is SOAP_11 else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<{prefix}:Envelope xmlns:{prefix}="{version.envelope}" '
        f'xmlns:ns1="{SERVICE_NAMESPACE}" xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        f'xmlns:xsi="{XSI}" xmlns:{encoding_prefix}="{version.encoding}" '
        f'xmlns:ns2="{APACHE}"{style}>'
        f"<{prefix}:Body>{body}</{prefix}:Body></{prefix}:Envelope>"
    ).encode()


class _Encoder:
    def __init__(self, version: SoapVersion) -> None:
        self._version = version

    def element(self, name: str, value: Any) -> str:
        if value is None:
            return f'<{name} xsi:nil="true"/>'
        if isinstance(value, Mapping):
            items = "".join(
                f"<item>{self.element('key', str(key))}{self.element('value', item)}</item>"
                for key, item in value.items()
            )
            return f'<{name} xsi:type="ns2:Map">{items}</{name}>'
        if isinstance(value, list | tuple):
            return self._array(name, list(value))
        kind, text = _scalar_text(value)
        return f'<{name} xsi:type="xsd:{kind}">{text}</{name}>'

    def _array(self, name: str, items: list[Any]) -> str:
        every_string = bool(items) and all(isinstance(item, str) for item in items)
        item_type = "xsd:string" if every_string else "xsd:anyType"
        encoding = self._version.encoding_prefix
        if self._version is SOAP_12:
            shape = (
                f'{encoding}:itemType="{item_type}" {encoding}:arraySize="{len(items)}" '
                f'xsi:type="{encoding}:Array"'
            )
        else:
            shape = f'{encoding}:arrayType="{item_type}[{len(items)}]" xsi:type="{encoding}:Array"'
        inner = "".join(self.element("item", item) for item in items)
        return f"<{name} {shape}>{inner}</{name}>"


def _scalar_text(value: Any) -> tuple[str, str]:
    if isinstance(value, bool):
        return "boolean", "true" if value else "false"
    if isinstance(value, int):
        return ("int" if -(2**31) <= value < 2**31 else "long"), str(value)
    if isinstance(value, float):
        text = (
            repr(value)
            if math.isfinite(value)
            else {"inf": "INF", "-inf": "-INF"}.get(repr(value), "NaN")
        )
        return "double", text
    return "string", escape(str(value).translate(_NOT_XML))


def _binding(name: str, prefix: str, version: SoapVersion) -> str:
    """One RPC/encoded binding of `route`; the WSDL has one per SOAP version."""
    body = (
        f'<{prefix}:body use="encoded" namespace="{SERVICE_NAMESPACE}" '
        f'encodingStyle="{version.encoding}"/>'
    )
    return f"""
  <binding name="{name}" type="tns:InterWorxPortType">
    <{prefix}:binding style="rpc" transport="http://schemas.xmlsoap.org/soap/http"/>
    <operation name="route">
      <{prefix}:operation soapAction="urn:InterWorx#route" style="rpc"/>
      <input>{body}</input>
      <output>{body}</output>
    </operation>
  </binding>"""


def wsdl(location: str) -> bytes:
    """The service description; `location` is where the client reached us (PHP posts there)."""
    address = quoteattr(location)
    bindings = _binding("InterWorxBinding", "soap", SOAP_11) + _binding(
        "InterWorxBinding12", "soap12", SOAP_12
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<definitions name="InterWorx" targetNamespace="{SERVICE_NAMESPACE}"
  xmlns="http://schemas.xmlsoap.org/wsdl/"
  xmlns:tns="{SERVICE_NAMESPACE}"
  xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
  xmlns:soap12="http://schemas.xmlsoap.org/wsdl/soap12/"
  xmlns:xsd="http://www.w3.org/2001/XMLSchema"
  xmlns:SOAP-ENC="{SOAP_11.encoding}"
  xmlns:apachesoap="{APACHE}">
  <types>
    <xsd:schema targetNamespace="{APACHE}">
      <xsd:complexType name="mapItem">
        <xsd:sequence>
          <xsd:element name="key" nillable="true" type="xsd:anyType"/>
          <xsd:element name="value" nillable="true" type="xsd:anyType"/>
        </xsd:sequence>
      </xsd:complexType>
      <xsd:complexType name="Map">
        <xsd:sequence>
          <xsd:element name="item" minOccurs="0" maxOccurs="unbounded" type="apachesoap:mapItem"/>
        </xsd:sequence>
      </xsd:complexType>
    </xsd:schema>
  </types>
  <message name="routeRequest">
    <part name="apikey" type="xsd:anyType"/>
    <part name="ctrl_name" type="xsd:string"/>
    <part name="action" type="xsd:string"/>
    <part name="input" type="xsd:anyType"/>
  </message>
  <message name="routeResponse">
    <part name="return" type="xsd:anyType"/>
  </message>
  <portType name="InterWorxPortType">
    <operation name="route">
      <documentation>route(apikey, ctrl_name, action, input)</documentation>
      <input message="tns:routeRequest"/>
      <output message="tns:routeResponse"/>
    </operation>
  </portType>
{bindings}
  <service name="InterWorx">
    <port name="InterWorxPort" binding="tns:InterWorxBinding">
      <soap:address location={address}/>
    </port>
    <port name="InterWorxPort12" binding="tns:InterWorxBinding12">
      <soap12:address location={address}/>
    </port>
  </service>
</definitions>
""".encode()
