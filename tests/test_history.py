"""The delivery history against a real engine and SMTP server: every event recorded and
searchable; a kill -9 loses nothing older than the flush interval; a store that cannot be
written never stops mail, and recovers by itself; hostile searches get clear errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from typing import Any

from support.instance import SendworxHome
from support.net import free_port, wait_for
from support.sink import Behaviour, RecordingSink

from sendworx.shared.history import HistoryError, HistoryEvent, HistoryFilter, HistoryReader


def _history(home: SendworxHome, *arguments: str) -> Any:
    done = subprocess.run(
        home.command("history", "--json", *arguments), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _events(home: SendworxHome, *arguments: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = _history(home, *arguments)["events"]
    return events


def _stored(home: SendworxHome, selection: HistoryFilter) -> list[HistoryEvent]:
    """A search of the store in this process: what `listEvents` runs, without a command's
    start-up for each question (the CLI is asked where its own output matters). Nothing
    while there is no store to read yet (the engine writes it within a flush interval)."""
    try:
        return HistoryReader(home.instance.history_path).search(selection, 1, 500)[0]
    except HistoryError:
        return []


def _answer(recipient: str) -> str | None:
    if recipient.startswith("gone@"):
        return "550 5.1.1 <gone@far.example>: user unknown"
    if recipient.startswith("busy@"):
        return "451 4.7.28 rate limit exceeded, try later"
    return None


def test_every_event_is_recorded_and_found_by_each_filter(home: SendworxHome) -> None:
    home.write_config(history={"flush_seconds": 0.1, "json_lines_file": "history.jsonl"})
    with RecordingSink("127.0.0.90", behaviour=Behaviour(rcpt_reply=_answer)) as sink:
        home.routes(f":[127.0.0.90]:{sink.port}")
        home.start_engine()
        home.inject("ok@far.example", "gone@far.example", sender="a@shop.example")
        home.inject("busy@far.example", sender="b@shop.example")
        home.wait_for_delivery_lines(3)
        wait_for(lambda: len(_stored(home, HistoryFilter(sender="shop.example"))) == 6)
    [queue_id] = {event["queue_id"] for event in _events(home, "--sender", "a@shop.example")}
    story = _history(home, queue_id)["events"]
    kinds = [(event["event"], event["recipient"]) for event in story]
    assert kinds[0] == ("accepted", "")
    assert sorted(kinds[1:]) == [
        ("bounced", ""),
        ("delivered", "ok@far.example"),
        ("failed", "gone@far.example"),
    ]
    deferred = _events(home, "--sender", "b@shop.example")
    assert [event["event"] for event in deferred] == ["deferred", "accepted"]  # newest first
    assert deferred[0]["status"] == "4.7.28" and deferred[0]["queued_seconds"] >= 0
    assert deferred[0]["bounce_class"] == "rate_limited"
    accepted = story[0]
    assert accepted["sender"] == "a@shop.example" and accepted["origin"] == "sendmail"
    assert accepted["size"] > 0 and accepted["message_id_header"].endswith("@t")
    failed = next(event for event in story if event["event"] == "failed")
    assert failed["status"] == "5.1.1" and "user unknown" in failed["reply"]
    assert failed["bounce_class"] == "invalid_recipient"
    assert failed["relay"].startswith("127.0.0.90") and failed["attempt"] == 1
    bounced = next(event for event in story if event["event"] == "bounced")
    assert bounced["detail"].startswith("bounce report ")  # names the DSN's queue id
    # Each filter finds it; others do not.
    for selection in (  # the store's searches, as the API and the CLI run them
        HistoryFilter(recipient="gone@far.example"),
        HistoryFilter(recipient="far.example"),
        HistoryFilter(message_id=f"<{accepted['message_id_header']}>"),
        HistoryFilter(event="failed"),
        HistoryFilter(bounce_class="invalid_recipient"),
        HistoryFilter(sender="@shop.example"),
    ):
        assert queue_id in {event.queue_id for event in _stored(home, selection)}, selection
    assert _stored(home, HistoryFilter(recipient="nobody@far.example")) == []
    assert [e.event for e in _stored(home, HistoryFilter(recipient="ok@far.example"))] == [
        "delivered"
    ]
    # The same events as lines of JSON, for log shippers.
    everything = _events(home, "--per-page", "500")
    lines = (home.home / "history.jsonl").read_text().splitlines()
    shipped = [json.loads(line) for line in lines]
    assert sorted(json.dumps({**e, "time": ""}, sort_keys=True) for e in shipped) == sorted(
        json.dumps({**e, "time": ""}, sort_keys=True) for e in everything
    )
    for event in shipped:
        assert event["time"].startswith(
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(event["at"]))
        )


def test_mail_held_and_deleted_before_any_attempt_was_accepted_first(home: SendworxHome) -> None:
    home.write_config(history={"flush_seconds": 0.1})
    with RecordingSink("127.0.0.95") as sink:
        home.routes(f":[127.0.0.95]:{sink.port}")
        home.start_engine()
        held = subprocess.run(
            home.command("holds", "add", "sender:spam@shop.example", "--reason", "test"),
            capture_output=True,
            timeout=60,
        )
        assert held.returncode == 0, held.stderr
        home.inject("x@far.example", sender="spam@shop.example")
        wait_for(lambda: _stored(home, HistoryFilter(event="held")) != [])
        [queue_id] = {event["queue_id"] for event in _events(home, "--event", "held")}
        deleted = subprocess.run(
            home.command("queue", "delete", queue_id), capture_output=True, timeout=60
        )
        assert deleted.returncode == 0, deleted.stderr
        wait_for(lambda: len(_stored(home, HistoryFilter(queue_id=queue_id))) == 3)
        assert sink.received() == []
    story = _history(home, queue_id)["events"]
    assert [event["event"] for event in story] == ["accepted", "held", "deleted"]
    assert story[0]["sender"] == "spam@shop.example" and story[0]["origin"] == "sendmail"
    assert story[1]["detail"] == "sender:spam@shop.example"  # the sender hold it is for
    assert story[2]["detail"].startswith("by local operator")  # who deleted it: the CLI
    assert story[0]["at"] <= story[1]["at"] <= story[2]["at"]


def test_a_kill_9_loses_nothing_older_than_the_flush_interval(home: SendworxHome) -> None:
    home.write_config(history={"flush_seconds": 0.2})
    with RecordingSink("127.0.0.91") as sink:
        home.routes(f":[127.0.0.91]:{sink.port}")
        engine = home.start_engine()
        home.enqueue("u@far.example", copies=40)
        sink.wait_for_messages(40, timeout=30)
        home.wait_for_delivery_lines(40)
        time.sleep(0.6)  # three flush intervals
        os.kill(engine.pid, signal.SIGKILL)
        engine.wait(10)
    delivered = _events(home, "--event", "delivered", "--per-page", "500")
    assert len(delivered) == len(sink.received()) == 40


def test_a_store_that_cannot_be_written_never_stops_mail_and_recovers(
    home: SendworxHome,
) -> None:
    port = free_port()
    home.write_config(history={"flush_seconds": 0.1}, metrics={"port": port})
    store = home.instance.history_path
    store.parent.mkdir(parents=True)
    store.write_bytes(b"this is not a database\n" * 100)
    with RecordingSink("127.0.0.92") as sink:
        home.routes(f":[127.0.0.92]:{sink.port}")
        home.start_engine()
        home.inject("a@far.example", sender="early@shop.example")
        home.inject("b@far.example", sender="early@shop.example")
        sink.wait_for_messages(2)

        def dropped() -> float:
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as page:
                for line in page.read().decode().splitlines():
                    if line.startswith("sendworx_history_dropped_events_total "):
                        return float(line.split()[1])
            return 0.0

        wait_for(lambda: dropped() >= 4)  # accepted and delivered, twice
        wait_for(lambda: "delivery history not written" in home.log_text())  # after the count
        store.unlink()  # the operator moves the damaged file away: recorded again
        home.inject("c@far.example", sender="late@shop.example")
        sink.wait_for_messages(3)
        wait_for(lambda: len(_stored(home, HistoryFilter(sender="late@shop.example"))) == 2)
    assert _events(home, "--sender", "early@shop.example") == []


def test_a_full_disk_under_the_store_never_stops_mail_and_recovers(home: SendworxHome) -> None:
    """The history on a filesystem of its own (a 512 kB tmpfs, as root may mount) that fills
    up: mail goes on, the events are counted as dropped, and once space is freed the store
    records again by itself."""
    port = free_port()
    home.write_config(history={"flush_seconds": 0.1}, metrics={"port": port})
    store = home.instance.history_path
    store.parent.mkdir(parents=True)
    mount = ["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", str(store.parent)]
    subprocess.run(mount, check=True, capture_output=True)
    try:
        with RecordingSink("127.0.0.97") as sink:
            home.routes(f":[127.0.0.97]:{sink.port}")
            home.start_engine()
            home.inject("a@far.example", sender="first@shop.example")
            wait_for(lambda: len(_stored(home, HistoryFilter(sender="first@shop.example"))) == 2)
            filler = store.parent / "filler"
            with open(filler, "wb") as out:  # the disk fills up
                try:
                    while True:
                        out.write(b"\0" * 65536)
                        out.flush()
                except OSError:
                    pass
            for number in range(5):
                home.inject(f"b{number}@far.example", sender="full@shop.example")
            sink.wait_for_messages(6)  # every message delivered all the same
            wait_for(lambda: _scrape(port, "sendworx_history_dropped_events_total") >= 1)
            wait_for(lambda: "delivery history not written" in home.log_text())
            filler.unlink()  # space again: recorded again, with nobody's help
            home.inject("c@far.example", sender="late@shop.example")
            sink.wait_for_messages(7)
            wait_for(lambda: len(_stored(home, HistoryFilter(sender="late@shop.example"))) == 2)
    finally:
        home.close()  # the engine lets go of the store before it is unmounted
        subprocess.run(["umount", str(store.parent)], check=True, capture_output=True)


def _scrape(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        for line in page.read().decode().splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
    return 0.0


def test_hostile_searches_get_clear_errors_and_match_nothing(home: SendworxHome) -> None:
    home.write_config(history={"flush_seconds": 0.1})
    with RecordingSink("127.0.0.93") as sink:
        home.routes(f":[127.0.0.93]:{sink.port}")
        home.start_engine()
        home.inject("a@far.example")
        sink.wait_for_messages(1)
        wait_for(lambda: len(_stored(home, HistoryFilter())) == 2)
    for value in ("%", "*", "a@far.example' OR '1'='1", '"; DROP TABLE events; --'):
        assert _events(home, "--recipient", value) == [], value
    assert len(_events(home)) == 2
    for arguments, field in (
        (("--recipient", "x" * 100_000), "recipient"),
        (("--sender", "a\x01b"), "sender"),
        (("--per-page", "100000"), "per_page"),
        (("not-a-queue-id!",), "queue_id"),
    ):
        done = subprocess.run(
            home.command("history", *arguments), capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 1, arguments
        assert f"{field}: " in done.stderr, done.stderr
