"""The NodeWorx API over real HTTP(S) with Python's xmlrpc.client: every action of
/nodeworx/mail/send, every auth form, every error path, real service control."""

from __future__ import annotations

import os
import subprocess
import time
import xmlrpc.client
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from support.instance import SendworxHome
from support.net import wait_for
from support.panel import SEND, STOPPED_SERVICE_INFO, Panel, control_file
from support.php import php_xmlrpc_route

from sendworx.shared.errors import VALIDATION_HEADER
from sendworx.shared.pidfile import running_pid

OK = 205


def ok(payload: Any) -> dict[str, Any]:
    return {"status": 0, "payload": payload, "reply_code": OK}


def test_read_only_actions_answer_exactly_as_the_published_page(panel: Panel) -> None:
    expected = {
        "listGeneralName": "##LG_OUTBOUND_MAIL##",
        "listPortNumbers": "##LG_NOT_APPLICABLE##",
        "listPortNumbersArray": ["##LG_NOT_APPLICABLE##"],
        "listRequiredPermissions": ["EMAIL"],
        "listServiceName": "send",
        "listServicePage": "/nodeworx/mail/mta",
        "isRunning": False,
    }
    for action, payload in expected.items():
        assert panel.call(action) == ok(payload), action
    assert panel.call("listServiceInfo") == ok(STOPPED_SERVICE_INFO)


def test_payload_types_on_the_wire_are_boolean_and_int(panel: Panel) -> None:
    body = panel.post(
        xmlrpc.client.dumps((panel.key, SEND, "isRunning", {}), "iworx.route").encode()
    )
    assert b"<boolean>0</boolean>" in body and b"<name>status</name>\n<value><int>0</int>" in body
    body = panel.post(
        xmlrpc.client.dumps((panel.key, SEND, "listServiceInfo", {}), "iworx.route").encode()
    )
    assert b"<name>is_running</name>\n<value><int>0</int>" in body


@pytest.mark.parametrize(
    "controller", ["/nodeworx/mail/send", "nodeworx/mail/send", "MailSend", "mailsend"]
)
def test_controller_is_accepted_in_every_spelling(shared_panel: Panel, controller: str) -> None:
    assert shared_panel.call("listServiceName", controller=controller) == ok("send")


@pytest.mark.parametrize("no_input", [None, {}, [], ""])
def test_missing_empty_or_nil_input_means_no_input(shared_panel: Panel, no_input: Any) -> None:
    proxy = shared_panel.https()
    arguments = [shared_panel.key, SEND, "listServiceName"]
    if no_input is not None:
        arguments.append(no_input)
    assert proxy.iworx.route(*arguments) == ok("send")
    if no_input is None:
        assert proxy.iworx.route(shared_panel.key, SEND, "listServiceName", None) == ok("send")


def test_http_listener_ignores_a_query_string(shared_panel: Panel) -> None:
    assert shared_panel.http("/xmlrpc?SESSION=1&x=2").iworx.route(
        shared_panel.key, SEND, "isRunning", {}
    ) == ok(False)


def test_start_stop_restart_control_one_real_engine(panel: Panel) -> None:
    engine_pid = panel.home.instance.engine_pid_file
    assert panel.call("start") == ok("send started")
    first = running_pid(engine_pid)
    assert first is not None and panel.call("isRunning") == ok(True)
    assert panel.call("start", {"cascade_to_nodes": "0"}) == ok("send started")
    # A server with no nodes answers a cascade exactly as it answers without one.
    assert panel.call("start", {"cascade_to_nodes": "1"}) == ok("send started")
    assert running_pid(engine_pid) == first  # idempotent: still exactly one engine
    assert panel.call("restart") == ok("send restarted")
    second = running_pid(engine_pid)
    assert second not in (None, first)
    assert panel.call("listServiceInfo")["payload"]["is_running"] == 1
    assert panel.call("stop") == ok("send stopped")
    assert running_pid(engine_pid) is None and panel.call("isRunning") == ok(False)
    assert panel.call("stop") == ok("send stopped")


def test_is_running_turns_false_when_the_engine_is_killed_from_outside(panel: Panel) -> None:
    panel.call("start")
    panel.kill_engine()
    assert panel.call("isRunning") == ok(False)
    assert panel.call("listServiceInfo")["payload"]["is_running"] == 0


