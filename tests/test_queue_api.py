"""/nodeworx/mail/queue against real processes: mail queued through smtpd and sendmail waits at
sinks that defer (Postfix's smtp-sink with its fault options, aiosmtpd), and every action is
checked in the queue files and at the sinks, over XML-RPC and the JSON API."""

from __future__ import annotations

import json
import os
import pwd
import smtplib
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.cluster import one_node_cluster
from support.dns_server import DNSServer
from support.instance import SendworxHome
from support.net import free_port, wait_for
from support.panel import Panel
from support.postfix_sink import PostfixSink
from support.sink import Behaviour, RecordingSink

from sendworx.shared.queue_actions import QueueAction, apply_to_files
from sendworx.shared.queue_format import Envelope

QUEUE = "/nodeworx/mail/queue"
GREYLISTED = "451 4.7.1 greylisted, try again later"


def _queue(panel: Panel, action: str, data: object = None) -> Any:
    reply = panel.call(action, data, controller=QUEUE)
    assert reply["status"] == 0, reply
    return reply["payload"]


def _json(panel: Panel, action: str, body: object) -> httpx.Response:
    return httpx.post(
        f"https://127.0.0.1:{panel.https_port}/api/v1{QUEUE}/{action}",
        json=body,
        headers={"Authorization": "Bearer " + " ".join(panel.key.split())},
        verify=ssl.create_default_context(cafile=panel.ca),
        timeout=60,
    )


def _smtp(home: SendworxHome, sender: str, *recipients: str) -> None:
    with smtplib.SMTP("127.0.0.1", home.smtpd_port, timeout=10) as client:
        client.sendmail(sender, list(recipients), f"Subject: from {sender}\r\n\r\nhi\r\n")


def _ids(payload: dict[str, Any]) -> list[str]:
    return [message["id"] for message in payload["messages"]]


def _state(home: SendworxHome, message_id: str) -> dict[str, Any]:
    path = home.home / "queue" / "state" / message_id
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.fixture
def stuck(panel: Panel) -> Iterator[tuple[Panel, RecordingSink]]:
    """Mail for grey.test waits at a greylisting sink; mail for fine.test would go through."""
    home = panel.home
    with RecordingSink("127.0.4.1", behaviour=Behaviour(refuse_rcpt=GREYLISTED)) as sink:
        home.routes(f"grey.test:[127.0.4.1]:{sink.port}", f"fine.test:[127.0.4.1]:{sink.port}")
        yield panel, sink


