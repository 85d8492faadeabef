"""/nodeworx/mail/policy over the real panel (XML-RPC): the policy file edited with status 11
for every problem, and the senders the circuit breaker holds — seen, released and purged,
with the engine running and stopped, and on a node of a cluster."""

from __future__ import annotations

import json
import smtplib
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from support.cluster import one_node_cluster
from support.dns_server import DNSServer
from support.instance import SendworxHome
from support.net import wait_for
from support.panel import Panel
from support.sink import RecordingSink

POLICY = "/nodeworx/mail/policy"
BREAKER = """
[[breaker]]
name = "burst"
scope = "domain"
window_minutes = 60
messages = 2
"""


def _policy(panel: Panel, action: str, data: object = None) -> Any:
    reply = panel.call(action, data, controller=POLICY)
    assert reply["status"] == 0, reply
    return reply["payload"]


def _smtp(home: SendworxHome, sender: str, *recipients: str) -> None:
    with smtplib.SMTP("127.0.0.1", home.smtpd_port, timeout=10) as client:
        client.sendmail(sender, list(recipients), f"Subject: from {sender}\r\n\r\nhi\r\n")


def test_update_names_every_problem_and_writes_nothing_then_applies(panel: Panel) -> None:
    path = panel.home.home / "policy.toml"
    path.write_text(BREAKER)
    bad = '[[limit]]\nname = "x"\nscope = "planet"\n\n[[pacing]]\nname = "p"\nconnections = 0\n'
    reply = panel.call("update", {"policy": bad}, controller=POLICY)
    assert reply["status"] == 11
    problem = reply["payload"].split("\n")[1]
    assert problem.startswith("policy: ")
    assert "limit.0.scope" in problem and "pacing.0.connections" in problem
    assert path.read_text() == BREAKER
    garbage = panel.call("update", {"policy": "[[limit]\nname = "}, controller=POLICY)
    assert garbage["status"] == 11 and "policy: not valid TOML" in garbage["payload"]
    assert panel.call("update", {"policy": 12}, controller=POLICY)["status"] == 11
    deep = panel.call("update", {"policy": "a = " + "[" * 50_000}, controller=POLICY)
    assert deep["status"] == 11 and "nested too deeply" in deep["payload"]
    new = BREAKER + '\n[[pacing]]\nname = "slow"\ndomains = ["slow.test"]\nconnections = 2\n'
    assert _policy(panel, "update", {"policy": new}) == "Sending policy updated"
    assert path.read_text() == new and path.stat().st_mode & 0o777 == 0o600
    assert _policy(panel, "queryUpdate")["policy"] == new
    state = _policy(panel, "queryPolicy")
    assert state["breakers"] == 1 and state["pacing"][0]["name"] == "slow"
    assert [rule["name"] for rule in state["pacing"][1:]] == [
        "google",
        "microsoft",
        "yahoo",
        "apple",
    ]


def test_a_bursting_domain_is_held_then_released_over_the_api(panel: Panel) -> None:
    home = panel.home
    (home.home / "policy.toml").write_text(BREAKER)
    with RecordingSink("127.0.4.9") as sink:
        home.routes(f"far.test:[127.0.4.9]:{sink.port}")
        assert panel.call("start")["status"] == 0
        home.start_smtpd()
        for number in range(5):
            _smtp(home, "wp@hacked.test", f"victim{number}@far.test")
        _smtp(home, "ok@fine.test", "friend@far.test")
        wait_for(lambda: len(_policy(panel, "listHolds")) == 1)
        [hold] = _policy(panel, "listHolds")
        assert (hold["hold"], hold["rule"]) == ("domain:hacked.test", "burst")
        assert hold["reason"] == "more than 2 messages in 60 minutes"
        held = panel.call("listMessages", {"state": "held"}, controller="/nodeworx/mail/queue")
        wait_for(lambda: len(home.queue_files()) == 3)
        time.sleep(0.5)
        assert len(sink.received()) == 3  # two from hacked.test, the one from fine.test
        assert held["status"] == 0
        released = _policy(panel, "releaseHold", {"hold": "domain:HACKED.test"})
        assert released["hold"] == "domain:hacked.test" and released["touched"] == 3
        sink.wait_for_messages(6)
        wait_for(home.queue_empty)
        assert _policy(panel, "listHolds") == []