def test_a_restarted_panel_finds_the_engine_that_kept_running(panel: Panel) -> None:
    panel.call("start")
    pid = running_pid(panel.home.instance.engine_pid_file)
    panel.stop()
    assert running_pid(panel.home.instance.engine_pid_file) == pid
    panel.start()
    assert panel.call("isRunning") == ok(True)
    assert panel.call("start") == ok("send started")
    assert running_pid(panel.home.instance.engine_pid_file) == pid


def test_update_writes_control_files_and_the_running_engine_uses_them(panel: Panel) -> None:
    panel.call("start")
    reply = panel.call(
        "update",
        {
            "concurrency_remote": "100",
            "timeout_remote": 30,
            "timeout_connect": "15",
            "queue_lifetime": 86400,
            "smtp_routes": "example.com:relay.example.net:2525\r\n:[192.0.2.1]\n",
            "cascade_to_nodes": 0,
            "perms": ["ignored", "by", "design"],
        },
    )
    assert reply == ok("Outbound mail settings updated")
    home = panel.home
    assert control_file(home, "concurrencyremote") == "100\n"
    assert control_file(home, "timeoutremote") == "30\n"
    assert control_file(home, "timeoutconnect") == "15\n"
    assert control_file(home, "queuelifetime") == "86400\n"
    assert control_file(home, "smtproutes") == "example.com:relay.example.net:2525\n:[192.0.2.1]\n"
    wait_for(lambda: home.status()["settings"]["concurrency_remote"] == 100)
    assert home.status()["settings"]["smtp_routes"] == [
        "example.com:relay.example.net:2525",
        ":[192.0.2.1]",
    ]
    assert panel.call("queryUpdate") == ok(
        {
            "concurrency_remote": 100,
            "timeout_remote": 30,
            "timeout_connect": 15,
            "queue_lifetime": 86400,
            "smtp_routes": ["example.com:relay.example.net:2525", ":[192.0.2.1]"],
            "cascade_to_nodes": 0,
        }
    )


@pytest.mark.parametrize(
    "routes", [["a.test:relay.test", "b.test:"], {"0": "a.test:relay.test", "x": "b.test:"}]
)
def test_routes_arrive_as_array_or_struct(panel: Panel, routes: Any) -> None:
    assert panel.call("update", {"smtp_routes": routes})["status"] == 0
    assert control_file(panel.home, "smtproutes") == "a.test:relay.test\nb.test:\n"


def test_invalid_update_lists_every_bad_field_and_writes_nothing(panel: Panel) -> None:
    panel.call("update", {"concurrency_remote": 10})
    reply = panel.call(
        "update",
        {
            "concurrency_remote": 20,
            "timeout_remote": "soon",
            "timeout_connect": 0,
            "queue_lifetime": "-1",
            "smtp_routes": ["ok.test:relay.test", "bad.test:relay.test:99999"],
            "cascade_to_nodes": 7,
        },
    )
    assert (reply["status"], reply["reply_code"]) == (11, 400)
    lines = reply["payload"].split("\n")
    assert lines[0] == VALIDATION_HEADER
    assert lines[1:] == [
        "timeout_remote: must be an integer",
        "timeout_connect: must be between 1 and 3600",
        "queue_lifetime: must be between 0 and 31536000",
        "smtp_routes: route 2 ('bad.test:relay.test:99999'): "
        "port must be a number from 1 to 65535, not '99999'",
        "cascade_to_nodes: must be 0 or 1",
    ]
    assert control_file(panel.home, "concurrencyremote") == "10\n"
    assert control_file(panel.home, "smtproutes") is None


def test_on_node_actions_run_locally_and_refuse_unknown_nodes(panel: Panel) -> None:
    assert panel.call("isRunningOnNode") == ok(False)
    assert panel.call("isRunningOnNode", {"node_id": "sendworx.test"}) == ok(False)
    assert panel.call("startOnNode", {"node_id": "sendworx.test"}) == ok("send started")
    assert panel.call("isRunningOnNode", {}) == ok(True)
    assert panel.call("stopOnNode") == ok("send stopped")
    reply = panel.call("restartOnNode", {"node_id": "node9.example"})
    assert reply["status"] == 11
    assert reply["payload"].split("\n")[1] == "node_id: no node 'node9.example' is registered"
    assert running_pid(panel.home.instance.engine_pid_file) is None


def test_fail_always_fails_and_reroute_runs_another_action(panel: Panel) -> None:
    failed = panel.call("fail")
    assert (failed["status"], failed["reply_code"]) == (1, 500)
    assert panel.call("reroute", {"action": "listServiceName"}) == ok("send")
    assert panel.call("reroute", {"action": "isRunningOnNode", "input": {}}) == ok(False)
    missing = panel.call("reroute", {})
    assert missing["status"] == 11 and "action: is required" in missing["payload"]
    assert panel.call("reroute", {"action": "nope"})["status"] == 11


