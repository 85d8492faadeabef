"""SOAP at /soap, as PHP integrations and zeep use it: against a real panel process."""

from __future__ import annotations

import http.client
import ssl
from typing import Any

import pytest
import requests
import zeep
import zeep.xsd
from support.panel import SEND, STOPPED_SERVICE_INFO, Panel, control_file
from support.php import php_route, php_types
from zeep.transports import Transport

from sendworx.shared.settings import INTEGER_SETTINGS
from sendworx.transports.soap import SOAP_11, SOAP_12, SoapVersion, encode_call

VERSIONS = ["1.1", "1.2"]
APACHE = "{http://xml.apache.org/xml-soap}"


def _wsdl_url(panel: Panel, path: str = "/soap") -> str:
    return f"https://127.0.0.1:{panel.https_port}{path}?wsdl"


def _php(panel: Panel, version: str, action: str, data: Any = None, **request: Any) -> Any:
    request = {"auth": panel.key, "controller": SEND, "action": action, **request}
    if data is not None:
        request["input"] = data
    return php_route(_wsdl_url(panel), version, panel.ca, request)


@pytest.mark.parametrize("path", ["/soap", "/nodeworx/soap"])
def test_wsdl_is_served_with_the_address_the_client_used(shared_panel: Panel, path: str) -> None:
    for url in (
        f"https://127.0.0.1:{shared_panel.https_port}{path}",
        f"http://127.0.0.1:{shared_panel.http_port}{path}",
    ):
        response = requests.get(url + "?wsdl", verify=str(shared_panel.ca), timeout=10)
        assert response.status_code == 200
        assert f'<soap:address location="{url}"/>' in response.text
        assert f'<soap12:address location="{url}"/>' in response.text


@pytest.mark.parametrize("version", VERSIONS)
def test_php_gets_arrays_with_php_types(shared_panel: Panel, version: str) -> None:
    info = _php(shared_panel, version, "listServiceInfo")
    assert info["raw"] == {
        "status": 0,
        "payload": STOPPED_SERVICE_INFO,
        "reply_code": 205,
    }
    assert php_types(info["result"]) == {
        "status": "integer",
        "payload": {key: "string" for key in ("id", "name", "ports", "page", "ctrl")}
        | {"is_running": "integer"},
        "reply_code": "integer",
    }
    running = _php(shared_panel, version, "isRunning", [])
    assert php_types(running["result"])["payload"] == "boolean"
    ports = _php(shared_panel, version, "listPortNumbersArray", {})
    assert ports["result"]["items"][1]["value"]["type"] == "list"
    assert ports["raw"]["payload"] == ["##LG_NOT_APPLICABLE##"]


@pytest.mark.parametrize("version", VERSIONS)
def test_php_update_writes_the_control_files(panel: Panel, version: str) -> None:
    reply = _php(
        panel,
        version,
        "update",
        {"concurrency_remote": "77", "smtp_routes": ["example.com:relay.test:2525"], "perms": []},
    )
    assert reply["raw"] == {
        "status": 0,
        "payload": "Outbound mail settings updated",
        "reply_code": 205,
    }
    assert control_file(panel.home, "concurrencyremote") == "77\n"
    assert control_file(panel.home, "smtproutes") == "example.com:relay.test:2525\n"
    current = _php(panel, version, "queryUpdate")["raw"]["payload"]
    assert current["concurrency_remote"] == 77
    assert current["smtp_routes"] == ["example.com:relay.test:2525"]


@pytest.mark.parametrize("version", VERSIONS)
def test_php_sees_validation_and_auth_failures_and_nothing_changes(
    panel: Panel, version: str
) -> None:
    invalid = _php(
        panel, version, "update", {"concurrency_remote": "lots", "smtp_routes": "a b:c"}
    )["raw"]
    assert invalid["status"] == 11 and invalid["reply_code"] == 400
    assert invalid["payload"].split("\n") == [
        "There was a problem validating the form. Please see details below.",
        "concurrency_remote: must be an integer",
        "smtp_routes: route 1 ('a b:c'): must not contain spaces",
    ]
    refused = _php(panel, version, "update", {"concurrency_remote": 5}, auth="not a key")["raw"]
    assert refused == {"status": 401, "payload": "authentication failed", "reply_code": 401}
    assert control_file(panel.home, "concurrencyremote") is None