@pytest.mark.parametrize("engine_running", [True, False])
def test_an_operator_holds_a_sender_and_purges_it(panel: Panel, engine_running: bool) -> None:
    home = panel.home
    with RecordingSink("127.0.4.10") as sink:
        home.routes(f"far.test:[127.0.4.10]:{sink.port}")
        home.inject("a@far.test", sender="spam@evil.test")
        home.inject("b@far.test", sender="spam@evil.test")
        if engine_running:
            sink.behaviour.refuse_rcpt = "451 4.3.0 later"
            assert panel.call("start")["status"] == 0
            home.wait_for_delivery_lines(2)
        added = _policy(panel, "addHold", {"hold": "sender:spam@evil.test", "reason": "abuse"})
        assert added["touched"] == 2
        assert _policy(panel, "listHolds")[0]["reason"] == "abuse"
        sink.behaviour.refuse_rcpt = None
        if not engine_running:
            assert panel.call("start")["status"] == 0
        home.inject("c@far.test", sender="spam@evil.test")  # new mail is held too
        wait_for(lambda: _held(home) == 3)
        time.sleep(0.5)
        assert sink.received() == []
        assert _policy(panel, "purgeHold", {"hold": "sender:spam@evil.test"})["touched"] == 3
        assert home.queue_empty() and _policy(panel, "listHolds") == []
    bad = panel.call("addHold", {"hold": "planet:mars"}, controller=POLICY)
    assert bad["status"] == 11 and bad["payload"].split("\n")[1].startswith("hold: ")


def _held(home: SendworxHome) -> int:
    states = set(home.queue_files("state"))
    return sum(
        1
        for message_id in home.queue_files()
        if message_id in states and home.state(message_id)["held"]
    )


def test_holds_on_a_node_and_across_the_cluster(tmp_path: Path, dns_server: DNSServer) -> None:
    with one_node_cluster(tmp_path, dns_server.port) as (cluster, node, node_id):
        node.home.inject("u@far.test", sender="x@moved.test")
        one = {"node_id": node_id, "hold": "domain:moved.test"}
        assert _policy(cluster.manager, "addHoldOnNode", one)["touched"] == 1
        assert _policy(cluster.manager, "listHolds") == []
        assert _policy(cluster.manager, "listHoldsOnNode", {"node_id": node_id})[0]["key"] == (
            "moved.test"
        )
        everywhere = {"hold": "account:alice", "cascade_to_nodes": 1}
        results = _policy(cluster.manager, "addHold", everywhere)
        assert all(result["status"] == 0 for result in results.values()) and len(results) == 2
        assert [hold["hold"] for hold in _policy(node, "listHolds")] == [
            "domain:moved.test",
            "account:alice",
        ]


def _holds(home: SendworxHome, *arguments: str) -> str:
    done = subprocess.run(home.command("holds", *arguments), capture_output=True, check=True)
    return done.stdout.decode().strip()


def test_the_holds_command_works_with_the_panel_down(home: SendworxHome) -> None:
    home.inject("u@far.test", sender="x@shop.test")
    added = _holds(home, "add", "domain:shop.test", "--reason", "refund fraud")
    assert added == "domain:shop.test: 1 messages, 0 in flight"
    [hold] = json.loads(_holds(home, "--json"))
    assert (hold["hold"], hold["rule"], hold["reason"]) == (
        "domain:shop.test",
        "operator",
        "refund fraud",
    )
    assert (
        _holds(home, "release", "domain:shop.test") == "domain:shop.test: 1 messages, 0 in flight"
    )
    assert _holds(home) == "no sender is on hold"
    refused = subprocess.run(home.command("holds", "purge", "domain:x.test"), capture_output=True)
    assert refused.returncode == 2 and b"add --yes" in refused.stderr
