"""SOAP encoding and decoding without a server: what PHP sends decodes, ours round-trips."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sendworx.transports.route_call import FAULT_METHOD, FAULT_PARAMS, FAULT_PARSE
from sendworx.transports.soap import (
    SOAP_11,
    SOAP_12,
    SoapFault,
    SoapVersion,
    encode_call,
    encode_reply,
    parse_request,
)

# Exactly what PHP 8.2's SoapClient sent for route(key, ctrl, "update", [...]) in SOAP 1.2.
PHP_REQUEST_12 = b"""<?xml version="1.0" encoding="UTF-8"?>
<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:ns1="urn:InterWorx" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:enc="http://www.w3.org/2003/05/soap-encoding" xmlns:ns2="http://xml.apache.org/xml-soap"><env:Body><ns1:route env:encodingStyle="http://www.w3.org/2003/05/soap-encoding"><param0 xsi:type="xsd:string">KEY</param0><param1 xsi:type="xsd:string">/nodeworx/mail/send</param1><param2 xsi:type="xsd:string">update</param2><param3 xsi:type="ns2:Map"><item><key xsi:type="xsd:string">concurrency_remote</key><value xsi:type="xsd:int">5</value></item><item><key xsi:type="xsd:string">smtp_routes</key><value enc:itemType="xsd:string" enc:arraySize="2" xsi:type="enc:Array"><item xsi:type="xsd:string">a:b</item><item xsi:type="xsd:string">c:d</item></value></item><item><key xsi:type="xsd:string">e</key><value enc:itemType="xsd:anyType" enc:arraySize="0" xsi:type="enc:Array"/></item><item><key xsi:type="xsd:string">flag</key><value xsi:type="xsd:boolean">true</value></item></param3></ns1:route></env:Body></env:Envelope>"""  # noqa: E501


def test_php_soap12_request_decodes_to_the_route_call() -> None:
    version, request = parse_request(PHP_REQUEST_12, "application/soap+xml; charset=utf-8")
    assert version is SOAP_12
    assert (request.auth, request.call.controller, request.call.action) == (
        "KEY",
        "/nodeworx/mail/send",
        "update",
    )
    assert request.call.input == {
        "concurrency_remote": 5,
        "smtp_routes": ["a:b", "c:d"],
        "e": [],
        "flag": True,
    }


wire_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.text(st.characters(blacklist_categories=("Cs", "Cc"))),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(st.characters(categories=("L", "N")), max_size=8), children, max_size=4
        )
    ),
    max_leaves=12,
)


@pytest.mark.parametrize("version", [SOAP_11, SOAP_12], ids=["1.1", "1.2"])
@given(value=wire_values)
def test_encoded_values_decode_to_themselves(version: SoapVersion, value: Any) -> None:
    _, request = parse_request(
        encode_call(version, ["key", "/nodeworx/mail/send", "update", value])
    )
    assert request.call.input == value


@pytest.mark.parametrize("version", [SOAP_11, SOAP_12], ids=["1.1", "1.2"])
def test_reply_is_an_apache_map_with_typed_values(version: SoapVersion) -> None:
    body = encode_reply(version, {"status": 0, "payload": ["a"], "reply_code": 205}).decode()
    assert '<return xsi:type="ns2:Map">' in body
    assert '<value xsi:type="xsd:int">0</value>' in body
    array_type = (
        'enc:itemType="xsd:string"' if version is SOAP_12 else 'SOAP-ENC:arrayType="xsd:string[1]"'
    )
    assert array_type in body


def test_control_characters_in_a_reply_stay_well_formed_xml() -> None:
    body = encode_reply(SOAP_11, {"status": 1, "payload": "a\x00b\x1bc", "reply_code": 500})
    _, request = parse_request(encode_call(SOAP_11, ["k", "c", "a", "a\ufffdb\ufffdc"]))
    assert b"a\xef\xbf\xbdb" in body and request.call.input == "a\ufffdb\ufffdc"


def _envelope(body: str) -> bytes:
    return (
        '<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><e:Body>'
        f"{body}</e:Body></e:Envelope>"
    ).encode()


def _nested(depth: int) -> str:
    return "<input>" + "<a>" * depth + "x" + "</a>" * depth + "</input>"


def _reference_bomb(levels: int) -> str:
    # Each level refers ten times to the next: 10**levels values from a few hundred bytes.
    parts = []
    for level in range(levels):
        items = "".join(f'<i href="#l{level + 1}"/>' for _ in range(10))
        parts.append(f'<l id="l{level}" xsi:type="SOAP-ENC:Array">{items}</l>')
    parts.append(f'<l id="l{levels}">x</l>')
    return '<route><k>k</k><c>c</c><a>a</a><input href="#l0"/></route>' + "".join(parts)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not xml", FAULT_PARSE),
        (b"<x/>", FAULT_PARSE),
        (b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>", FAULT_PARSE),
        (_envelope(""), FAULT_PARSE),
        (_envelope("<other><a>x</a></other>"), FAULT_METHOD),
        (_envelope("<route><k>k</k></route>"), FAULT_PARAMS),
        (_envelope("<route><k>k</k><c><x>1</x></c><a>a</a></route>"), FAULT_PARAMS),
        (_envelope('<route><k xsi:type="xsd:int">x</k><c>c</c><a>a</a></route>'), FAULT_PARSE),
        (_envelope('<route><k href="#nowhere"/><c>c</c><a>a</a></route>'), FAULT_PARSE),
        (_envelope(f"<route><k>k</k><c>c</c><a>a</a>{_nested(5000)}</route>"), FAULT_PARSE),
        (_envelope(_reference_bomb(9)), FAULT_PARSE),
    ],
    ids=[
        "not-xml",
        "not-an-envelope",
        "entity",
        "empty-body",
        "other-operation",
        "too-few-parts",
        "struct-controller",
        "bad-int",
        "dangling-reference",
        "deep-nesting",
        "reference-bomb",
    ],
)
def test_malformed_requests_are_faults(body: bytes, code: int) -> None:
    with pytest.raises(SoapFault) as fault:
        parse_request(body)
    assert fault.value.code == code
