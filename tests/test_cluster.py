"""Clustering with real processes: a manager and three nodes, each its own panel and home.

The manager reaches the nodes only through their XML-RPC API, pinned to their certificates.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.cluster import NODES, Cluster
from support.dns_server import DNSServer
from support.net import wait_for
from support.panel import SEND, Panel, control_file
from support.php import php_route
from support.sink import RecordingSink

from sendworx.shared.dkim_keys import KeyStore
from sendworx.shared.pidfile import running_pid

DKIM = "/nodeworx/mail/dkim"
HISTORY = "/nodeworx/mail/history"


@pytest.fixture
def cluster(tmp_path: Path, dns_server: DNSServer) -> Iterator[Cluster]:
    running = Cluster(tmp_path, 3, dns_port=dns_server.port, timeout=2.0).start()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def registered(cluster: Cluster) -> Cluster:
    cluster.register_all()
    return cluster


def _fingerprint(panel: Panel) -> str:
    presented = ssl.get_server_certificate(("127.0.0.1", panel.https_port))
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(presented)).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _engine_running(panel: Panel) -> bool:
    return running_pid(panel.home.instance.engine_pid_file) is not None


def test_registering_pins_each_node_and_keeps_keys_private(registered: Cluster) -> None:
    listed = registered.manager.call("listClusterNodes", controller=NODES)["payload"]
    assert [entry["node_id"] for entry in listed] == [
        Cluster.node_id(node) for node in registered.nodes
    ]
    assert [entry["fingerprint"] for entry in listed] == [
        _fingerprint(node) for node in registered.nodes
    ]
    assert all("api_key" not in entry for entry in listed)
    store = registered.manager.home.home / "panel" / "nodes.json"
    assert store.stat().st_mode & 0o777 == 0o600
    # This server is node 1; registered nodes take the next numbers.
    assert [entry["id"] for entry in listed] == list(range(2, len(registered.nodes) + 2))


def test_a_node_answers_to_its_number_as_interworx_clients_name_it(registered: Cluster) -> None:
    """Numbers are given at registration and never reused: a deleted node's number stays
    gone, and a node registered again gets a new one. 1 is the manager itself."""
    manager, (first, second, *_) = registered.manager, registered.nodes
    assert manager.call("start", {"cascade_to_nodes": 1})["status"] == 0
    assert manager.call("stopOnNode", {"node_id": "3"})["status"] == 0
    assert [_engine_running(panel) for panel in registered.panels[:3]] == [True, True, False]
    deleted = manager.call("delete", {"node_id": 2}, controller=NODES)
    assert deleted["payload"] == f"node {Cluster.node_id(first)} deleted"
    assert manager.call("isRunningOnNode", {"node_id": "2"})["status"] == 11
    itself = manager.call("delete", {"node_id": "1"}, controller=NODES)
    assert itself["status"] == 11 and "node_id: is this server (node 1)" in itself["payload"]
    again = registered.register(first)
    assert again["status"] == 0 and "added as node 5 " in again["payload"], again
    listed = manager.call("listClusterNodes", controller=NODES)["payload"]
    assert {entry["node_id"]: entry["id"] for entry in listed} == {
        Cluster.node_id(second): 3,
        Cluster.node_id(registered.nodes[2]): 4,
        Cluster.node_id(first): 5,
    }
    status = manager.call("listNodeStatus", controller=NODES)["payload"]
    assert [entry["id"] for entry in status] == [1, 3, 4, 5]


def test_billing_modules_name_this_server_node_1_standalone_and_as_a_manager(
    tmp_path: Path, dns_server: DNSServer
) -> None:
    """Blesta, ClientExec and Upmind send node_id "1" (a string from PHP's SOAP, an int from
    others): on a standalone box and on a manager that is this server; on a manager the
    registered nodes answer to 2 and 3. Both real clients, every way of writing the number."""
    cluster = Cluster(tmp_path, 2, dns_port=dns_server.port).start()
    try:
        manager, nodes = cluster.manager, cluster.nodes

        def php(action: str, node_id: object) -> Any:
            request: dict[str, Any] = {"auth": manager.key, "controller": SEND}
            request |= {"action": action, "input": {"node_id": node_id}}
            url = f"https://127.0.0.1:{manager.https_port}/soap?wsdl"
            return php_route(url, "1.1", manager.ca, request)["raw"]

        def running() -> list[bool]:
            return [_engine_running(panel) for panel in cluster.panels]

        for registered in (False, True):  # standalone first, then a manager of two nodes
            if registered:
                cluster.register_all()
            assert manager.call("isRunningOnNode", {"node_id": "1"}) == {
                "status": 0,
                "payload": False,
                "reply_code": 205,
            }
            assert php("isRunningOnNode", "1") == {"status": 0, "payload": False, "reply_code": 205}
            restarted = manager.call("restartOnNode", {"node_id": 1})
            assert restarted["status"] == 0, restarted
            assert running() == [True, False, False]
            assert manager.call("isRunningOnNode", {"node_id": 1})["payload"] is True
            assert php("isRunningOnNode", 1)["payload"] is True
            assert php("restartOnNode", 1)["status"] == 0
            assert manager.call("stopOnNode", {"node_id": "1"})["status"] == 0
            assert running() == [False, False, False]
        assert php("restartOnNode", 2)["status"] == 0
        assert manager.call("restartOnNode", {"node_id": "3"})["status"] == 0
        assert running() == [False, True, True]
        assert php("isRunningOnNode", "3")["payload"] is True
        assert nodes[0].call("isRunningOnNode", {"node_id": 1})["payload"] is True  # itself
        unknown = manager.call("isRunningOnNode", {"node_id": 7})
        assert unknown["status"] == 11
        assert unknown["payload"].split("\n")[1] == "node_id: no node '7' is registered"
        assert manager.call("isRunningOnNode", {"node_id": 0})["status"] == 11
    finally:
        cluster.close()


def test_registration_refuses_what_it_cannot_verify(cluster: Cluster) -> None:
    manager, node = cluster.manager, cluster.nodes[0]
    bad_key = cluster.register(node, key="-----BEGIN INTERWORX API KEY-----\nx\n-----END")
    assert bad_key["status"] == 11 and bad_key["payload"].split("\n")[1].startswith("apikey: ")
    node.stop()
    down = cluster.register(node)
    assert down["status"] == 11 and "is not a sendworx node answering" in down["payload"]
    plain = manager.call(
        "add",
        {"hostname": f"http://127.0.0.1:{node.http_port}", "apikey": node.key},
        controller=NODES,
    )
    assert plain["status"] == 11 and "must use https" in plain["payload"]
    assert manager.call("listClusterNodes", controller=NODES)["payload"] == []


def test_cascaded_update_changes_every_node_and_is_not_cascaded_again(
    cluster: Cluster,
) -> None:
    manager, (first, second, third) = cluster.manager, cluster.nodes
    cluster.register(first)
    cluster.register(third)
    cluster.register(second, on=first)  # first is itself a manager of second
    reply = manager.call("update", {"concurrency_remote": 42, "cascade_to_nodes": 1})
    assert reply["status"] == 0, reply
    assert reply["payload"] == {
        "sendworx.test": {"status": 0, "payload": "Outbound mail settings updated"},
        Cluster.node_id(first): {"status": 0, "payload": "Outbound mail settings updated"},
        Cluster.node_id(third): {"status": 0, "payload": "Outbound mail settings updated"},
    }
    for panel in (manager, first, third):
        assert control_file(panel.home, "concurrencyremote") == "42\n"
    # first received cascade_to_nodes=0: its own node is untouched.
    assert control_file(second.home, "concurrencyremote") is None


def test_nodes_sign_with_the_managers_keys_pushed_by_cascade(registered: Cluster) -> None:
    manager, nodes = registered.manager, registered.nodes
    stores = [KeyStore(panel.home.instance.dkim_dir) for panel in registered.panels]

    def same_everywhere() -> list[tuple[str, str, str]]:
        seen = {
            tuple((k.selector, k.state, k.public_key) for k in store.of_domain("shop.example"))
            for store in stores
        }
        assert len(seen) == 1, seen
        pems = {
            tuple(store.key_path(key).read_bytes() for key in store.of_domain("shop.example"))
            for store in stores
        }
        assert len(pems) == 1
        return [(selector, state, key[:8]) for selector, state, key in seen.pop()]

    added = manager.call("add", {"domain": "shop.example", "cascade_to_nodes": 1}, controller=DKIM)
    assert added["status"] == 0, added
    assert set(added["payload"]) == {"sendworx.test", *map(Cluster.node_id, nodes)}
    assert [state for _, state, _ in same_everywhere()] == ["active"]
    inputs = {"domain": "shop.example", "step": "start", "cascade_to_nodes": 1}
    assert manager.call("rotate", inputs, controller=DKIM)["status"] == 0
    assert [state for _, state, _ in same_everywhere()] == ["active", "pending"]
    # What the manager sends is checked whole: a key that is not the domain's changes nothing.
    [exported] = stores[0].export("shop.example")[:1]
    forged = {"domain": "shop.example", "keys": [{**exported, "domain": "other.example"}]}
    refused = nodes[0].call("syncKeys", forged, controller=DKIM)
    assert refused["status"] == 11 and "keys: " in refused["payload"]
    same_everywhere()
    gone = manager.call(
        "delete", {"domain": "shop.example", "cascade_to_nodes": 1}, controller=DKIM
    )
    assert gone["status"] == 0, gone
    assert all(store.of_domain("shop.example") == [] for store in stores)


def test_on_node_actions_reach_exactly_that_node(registered: Cluster) -> None:
    manager, nodes = registered.manager, registered.nodes
    started = manager.call("start", {"cascade_to_nodes": 1})
    assert started["status"] == 0, started
    assert all(_engine_running(panel) for panel in registered.panels)
    target = Cluster.node_id(nodes[1])
    stopped = manager.call("stopOnNode", {"node_id": target})
    assert stopped == {"status": 0, "payload": "send stopped", "reply_code": 205}
    assert [_engine_running(panel) for panel in registered.panels] == [True, True, False, True]
    assert manager.call("isRunningOnNode", {"node_id": target})["payload"] is False
    assert manager.call("isRunningOnNode", {"node_id": "sendworx.test"})["payload"] is True
    assert manager.call("isRunning")["payload"] is True  # about the manager itself
    unknown = manager.call("startOnNode", {"node_id": "elsewhere.test"})
    assert unknown["status"] == 11


def _break_down(cluster: Cluster, node: Panel) -> str:
    node.stop()
    return "cannot connect"


def _break_slow(cluster: Cluster, node: Panel) -> str:
    assert node.process is not None
    node.process.send_signal(signal.SIGSTOP)  # accepts connections, answers nothing
    return "no answer"


def _break_revoked(cluster: Cluster, node: Panel) -> str:
    subprocess.run(node.home.command("apikey"), check=True, capture_output=True)
    return "refused the registered API key"


@pytest.mark.parametrize(
    "breakage", [_break_down, _break_slow, _break_revoked], ids=["down", "slow", "revoked"]
)
def test_a_failing_node_is_reported_while_the_others_succeed(
    registered: Cluster, breakage: object
) -> None:
    manager, (broken, *healthy) = registered.manager, registered.nodes
    reason = breakage(registered, broken)  # type: ignore[operator]
    try:
        reply = manager.call("update", {"timeout_connect": 33, "cascade_to_nodes": 1})
    finally:
        if broken.process is not None and broken.process.poll() is None:
            broken.process.send_signal(signal.SIGCONT)
    assert (reply["status"], reply["reply_code"]) == (207, 207)
    results = reply["payload"]
    failure = results[Cluster.node_id(broken)]
    assert failure["status"] != 0 and reason in failure["payload"], failure
    for node in healthy:
        assert results[Cluster.node_id(node)]["status"] == 0
        assert control_file(node.home, "timeoutconnect") == "33\n"
    assert control_file(manager.home, "timeoutconnect") == "33\n"  # applied here, not rolled back
    if breakage is not _break_slow:
        assert control_file(broken.home, "timeoutconnect") is None
    # A node that was only slow got the request and may still apply it once it wakes (the
    # manager said it did not answer, not that nothing happened there): no assertion.


def test_a_node_presenting_another_certificate_is_refused(registered: Cluster) -> None:
    manager, node = registered.manager, registered.nodes[0]
    node.stop()
    shutil.rmtree(node.home.home / "panel" / "tls")  # a new CA and certificate on restart
    node.start()
    reply = manager.call("isRunningOnNode", {"node_id": Cluster.node_id(node)})
    assert reply["status"] == 1 and "certificate rejected" in reply["payload"]
    cascade = manager.call("update", {"queue_lifetime": 7200, "cascade_to_nodes": 1})
    assert cascade["status"] == 207
    assert "certificate rejected" in cascade["payload"][Cluster.node_id(node)]["payload"]
    assert control_file(node.home, "queuelifetime") is None


def test_cluster_status_lists_every_node(registered: Cluster) -> None:
    manager, nodes = registered.manager, registered.nodes
    assert manager.call("startOnNode", {"node_id": Cluster.node_id(nodes[0])})["status"] == 0
    nodes[2].stop()
    result = subprocess.run(
        manager.home.command("status", "--cluster", "--json"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "Unclosed" not in result.stderr, result.stderr  # connections to nodes were closed
    view = {entry["node_id"]: entry for entry in json.loads(result.stdout)["cluster"]}
    assert view["sendworx.test"]["role"] == "manager"
    assert view[Cluster.node_id(nodes[0])]["running"] is True
    assert view[Cluster.node_id(nodes[1])]["running"] is False
    assert view[Cluster.node_id(nodes[2])]["reachable"] is False
    response = httpx.post(
        f"http://127.0.0.1:{manager.http_port}/api/v1{NODES}/listNodeStatus",
        headers={"Authorization": "Bearer " + " ".join(manager.key.split())},
    )
    assert [entry["node_id"] for entry in response.json()["payload"]] == list(view)


def test_partial_failure_is_http_502_on_the_json_api(registered: Cluster) -> None:
    registered.nodes[0].stop()
    response = httpx.post(
        f"http://127.0.0.1:{registered.manager.http_port}/api/v1{SEND}/restart",
        json={"cascade_to_nodes": 1},
        headers={"Authorization": "Bearer " + " ".join(registered.manager.key.split())},
        timeout=60,
    )
    assert response.status_code == 502
    body = response.json()
    assert body["status"] == 207 and body["payload"]["sendworx.test"]["status"] == 0
    wait_for(lambda: all(_engine_running(node) for node in registered.nodes[1:]))
    assert os.path.exists(registered.manager.home.instance.engine_pid_file)


def test_nodes_are_managed_from_the_command_line(cluster: Cluster) -> None:
    manager, node = cluster.manager, cluster.nodes[0]
    key_file = node.home.home / "panel" / "master.key"

    def sendworx(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            manager.home.command("node", *arguments), capture_output=True, text=True, timeout=60
        )

    added = sendworx("add", Cluster.node_id(node), "--key-file", str(key_file))
    assert added.returncode == 0 and _fingerprint(node) in added.stdout, added.stderr
    listed = json.loads(sendworx("list", "--json").stdout)
    assert [(entry["id"], entry["node_id"]) for entry in listed] == [(2, Cluster.node_id(node))]
    assert sendworx("list").stdout.splitlines() == [
        "  1  sendworx.test  (this server)",
        f"  2  {Cluster.node_id(node)}  {listed[0]['url']}  {_fingerprint(node)}",
    ]
    again = sendworx("add", Cluster.node_id(node), "--key-file", str(key_file))
    assert again.returncode == 1 and "already registered" in again.stderr
    assert sendworx("delete", Cluster.node_id(node)).returncode == 0
    assert json.loads(sendworx("list", "--json").stdout) == []
    assert sendworx("delete", Cluster.node_id(node)).returncode == 1


def test_the_history_is_searched_on_every_node_from_the_manager(registered: Cluster) -> None:
    manager, (first, second, third) = registered.manager, registered.nodes
    with RecordingSink("127.0.4.70") as sink:
        for panel in (manager, first, second):
            panel.home.write_config(history={"flush_seconds": 0.1})
            panel.home.routes(f":[127.0.4.70]:{sink.port}")
        for panel in (manager, first, second):
            assert panel.call("start")["status"] == 0
        manager.home.inject("a@far.test", sender="x@shop.test")
        first.home.inject("b@far.test", sender="x@shop.test")
        second.home.inject("c@far.test", sender="y@other.test")
        sink.wait_for_messages(3)
        third.stop()  # a node that cannot answer is named; the others still are

        def search(**inputs: Any) -> Any:
            reply = manager.call("listEventsOnAllNodes", inputs, controller=HISTORY)
            assert reply["status"] == 0, reply
            return reply["payload"]

        wait_for(lambda: len(search(sender="shop.test")["events"]) == 4)
        found = search(sender="shop.test")
    assert sorted(event["event"] for event in found["events"]) == [
        "accepted",
        "accepted",
        "delivered",
        "delivered",
    ]
    ats = [event["at"] for event in found["events"]]
    assert ats == sorted(ats, reverse=True)
    by_node = {(event["node"], event["recipient"]) for event in found["events"]}
    assert by_node >= {("sendworx.test", "a@far.test"), (Cluster.node_id(first), "b@far.test")}
    assert found["nodes"][Cluster.node_id(third)].startswith("status 1")
    assert [found["nodes"][name] for name in ("sendworx.test", Cluster.node_id(first))] == [
        "ok",
        "ok",
    ]
    # Pages of the merged whole.
    second_page = search(sender="shop.test", page=2, per_page=3)
    assert [e["at"] for e in second_page["events"]] == ats[3:] and second_page["more"] == 0
    deep = manager.call("listEventsOnAllNodes", {"page": 11, "per_page": 50}, controller=HISTORY)
    assert deep["status"] == 11 and "narrow the search" in str(deep)