def test_listing_filters_and_pages_what_smtpd_and_sendmail_queued(
    stuck: tuple[Panel, RecordingSink],
) -> None:
    panel, _ = stuck
    home = panel.home
    home.start_smtpd()
    for number in range(6):
        _smtp(home, f"shop{number}@shop.test", f"buyer{number}@grey.test")
    home.inject("boss@grey.test", "clerk@fine.test", sender="news@letters.test")
    assert panel.call("start")["status"] == 0
    home.wait_for_delivery_lines(8)  # every recipient tried once: 7 deferred, 1 to fine.test
    everything = _queue(panel, "listMessages")
    assert everything["total"] == 7 and everything["next_cursor"] == ""
    shop = _queue(panel, "listMessages", {"sender": "shop.test"})
    assert shop["total"] == 6
    assert {m["sender"] for m in shop["messages"]} == {f"shop{n}@shop.test" for n in range(6)}
    first = shop["messages"][0]
    assert first["state"] == "deferred" and first["attempts"] == 1
    assert first["last_reply"] == GREYLISTED and first["last_host"].startswith("127.0.4.1[")
    [recipient] = first["recipients"]
    assert recipient["state"] == "pending" and recipient["last_reply"] == GREYLISTED
    news = _queue(panel, "listMessages", {"sender": "news@letters.test"})["messages"]
    assert [(r["address"], r["state"]) for r in news[0]["recipients"]] == [
        ("boss@grey.test", "pending"),
        ("clerk@fine.test", "pending"),  # the sink greylists fine.test too
    ]
    assert _queue(panel, "listMessages", {"recipient": "buyer3@grey.test"})["total"] == 1
    assert _queue(panel, "listMessages", {"recipient": "@fine.test"})["total"] == 1
    assert _queue(panel, "listMessages", {"reply": "greylisted"})["total"] == 7
    assert _queue(panel, "listMessages", {"reply": "no such text"})["total"] == 0
    assert _queue(panel, "listMessages", {"kind": "bounce"})["total"] == 0
    assert _queue(panel, "listMessages", {"younger_than": 3600})["total"] == 7
    assert _queue(panel, "listMessages", {"older_than": 3600})["total"] == 0
    destination = _queue(panel, "querySummary")["destinations"][0]["destination"]
    assert _queue(panel, "listMessages", {"destination": destination})["total"] == 7
    # Pages of 3 with a cursor cover every message once.
    seen: list[str] = []
    cursor = ""
    while True:
        page = _queue(panel, "listMessages", {"page_size": 3, "cursor": cursor})
        seen += _ids(page)
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(_ids(everything)) and len(seen) == 7
    # The JSON API answers the same.
    response = _json(panel, "listMessages", {"sender": "shop.test", "page_size": 2})
    assert response.status_code == 200 and response.json()["payload"]["total"] == 6
    # The engine's activity: eight recipients deferred this minute, each with its reply.
    activity = _queue(panel, "queryActivity", {"minutes": 5})
    assert activity["running"] and activity["since"] > time.time() - 120
    assert len(activity["minutes"]) == 5
    assert sum(minute["deferred"] for minute in activity["minutes"]) == 8
    assert len(activity["latest"]) == 8
    assert {attempt["reply"] for attempt in activity["latest"]} == {GREYLISTED}
    assert panel.call("stop")["status"] == 0
    assert _queue(panel, "queryActivity")["running"] is False


def test_the_summary_shows_where_mail_waits_and_why(stuck: tuple[Panel, RecordingSink]) -> None:
    panel, _ = stuck
    home = panel.home
    for number in range(4):
        home.inject(f"u{number}@grey.test", sender=f"a{number}@big.test")
    home.inject("v@grey.test", sender="b@small.test")
    assert panel.call("start")["status"] == 0
    home.wait_for_delivery_lines(5)
    [oldest] = _queue(panel, "listMessages", {"page_size": 1})["messages"]
    _queue(panel, "hold", {"ids": [oldest["id"]]})
    summary = _queue(panel, "querySummary")
    assert summary["totals"] == {
        "messages": 5,
        "bytes": summary["totals"]["bytes"],
        "oldest_age": summary["totals"]["oldest_age"],
        "new": 0,
        "active": 0,
        "deferred": 4,
        "held": 1,
    }
    [destination] = summary["destinations"]
    assert (destination["messages"], destination["recipients"]) == (5, 5)
    assert (destination["top_reply"], destination["top_reply_count"]) == (GREYLISTED, 5)
    assert [(d["domain"], d["messages"]) for d in summary["sender_domains"]] == [
        ("big.test", 4),
        ("small.test", 1),
    ]


def test_a_message_from_smtpd_names_the_client_it_came_from(
    stuck: tuple[Panel, RecordingSink],
) -> None:
    panel, _ = stuck
    home = panel.home
    home.start_smtpd()
    _smtp(home, "shop@shop.test", "buyer@grey.test")
    [message_id] = home.queue_files("new") or home.queue_files()
    shown = _queue(panel, "queryMessage", {"id": message_id})
    # A client on loopback is also the local account the kernel says runs it.
    me = {"uid": os.getuid(), "account": pwd.getpwuid(os.getuid()).pw_name}
    assert shown["origin"] == {"via": "smtpd", "peer": "127.0.0.1", **me}


