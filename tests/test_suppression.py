"""The suppression list against a real engine, CLI and SMTP sink answering chosen codes: two
hard bounces suppress an address, and so does a failure after the whole retry life when the
recipient's side was at fault, never a connection error; new mail to it is not attempted but
bounced at once with a report that says why; an operator takes it off and mail goes again;
in `hold` mode the mail waits, and a delivery after release takes the address off."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from support.dns_server import DNSServer
from support.instance import SendworxHome
from support.net import free_port, wait_for
from support.redis_server import RedisServer
from support.sink import Behaviour, RecordingSink

from sendworx.shared.queue_format import Envelope
from sendworx.shared.suppression import SuppressionList, SuppressionStore
from sendworx.shared.suppression_redis import RedisSuppressionStore


def _cli(home: SendworxHome, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        home.command("suppression", *arguments), capture_output=True, text=True, timeout=60
    )


def _listed(home: SendworxHome) -> dict[str, dict[str, Any]]:
    done = _cli(home, "list", "--json", "--per-page", "500")
    assert done.returncode == 0, done.stderr
    return {entry["address"]: entry for entry in json.loads(done.stdout)["addresses"]}


def _metric(port: int, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        for line in page.read().decode().splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
    return None


def _file(home: SendworxHome) -> Path:
    return home.instance.suppression_path


def _in_force(store: SuppressionList) -> set[str]:
    """The list as the engine reads it, in this process (waiting on the CLI would start a
    command for every look)."""
    return set(store.in_force(time.time())[0])


def _answer(recipient: str) -> str | None:
    if recipient.startswith("gone@"):
        return "550 5.1.1 <gone@far.example>: user unknown"
    if recipient.startswith("full@"):
        return "452 4.2.2 <full@far.example>: mailbox full"
    if recipient.startswith("flaky@"):
        return "421 4.4.2 connection dropped, try again"
    return None


def _results(home: SendworxHome, recipient: str) -> list[tuple[str, str]]:
    return [(d["result"], d["relay"]) for d in home.deliveries() if d["rcpt"] == recipient]


def test_dead_addresses_are_suppressed_and_new_mail_to_them_bounces_at_once(
    home: SendworxHome,
) -> None:
    port = free_port()
    home.write_config(history={"flush_seconds": 0.1}, metrics={"port": port})
    home.set_control("queuelifetime", "2\n")
    queue = home.instance.queue()
    born = time.time() - 60  # past its whole retry life at its first attempt
    for recipient in ("full@far.example", "flaky@far.example"):
        queue.inject(Envelope("old@shop.example", (recipient,), born), b"Subject: old\r\n\r\nx\r\n")
    with RecordingSink("127.0.0.93", behaviour=Behaviour(rcpt_reply=_answer)) as sink:
        home.routes(f":[127.0.0.93]:{sink.port}")
        home.start_engine()
        home.inject("gone@far.example", sender="a@shop.example")
        wait_for(lambda: len(_results(home, "gone@far.example")) == 1)
        assert "gone@far.example" not in _listed(home)  # one hard bounce is not enough
        home.inject("gone@far.example", sender="a@shop.example")
        wait_for(lambda: "gone@far.example" in _in_force(SuppressionStore(_file(home))))
        listed = _listed(home)
        assert listed["gone@far.example"]["reason"] == "hard_bounces"
        assert "user unknown" in listed["gone@far.example"]["detail"]
        assert listed["full@far.example"]["reason"] == "expired"  # the mailbox's fault
        assert "flaky@far.example" not in listed  # a connection error is ours: never counted
        assert [result for result, _ in _results(home, "flaky@far.example")] == ["failed"]
        # New mail to it: not attempted, bounced at once; the others get theirs.
        home.inject("gone@far.example", "ok@far.example", sender="c@shop.example")
        wait_for(lambda: ("suppressed", "suppressed") in _results(home, "gone@far.example"))
        wait_for(lambda: any(m.recipients == ("c@shop.example",) for m in sink.received()))
        [report] = [m for m in sink.received() if m.recipients == ("c@shop.example",)]
        assert b"suppressed after hard bounces" in report.content
        assert b"Status: 5.1.1" in report.content
        assert ("ok@far.example",) in [m.recipients for m in sink.received()]
        assert len(_results(home, "gone@far.example")) == 3
        # Off the list by hand: tried again (and refused again by the sink).
        removed = _cli(home, "remove", "gone@far.example")
        assert removed.returncode == 0 and "gone@far.example" in removed.stdout
        wait_for(lambda: _metric(port, "sendworx_suppression_list_addresses") == 1.0)
        home.inject("gone@far.example", sender="d@shop.example")
        wait_for(lambda: len(_results(home, "gone@far.example")) == 4)
        assert _results(home, "gone@far.example")[-1][0] == "failed"
        assert _results(home, "gone@far.example")[-1][1].startswith("127.0.0.93")
        wait_for(lambda: _suppressed_events(home) != [])
    events = _suppressed_events(home)
    assert [event["recipient"] for event in events] == ["gone@far.example"]
    assert events[0]["status"] == "5.1.1" and "suppressed" in events[0]["reply"]


def _suppressed_events(home: SendworxHome) -> list[dict[str, Any]]:
    done = subprocess.run(
        home.command("history", "--json", "--event", "suppressed"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    events: list[dict[str, Any]] = json.loads(done.stdout)["events"]
    return events


def test_in_hold_mode_the_mail_waits_and_a_delivery_takes_the_address_off(
    home: SendworxHome,
) -> None:
    home.write_config(suppression={"mode": "hold"})
    added = _cli(home, "add", "back@far.example", "--note", "asked to stop", "--days", "7")
    assert added.returncode == 0, added.stderr
    entry = _listed(home)["back@far.example"]
    assert entry["reason"] == "operator" and entry["detail"] == "asked to stop"
    assert 7 * 86400 - 60 < entry["until"] - entry["since"] <= 7 * 86400
    with RecordingSink("127.0.0.94") as sink:
        home.routes(f":[127.0.0.94]:{sink.port}")
        home.start_engine()
        home.inject("back@far.example", sender="a@shop.example")
        wait_for(lambda: len(home.queue_files("state")) == 1)
        [message_id] = home.queue_files("state")
        wait_for(lambda: home.state(message_id).get("held_by") == "suppressed")
        assert home.state(message_id)["held"] is True and sink.received() == []
        released = subprocess.run(
            home.command("queue", "release", message_id), capture_output=True, timeout=60
        )
        assert released.returncode == 0, released.stderr
        sink.wait_for_messages(1)
        wait_for(lambda: "back@far.example" not in _in_force(SuppressionStore(_file(home))))


def test_with_the_policys_redis_every_node_shares_one_list(
    home: SendworxHome, tmp_path: Path, dns_server: DNSServer, redis_server: RedisServer
) -> None:
    other = SendworxHome(tmp_path / "other", dns_port=dns_server.port)
    try:
        for node in (home, other):
            node.instance.policy_path.write_text(f'redis_url = "{redis_server.url}"\n')
        with RecordingSink("127.0.0.96", behaviour=Behaviour(rcpt_reply=_answer)) as sink:
            for node in (home, other):
                node.routes(f":[127.0.0.96]:{sink.port}")
            home.start_engine()
            home.inject("gone@far.example", sender="a@shop.example")
            wait_for(lambda: len(_results(home, "gone@far.example")) == 1)
            home.inject("gone@far.example", sender="a@shop.example")
            # Learnt on one node, listed on the other (its CLI reads the same Redis).
            shared = RedisSuppressionStore(redis_server.url)
            wait_for(lambda: "gone@far.example" in _in_force(shared))
            assert "gone@far.example" in _listed(other)  # the CLI of another node reads it
            assert not home.instance.suppression_path.exists()  # not the local file
            other.start_engine()
            other.inject("gone@far.example", sender="b@shop.example")
            wait_for(lambda: ("suppressed", "suppressed") in _results(other, "gone@far.example"))
            assert _results(other, "gone@far.example") == [("suppressed", "suppressed")]
            removed = _cli(other, "remove", "gone@far.example")
            assert removed.returncode == 0, removed.stderr
            assert _listed(home) == {}
    finally:
        other.close()