@pytest.mark.parametrize("version", VERSIONS)
def test_php_permission_denied_for_a_user_without_email(panel: Panel, version: str) -> None:
    key = panel.add_user("ops@example.test", "SERVICES")
    reply = _php(panel, version, "isRunning", auth=key)["raw"]
    assert reply["status"] == 403


def _zeep(panel: Panel, port: str) -> Any:
    session = requests.Session()
    session.verify = str(panel.ca)
    session.trust_env = False  # REQUESTS_CA_BUNDLE would replace our CA
    client = zeep.Client(_wsdl_url(panel), transport=Transport(session=session))
    return client, client.bind("InterWorx", port)


def _as_dict(value: Any) -> Any:
    """zeep's view of an apache Map (key/value items, sometimes wrapped in `item`) as a dict."""
    if isinstance(value, zeep.xsd.CompoundValue) and "item" in value:
        value = value["item"]
    if isinstance(value, list) and all(hasattr(item, "key") for item in value):
        return {item.key: _as_dict(item.value) for item in value}
    return value


@pytest.mark.parametrize("port", ["InterWorxPort", "InterWorxPort12"])
def test_zeep_routes_over_both_soap_versions(panel: Panel, port: str) -> None:
    client, service = _zeep(panel, port)
    info = _as_dict(service.route(panel.key, SEND, "listServiceInfo", zeep.xsd.SkipValue))
    assert info["status"] == 0 and info["reply_code"] == 205
    assert _as_dict(info["payload"])["ctrl"] == SEND

    map_type = client.get_type(f"{APACHE}Map")
    changes = map_type(item=[{"key": "timeout_connect", "value": 45}])
    updated = _as_dict(
        service.route(panel.key, SEND, "update", zeep.xsd.AnyObject(map_type, changes))
    )
    assert updated["status"] == 0
    assert control_file(panel.home, "timeoutconnect") == "45\n"

    bad = map_type(item=[{"key": "timeout_connect", "value": 0}])
    invalid = _as_dict(service.route(panel.key, SEND, "update", zeep.xsd.AnyObject(map_type, bad)))
    assert invalid["status"] == 11
    assert invalid["payload"].endswith("timeout_connect: must be between 1 and 3600")
    refused = _as_dict(service.route("wrong", SEND, "isRunning", ""))
    assert refused["status"] == 401
    assert control_file(panel.home, "timeoutconnect") == "45\n"


def _post(panel: Panel, body: bytes, content_type: str) -> tuple[int, str]:
    context = ssl.create_default_context(cafile=str(panel.ca))
    connection = http.client.HTTPSConnection("127.0.0.1", panel.https_port, context=context)
    connection.request("POST", "/soap", body, {"Content-Type": content_type})
    response = connection.getresponse()
    return response.status, response.read().decode()


@pytest.mark.parametrize(
    ("version", "status", "fault"),
    [(SOAP_11, 500, "<faultcode>SOAP-ENV:Client</faultcode>"), (SOAP_12, 400, "env:Sender")],
    ids=["1.1", "1.2"],
)
def test_hostile_soap_gets_a_fault_and_changes_nothing(
    shared_panel: Panel, version: SoapVersion, status: int, fault: str
) -> None:
    content_type = version.content_type
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><lolz>&lol2;</lolz>'
    )
    too_many = encode_call(
        version, [shared_panel.key, SEND, "update", {"concurrency_remote": 9}, "x"]
    )
    for body in (b"<unclosed", bomb, too_many, b"x" * (11 * 1024 * 1024)):
        code, text = _post(shared_panel, body, content_type)
        assert (code, fault in text) == (status, True), text[:300]
    for setting in INTEGER_SETTINGS:
        assert control_file(shared_panel.home, setting.control_file) is None
    # The same well-formed call succeeds, so the faults above were about the bodies.
    code, text = _post(
        shared_panel, encode_call(version, [shared_panel.key, SEND, "isRunning"]), content_type
    )
    assert (
        code == 200 and '<key xsi:type="xsd:string">status</key><value xsi:type="xsd:int">0' in text
    )