def test_one_message_in_full_with_its_history_and_the_body_on_request(
    stuck: tuple[Panel, RecordingSink],
) -> None:
    panel, _ = stuck
    home = panel.home
    home.inject("u@grey.test", sender="a@origin.test", body="x" * 70_000)
    assert panel.call("start")["status"] == 0
    home.wait_for_delivery_lines(1)
    [message_id] = home.queue_files()
    shown = _queue(panel, "queryMessage", {"id": message_id})
    assert shown["sender"] == "a@origin.test" and shown["pending"] == ["u@grey.test"]
    assert ["Subject", "test"] in shown["headers"] and "body" not in shown
    account = pwd.getpwuid(os.getuid()).pw_name
    assert shown["origin"] == {"via": "sendmail", "uid": os.getuid(), "account": account}
    [received] = [value for name, value in shown["headers"] if name == "Received"]
    assert received.startswith(f"by sendworx.test (sendworx, from userid {os.getuid()})")
    [attempt] = shown["history"]
    assert attempt["results"][0]["reply"] == GREYLISTED
    assert attempt["results"][0]["host"].startswith("127.0.4.1[")
    assert shown["next_attempt_at"] > time.time() + 300
    with_body = _queue(panel, "queryMessage", {"id": message_id, "body": 1})
    assert len(with_body["body"]) == 64 * 1024 and with_body["body_truncated"] is True


@pytest.mark.parametrize("engine_running", [True, False])
def test_hold_and_release_with_and_without_the_engine(
    stuck: tuple[Panel, RecordingSink], engine_running: bool
) -> None:
    panel, sink = stuck
    home = panel.home
    for number in range(3):
        home.inject(f"u{number}@grey.test")
    if engine_running:
        assert panel.call("start")["status"] == 0
        home.wait_for_delivery_lines(3)
    ids = sorted(_ids(_queue(panel, "listMessages")))
    held = _queue(panel, "hold", {"ids": [*ids[:2], "0000000000000000deadbeef00"]})
    assert held == {"touched": 2, "in_flight": [], "missing": ["0000000000000000deadbeef00"]}
    assert all(_state(home, message_id)["held"] for message_id in ids[:2])
    sink.behaviour.refuse_rcpt = None
    if engine_running:
        assert _queue(panel, "retry", {"ids": ids})["touched"] == 1  # held ones are not retried
    else:
        assert panel.call("start")["status"] == 0
    [delivered] = sink.wait_for_messages(1)
    time.sleep(1.0)  # held mail is never attempted, however long it waits
    assert len(sink.received()) == 1 and delivered.recipients == ("u2@grey.test",)
    assert _queue(panel, "querySummary")["totals"]["held"] == 2
    released = _queue(panel, "release", {"state": "held"})
    assert released["touched"] == 2
    sink.wait_for_messages(3)
    wait_for(home.queue_empty)


def test_expire_bounces_and_delete_does_not(stuck: tuple[Panel, RecordingSink]) -> None:
    panel, sink = stuck
    home = panel.home
    with RecordingSink("127.0.4.2") as origin:
        home.routes(f"grey.test:[127.0.4.1]:{sink.port}", f"origin.test:[127.0.4.2]:{origin.port}")
        home.inject("u@grey.test", sender="author@origin.test")
        home.inject("v@grey.test", sender="writer@origin.test")
        assert panel.call("start")["status"] == 0
        home.wait_for_delivery_lines(2)
        expired = _queue(panel, "expire", {"sender": "author@origin.test"})
        deleted = _queue(panel, "delete", {"sender": "writer@origin.test"})
        assert expired["touched"] == 1 and deleted["touched"] == 1
        [bounce] = origin.wait_for_messages(1)
        wait_for(home.queue_empty)
    assert bounce.recipients == ("author@origin.test",)
    assert "message expired by the mail administrator" in bounce.content.decode()
    assert sink.received() == []


