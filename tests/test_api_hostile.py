"""Hostile requests get a clean answer in the API's own format and change nothing."""

from __future__ import annotations

import socket
import time
import xmlrpc.client

import pytest
from support.panel import SEND, Panel, control_file

from sendworx.transports.route_call import FAULT_PARSE


def _fault(body: bytes) -> xmlrpc.client.Fault:
    with pytest.raises(xmlrpc.client.Fault) as fault:
        xmlrpc.client.loads(body)
    return fault.value


def _still_answers(panel: Panel) -> None:
    assert panel.call("isRunning")["status"] == 0


ENTITY_BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<methodCall><methodName>iworx.route</methodName><params>
<param><value><string>&lol4;</string></value></param></params></methodCall>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<methodCall><methodName>iworx.route</methodName><params>
<param><value><string>&secret;</string></value></param></params></methodCall>"""


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"this is not xml", -32700),
        (b"<methodCall><methodName>iworx.route</methodName><params>", -32700),
        (ENTITY_BOMB, -32700),
        (EXTERNAL_ENTITY, -32700),
        (b"", -32700),
        (b"\xff\xfe\x00garbage", -32700),
        (xmlrpc.client.dumps(("k", SEND, "isRunning", {}), "system.listMethods").encode(), -32601),
        (xmlrpc.client.dumps(("k", SEND), "iworx.route").encode(), -32602),
        (xmlrpc.client.dumps(("k", SEND, "a", {}, "extra"), "iworx.route").encode(), -32602),
        (xmlrpc.client.dumps(("k", 42, "isRunning", {}), "iworx.route").encode(), -32602),
        (xmlrpc.client.dumps(("k", SEND, ["isRunning"], {}), "iworx.route").encode(), -32602),
    ],
)
def test_malformed_requests_get_a_fault_and_the_panel_carries_on(
    shared_panel: Panel, body: bytes, code: int
) -> None:
    started = time.monotonic()
    assert _fault(shared_panel.post(body)).faultCode == code
    assert time.monotonic() - started < 5
    _still_answers(shared_panel)


def test_a_20_mb_body_is_refused_without_being_processed(shared_panel: Panel) -> None:
    payload = "x" * (20 * 1024 * 1024)
    body = xmlrpc.client.dumps(
        (shared_panel.key, SEND, "update", {"smtp_routes": payload}), "iworx.route"
    )
    fault = _fault(shared_panel.post(body.encode()))
    assert fault.faultCode == -32000 and "larger than" in fault.faultString
    assert control_file(shared_panel.home, "smtproutes") is None
    _still_answers(shared_panel)


def test_non_struct_input_is_a_validation_error(shared_panel: Panel) -> None:
    for bad in (["concurrency_remote", 5], "concurrency_remote=5", 5):
        reply = shared_panel.call("update", bad)
        assert reply["status"] == 11
        assert reply["payload"].endswith("input: must be a struct of named inputs")


def test_unicode_and_control_characters_in_every_field(shared_panel: Panel) -> None:
    weird = "ключ\u202e\U0001f4a9'\"<>&;$(rm -rf /)"
    assert shared_panel.call("isRunning", auth=weird)["status"] == 401
    assert shared_panel.call("isRunning", auth={"email": weird, "password": weird})["status"] == 401
    assert shared_panel.call(weird)["status"] == 404
    assert shared_panel.call("isRunning", controller=weird)["status"] == 404
    reply = shared_panel.call(
        "update",
        {"concurrency_remote": weird, "smtp_routes": [weird], weird: weird, "timeout_remote": "١٢"},
    )
    assert reply["status"] == 11
    assert reply["payload"].count("\n") == 3
    assert shared_panel.call("isRunningOnNode", {"node_id": weird})["status"] == 11
    # XML 1.0 cannot carry most control characters: the request itself is malformed.
    body = xmlrpc.client.dumps(
        (shared_panel.key, SEND, "isRunning\x01", {}), "iworx.route"
    ).encode()
    assert _fault(shared_panel.post(body)).faultCode == -32700
    assert control_file(shared_panel.home, "concurrencyremote") is None
    assert control_file(shared_panel.home, "smtproutes") is None
    _still_answers(shared_panel)


def test_wrong_types_for_inputs_are_validation_errors(shared_panel: Panel) -> None:
    reply = shared_panel.call(
        "update",
        {
            "concurrency_remote": [1],
            "timeout_remote": {"a": 1},
            "timeout_connect": True,
            "queue_lifetime": 1.5,
            "smtp_routes": 17,
        },
    )
    assert reply["status"] == 11
    assert reply["payload"].split("\n")[1:] == [
        "concurrency_remote: must be an integer",
        "timeout_remote: must be an integer",
        "timeout_connect: must be an integer",
        "queue_lifetime: must be an integer",
        "smtp_routes: must be a list of routes",
    ]


def test_absurdly_deep_nesting_is_answered_cleanly(shared_panel: Panel) -> None:
    depth = 20_000
    nested = "<value><array><data>" * depth + "</data></array></value>" * depth
    body = (
        "<?xml version='1.0'?><methodCall><methodName>iworx.route</methodName><params>"
        f"<param><value><string>{shared_panel.key}</string></value></param>"
        f"<param><value><string>{SEND}</string></value></param>"
        "<param><value><string>update</string></value></param>"
        f"<param>{nested}</param></params></methodCall>"
    ).encode()
    # libxml2 stops at 256 levels of elements: a parse fault, long before any recursion.
    with pytest.raises(xmlrpc.client.Fault) as refused:
        xmlrpc.client.loads(shared_panel.post(body))
    assert refused.value.faultCode == FAULT_PARSE
    assert "depth" in refused.value.faultString
    _still_answers(shared_panel)


def test_a_corrupt_users_file_answers_in_the_api_format(panel: Panel) -> None:
    users = panel.home.home / "panel" / "users.json"
    users.write_text("{ this is not json")
    reply = panel.call("isRunning")
    assert (reply["status"], reply["reply_code"]) == (1, 500)
    assert "authentication failed unexpectedly" in panel.home.log_text("panel")


@pytest.mark.parametrize("path", ["/xmlrpc", "/soap", f"/api/v1{SEND}/isRunning"])
def test_a_client_leaving_mid_body_costs_no_traceback(shared_panel: Panel, path: str) -> None:
    with socket.create_connection(("127.0.0.1", shared_panel.http_port)) as connection:
        connection.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
            "Content-Length: 1000\r\n\r\n<methodCall>".encode()
        )
    _still_answers(shared_panel)
    stderr = (shared_panel.home.home / "panel.stderr").read_text(errors="replace")
    assert "Traceback" not in stderr and "ClientDisconnect" not in stderr