# -- authentication -------------------------------------------------------------------------


def test_every_auth_form_is_accepted(panel: Panel) -> None:
    crlf_rewrapped = panel.key.replace("\n", "\r\n  ")
    session = panel.call(
        "getSession",
        auth={"email": panel.email, "password": panel.password},
        controller="/nodeworx/index",
    )["payload"]
    for auth in (
        panel.key,
        crlf_rewrapped,
        {"apikey": panel.key},
        {"email": panel.email, "password": panel.password},
        {"email": panel.email.upper(), "password": panel.password},
        {"sessionid": session},
    ):
        assert panel.call("isRunning", auth=auth) == ok(False)


@pytest.mark.parametrize(
    "auth",
    [
        "not a key",
        "",
        {"apikey": "-----BEGIN INTERWORX API KEY-----\nAAAA\n-----END INTERWORX API KEY-----"},
        {"email": "admin@sendworx.test", "password": "wrong password"},
        {"email": "nobody@sendworx.test", "password": "whatever1"},
        {"sessionid": "made-up"},
        {},
        ["a", "list"],
        42,
    ],
)
def test_bad_credentials_get_401(panel: Panel, auth: Any) -> None:
    reply = panel.call("isRunning", auth=auth)
    assert (reply["status"], reply["reply_code"]) == (401, 401)


def test_siteworx_credentials_are_refused_for_server_wide_settings(panel: Panel) -> None:
    reply = panel.call(
        "isRunning", auth={"email": panel.email, "password": panel.password, "domain": "a.test"}
    )
    assert reply["status"] == 401 and "SiteWorx" in reply["payload"]


def test_users_have_only_the_permissions_they_were_granted(panel: Panel) -> None:
    mail_key = panel.add_user("mail@sendworx.test", "EMAIL")
    other_key = panel.add_user("other@sendworx.test", "SERVICES")
    assert panel.call("isRunning", auth=mail_key) == ok(False)
    assert panel.call("update", {"timeout_connect": 30}, auth=mail_key)["status"] == 0
    denied = panel.call("update", {"timeout_connect": 31}, auth=other_key)
    assert (denied["status"], denied["reply_code"]) == (403, 403)
    assert "requires EMAIL" in denied["payload"]
    assert control_file(panel.home, "timeoutconnect") == "30\n"
    password_auth = {"email": "other@sendworx.test", "password": "correct horse 1"}
    assert panel.call("stop", auth=password_auth)["status"] == 403