def test_purge_needs_confirmation_and_then_takes_all_that_matches(
    stuck: tuple[Panel, RecordingSink],
) -> None:
    panel, _ = stuck
    home = panel.home
    for number in range(5):
        home.inject(f"u{number}@grey.test", sender="spam@hacked.test")
    home.inject("keep@grey.test", sender="good@shop.test")
    refused = panel.call("purge", {"sender": "hacked.test"}, controller=QUEUE)
    assert refused["status"] == 11 and refused["payload"].split("\n")[1].startswith("confirm:")
    everything = panel.call("delete", {}, controller=QUEUE)
    assert everything["status"] == 11 and "ids: give message ids" in everything["payload"]
    assert len(home.queue_files("new")) == 6
    purged = _queue(panel, "purge", {"sender": "hacked.test", "confirm": 1})
    assert purged["touched"] == 5
    assert len(home.queue_files("new")) + len(home.queue_files("mess")) == 1


def test_actions_on_a_message_in_flight_wait_for_its_attempt(panel: Panel) -> None:
    home = panel.home
    with RecordingSink("127.0.4.3", behaviour=Behaviour(data_delay=1.5)) as slow:
        home.routes(f":[127.0.4.3]:{slow.port}")
        home.inject("u@slow.test")
        assert panel.call("start")["status"] == 0
        wait_for(lambda: slow.stats.open_now == 1)
        [message_id] = _ids(_queue(panel, "listMessages", {"state": "active"}))
        answer = _queue(panel, "delete", {"ids": [message_id]})
        assert answer["touched"] == 0 and answer["in_flight"] == [message_id]
        assert "takes effect when that attempt ends" in answer["note"]
        slow.wait_for_messages(1)  # the attempt under way was not cut
        wait_for(home.queue_empty)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"ids": ["../../sendworx.toml"]}, "ids"),
        ({"ids": ["0" * 20 + "/.."]}, "ids"),
        ({"ids": "0000000000000000aaaa\x00bb"}, "ids"),
        ({"ids": [f"{n:020x}" for n in range(10_000)]}, "ids"),
        ({"ids": 5}, "ids"),
        ({"sender": "x" * 400}, "sender"),
        ({"reply": "\x1b[2J"}, "reply"),
        ({"state": "exploded"}, "state"),
        ({"older_than": -1}, "older_than"),
    ],
)
def test_hostile_inputs_are_status_11_and_touch_nothing(
    shared_panel: Panel, data: dict[str, Any], field: str
) -> None:
    """Over the JSON API, which can carry what XML cannot (NUL, ESC)."""
    home = shared_panel.home
    home.inject("u@grey.test")
    before = home.queue_files("new")
    response = _json(shared_panel, "hold", data)
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["field"] == field
    assert home.queue_files("new") == before and home.queue_files("state") == []


def test_bad_paging_is_status_11(shared_panel: Panel) -> None:
    for data, field in (
        ({"page_size": 10**9}, "page_size"),
        ({"page_size": 0}, "page_size"),
        ({"cursor": "not a cursor"}, "cursor"),
    ):
        reply = shared_panel.call("listMessages", data, controller=QUEUE)
        assert reply["status"] == 11 and reply["payload"].split("\n")[1].startswith(field)


def test_a_cursor_from_another_queue_is_refused(panel: Panel, tmp_path: Path) -> None:
    other = SendworxHome(tmp_path / "other", dns_port=1)
    other_panel = Panel(other).start()
    try:
        for number in range(3):
            other.inject(f"u{number}@grey.test")
        cursor = other_panel.call("listMessages", {"page_size": 1}, controller=QUEUE)
        reply = panel.call(
            "listMessages", {"cursor": cursor["payload"]["next_cursor"]}, controller=QUEUE
        )
        assert reply["status"] == 11 and "belongs to another queue" in reply["payload"]
    finally:
        other_panel.close()


def test_a_kill_9_during_a_bulk_hold_loses_nothing_and_the_hold_completes(
    stuck: tuple[Panel, RecordingSink],
) -> None:
    """The engine dies while it writes a bulk hold: every state file is whole (old or new),
    the command finishes the hold on the files once the engine is gone, and after a restart no
    held message goes out and none is lost."""
    panel, sink = stuck
    home = panel.home
    home.enqueue("u@grey.test", copies=1500)
    assert panel.call("start")["status"] == 0
    wait_for(lambda: not home.queue_files("new"), timeout=30)
    holding = subprocess.Popen(
        home.command("queue", "hold", "--recipient", "grey.test"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: len(home.queue_files("state")) > 100, timeout=30, interval=0.001)
    panel.kill_engine()
    _, err = holding.communicate(timeout=120)
    assert holding.returncode == 0, err
    states = [_state(home, message_id) for message_id in home.queue_files()]
    assert len(states) == 1500 and all(state.get("held") for state in states)
    sink.behaviour.refuse_rcpt = None
    assert panel.call("start")["status"] == 0
    assert not [name for name in os.listdir(home.home / "queue" / "state") if name[0] == "."]
    time.sleep(1.0)
    assert sink.received() == []
    assert _queue(panel, "release", {"recipient": "grey.test"})["touched"] == 1500
    sink.wait_for_messages(1500, timeout=90)
    wait_for(home.queue_empty, timeout=30)
    assert len(sink.received()) == 1500


def test_on_node_and_a_cluster_wide_summary(tmp_path: Path, dns_server: DNSServer) -> None:
    with one_node_cluster(tmp_path, dns_server.port) as (cluster, node, node_id):
        node.home.inject("u@grey.test", sender="a@origin.test")
        cluster.manager.home.inject("v@grey.test", sender="b@origin.test")
        listed = _queue(cluster.manager, "listMessagesOnNode", {"node_id": node_id})
        [message] = listed["messages"]
        assert message["sender"] == "a@origin.test"
        held = _queue(cluster.manager, "holdOnNode", {"node_id": node_id, "ids": [message["id"]]})
        assert held["touched"] == 1
        assert json.loads((node.home.home / "queue" / "state" / message["id"]).read_text())["held"]
        summaries = _queue(cluster.manager, "querySummary", {"cascade_to_nodes": 1})
        assert summaries[cluster.manager.home.instance.node_id]["payload"]["totals"]["new"] == 1
        assert summaries[node_id]["payload"]["totals"]["held"] == 1


def test_the_queue_command_has_the_same_verbs_with_the_panel_down(home: SendworxHome) -> None:
    with PostfixSink("127.0.4.5", None, "-r", "RCPT") as sink:
        home.routes(f"grey.test:[127.0.4.5]:{sink.port}")
        for number in range(4):
            home.inject(f"u{number}@grey.test", sender=f"s{number}@shop.test")
        engine = home.start_engine()
        home.wait_for_delivery_lines(4)

        def queue(*arguments: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                home.command("queue", *arguments), capture_output=True, text=True, timeout=60
            )

        listed = json.loads(queue("list", "--json", "--sender", "s1@shop.test").stdout)
        [row] = listed
        assert row["last_errors"]["u1@grey.test"].startswith("450")
        held = queue("hold", row["id"])
        assert held.returncode == 0 and "1 held" in held.stdout
        summary = json.loads(queue("summary", "--json").stdout)
        assert summary["totals"]["held"] == 1 and summary["totals"]["deferred"] == 3
        assert home.stop(engine) == 0
        released = queue("release", "--state", "held")
        assert released.returncode == 0 and "1 released" in released.stdout
        purge = queue("purge", "--sender", "shop.test")
        assert purge.returncode == 2 and "--yes" in purge.stderr
        purged = queue("purge", "--sender", "shop.test", "--yes")
        assert purged.returncode == 0 and "4 deleted" in purged.stdout
        assert home.queue_empty()


def test_every_action_answers_over_the_json_api(stuck: tuple[Panel, RecordingSink]) -> None:
    panel, _ = stuck
    home = panel.home
    for number in range(6):
        home.inject(f"u{number}@grey.test", sender=f"s{number}@origin.test")
    ids = sorted(home.queue_files("new"))
    for action, body, expected in (
        ("listMessages", {"page_size": 2}, {"messages", "total", "next_cursor"}),
        ("querySummary", {}, {"totals", "destinations", "sender_domains"}),
        ("queryMessage", {"id": ids[0]}, {"id", "sender", "headers", "history"}),
        ("retry", {"ids": ids[0]}, {"touched", "in_flight", "missing"}),
        ("hold", {"ids": [ids[1], ids[2]]}, {"touched", "in_flight", "missing"}),
        ("release", {"ids": f"{ids[1]},{ids[2]}"}, {"touched", "in_flight", "missing"}),
        ("expire", {"ids": [ids[3]]}, {"touched", "in_flight", "missing"}),
        ("delete", {"ids": [ids[4]]}, {"touched", "in_flight", "missing"}),
        ("purge", {"sender": "s5@origin.test", "confirm": 1}, {"touched"}),
    ):
        response = _json(panel, action, body)
        assert response.status_code == 200, (action, response.text)
        assert expected <= set(response.json()["payload"]), (action, response.json())
    assert not (home.home / "queue" / "new" / ids[4]).exists()
    assert not (home.home / "queue" / "new" / ids[5]).exists()
    assert _state(home, ids[3])["expire"] is True


def test_the_panel_serves_where_mail_waits_as_metrics(home: SendworxHome) -> None:
    port = free_port()
    home.write_config(metrics={"panel_port": port})
    queue = home.instance.queue()
    content = b"Subject: waiting\r\n\r\nx\r\n"
    queue.inject(
        Envelope("a@shop.test", ("x@grey.test", "y@grey.test"), time.time() - 600), content
    )
    queue.inject(Envelope("a@shop.test", ("z@fine.test",), time.time()), content)
    running = Panel(home).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
            text = page.read().decode()
    finally:
        running.close()
    values = {
        line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("sendworx_queue_")
    }
    assert values['sendworx_queue_pending_recipients{destination="grey.test"}'] == 2.0
    assert values['sendworx_queue_pending_recipients{destination="fine.test"}'] == 1.0
    assert 600 <= values['sendworx_queue_oldest_pending_seconds{destination="grey.test"}'] < 700
    assert values['sendworx_queue_oldest_pending_seconds{destination="fine.test"}'] < 100
    assert 600 <= values["sendworx_queue_oldest_message_seconds"] < 700


def test_the_index_outlives_the_panel_and_catches_up_with_what_changed_meanwhile(
    home: SendworxHome,
) -> None:
    """Kept on disk: a panel started again (after a stop, or a kill -9) answers from it and
    checks it against the files; a damaged one is built again. Never a message that is not
    in the queue, nor one hidden, once the check is done."""
    home.enqueue("a@far.test", sender="s@shop.test", copies=5)
    panel = Panel(home).start()
    index_file = home.instance.queue_index_path

    def listed() -> list[str]:
        return sorted(_ids(_queue(panel, "listMessages", {"page_size": 1000})))

    def truth() -> list[str]:
        return sorted({*home.queue_files("new"), *home.queue_files("mess")})

    def caught_up() -> bool:
        payload = _queue(panel, "listMessages", {"page_size": 1000})
        return payload["index"]["state"] == "current" and sorted(_ids(payload)) == truth()

    try:
        wait_for(caught_up, timeout=20)
        assert index_file.exists() and len(listed()) == 5
        for kill in (False, True):  # SIGTERM, then kill -9
            panel.close() if kill else panel.stop()
            # While the panel is down: two more queued, one delivered (gone), one held.
            home.enqueue("b@far.test", sender="late@other.test", copies=2)
            gone, held = truth()[:2]
            queue = home.instance.queue()
            queue.remove(gone)
            apply_to_files(queue, QueueAction.HOLD, [held], time.time())
            panel = Panel(home).start()
            wait_for(caught_up, timeout=20)
            assert gone not in listed()
            held_now = _queue(panel, "listMessages", {"state": "held"})
            assert held in _ids(held_now)
        panel.stop()
        index_file.write_bytes(b"\0" * 8192)  # damaged
        panel = Panel(home).start()
        wait_for(caught_up, timeout=20)
        summary = _queue(panel, "querySummary", {})
        assert summary["index"]["state"] == "current"
        assert summary["totals"]["messages"] == len(truth())
        assert "damaged" in home.stderr("panel"), home.stderr("panel")
    finally:
        panel.close()