def test_an_issued_key_replaces_the_old_one(panel: Panel) -> None:
    old = panel.add_user("rotate@sendworx.test", "EMAIL")
    # The same poll, byte for byte, before and after: a remembered parse must not remember trust.
    assert panel.call("isRunning", auth=old)["status"] == 0
    new = subprocess.run(
        panel.home.command("apikey", "--user", "rotate@sendworx.test"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert panel.call("isRunning", auth=old)["status"] == 401
    assert panel.call("isRunning", auth=new)["status"] == 0


def test_unknown_controller_and_action_are_404_after_authentication(panel: Panel) -> None:
    assert panel.call("isRunning", controller="/nodeworx/nope")["status"] == 404
    assert panel.call("dropTables")["status"] == 404
    assert panel.call("dropTables", auth="bad")["status"] == 401


def test_an_unused_session_expires(home: SendworxHome) -> None:
    panel = Panel(home, session_seconds=1.0).start()
    try:
        session = panel.call(
            "getSession", auth={"apikey": panel.key}, controller="/nodeworx/index"
        )["payload"]
        assert panel.call("isRunning", auth={"sessionid": session})["status"] == 0
        time.sleep(1.3)
        assert panel.call("isRunning", auth={"sessionid": session})["status"] == 401
    finally:
        panel.close()


def test_repeated_failures_lock_the_address_out(home: SendworxHome) -> None:
    panel = Panel(home, max_failures=3, lockout_seconds=1.5).start()
    try:
        for _ in range(3):
            assert panel.call("isRunning", auth="wrong")["status"] == 401
        locked = panel.call("isRunning")
        assert locked["status"] == 401 and "too many failed attempts" in locked["payload"]
        time.sleep(1.6)
        assert panel.call("isRunning") == ok(False)
    finally:
        panel.close()


def _post_with_forwarded_for(panel: Panel, auth: Any, forwarded_for: str) -> Any:
    body = xmlrpc.client.dumps((auth, SEND, "isRunning", {}), "iworx.route").encode()
    return xmlrpc.client.loads(panel.post(body, {"X-Forwarded-For": forwarded_for}))[0][0]


def test_a_forged_forwarded_for_neither_escapes_lockout_nor_enters_the_audit_log(
    home: SendworxHome,
) -> None:
    panel = Panel(home, max_failures=3, lockout_seconds=30).start()
    try:
        guesses = [{"email": panel.email, "password": f"guess {n}"} for n in range(4)]
        replies = [_post_with_forwarded_for(panel, g, f"10.9.9.{n}") for n, g in enumerate(guesses)]
        assert "too many failed attempts from 127.0.0.1" in replies[-1]["payload"]
        assert "10.9.9." not in home.log_text("panel")
    finally:
        panel.close()


def test_a_trusted_proxy_names_the_client(home: SendworxHome) -> None:
    panel = Panel(home, trusted_proxies=["127.0.0.1"]).start()
    try:
        reply = _post_with_forwarded_for(panel, "wrong key", "192.0.2.7")
        assert reply["status"] == 401
        wait_for(lambda: "peer=192.0.2.7" in home.log_text("panel"))
    finally:
        panel.close()


# -- concurrency ----------------------------------------------------------------------------


def test_fifty_concurrent_updates_and_restarts_leave_one_engine_and_whole_files(
    panel: Panel,
) -> None:
    panel.call("start")

    def request(number: int) -> dict[str, Any]:
        if number % 5 == 0:
            return dict(panel.call("restart"))
        values = {"concurrency_remote": number, "timeout_remote": number + 100}
        return dict(panel.call("update", values))

    with ThreadPoolExecutor(50) as pool:
        replies = list(pool.map(request, range(50)))
    assert [reply for reply in replies if reply["status"] != 0] == []
    concurrency = int(control_file(panel.home, "concurrencyremote") or "")
    assert control_file(panel.home, "timeoutremote") == f"{concurrency + 100}\n"
    engines = subprocess.run(
        ["pgrep", "-f", f"sendworx --home {panel.home.home} send"], capture_output=True, text=True
    ).stdout.split()
    assert len(engines) == 1
    assert int(engines[0]) == running_pid(panel.home.instance.engine_pid_file)
    assert not [name for name in os.listdir(panel.home.home / "control") if name.startswith(".")]


def test_a_configured_certificate_replaces_the_generated_one(
    home: SendworxHome, tmp_path: Path
) -> None:
    import ssl

    import trustme

    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1", "mail.example.test")
    chain, private_key = tmp_path / "chain.pem", tmp_path / "key.pem"
    issued.private_key_pem.write_to_path(str(private_key))
    chain.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    panel = Panel(home, certificate=str(chain), private_key=str(private_key)).start()
    try:
        context = ssl.create_default_context()
        authority.configure_trust(context)
        proxy = xmlrpc.client.ServerProxy(
            f"https://127.0.0.1:{panel.https_port}/xmlrpc", context=context
        )
        assert proxy.iworx.route(panel.key, SEND, "listServiceName", {}) == ok("send")
        assert not (home.home / "panel" / "tls").exists()
    finally:
        panel.close()


def test_php_xmlrpc_extension_clients_work_unchanged(panel: Panel) -> None:
    """Older PHP integrations call iworx.route through PHP's xmlrpc extension."""
    url = f"https://127.0.0.1:{panel.https_port}/xmlrpc"
    request = {"auth": panel.key, "controller": SEND}
    running = php_xmlrpc_route(url, panel.ca, {**request, "action": "isRunning", "input": []})
    assert running["reply"] == {"status": 0, "payload": False, "reply_code": 205}
    assert running["types"] == {"status": "integer", "payload": "boolean", "reply_code": "integer"}
    updated = php_xmlrpc_route(
        url,
        panel.ca,
        {**request, "action": "update", "input": {"concurrency_remote": "12", "perms": ["EMAIL"]}},
    )
    assert updated["reply"]["status"] == 0
    assert control_file(panel.home, "concurrencyremote") == "12\n"
    invalid = php_xmlrpc_route(
        url, panel.ca, {**request, "action": "update", "input": {"timeout_remote": "x"}}
    )
    assert invalid["reply"]["status"] == 11
    assert invalid["reply"]["payload"].endswith("\ntimeout_remote: must be an integer")
