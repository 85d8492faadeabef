"""What an operator touches: `sendworx queue`, control files with garbage, broken queue
files, a broken config file — nothing crashes and no mail is lost."""

from __future__ import annotations

import json
import os
import subprocess
import time

from support.instance import SendworxHome
from support.net import wait_for
from support.sink import RecordingSink


def _queue(home: SendworxHome, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        home.command("queue", *arguments), capture_output=True, text=True, timeout=30
    )


def test_queue_stat_list_show_and_delete(home: SendworxHome) -> None:
    home.enqueue("a@far.test", "b@far.test", sender="robot@origin.test")
    home.enqueue("c@far.test")
    stat = json.loads(_queue(home, "stat", "--json").stdout)
    assert (stat["messages"], stat["engine_pid"]) == (2, None)
    rows = json.loads(_queue(home, "list", "--json").stdout)
    assert [row["recipients"] for row in rows] == [2, 1]
    first = rows[0]["id"]
    shown = json.loads(_queue(home, "show", first, "--json").stdout)
    assert shown["sender"] == "robot@origin.test"
    assert shown["pending"] == ["a@far.test", "b@far.test"]
    text = _queue(home, "list").stdout
    assert "2/2 pending" in text and "<robot@origin.test>" in text
    deleted = _queue(home, "delete", first)
    assert deleted.returncode == 0 and "deleted" in deleted.stdout
    assert json.loads(_queue(home, "stat", "--json").stdout)["messages"] == 1


def test_queue_show_and_delete_refuse_unknown_or_hostile_ids(home: SendworxHome) -> None:
    for hostile in ("../../sendworx.toml", "0" * 20, "x;rm -rf /"):
        assert _queue(home, "show", hostile).returncode == 1
        assert _queue(home, "delete", hostile).returncode == 1
    assert (home.home / "sendworx.toml").exists()


def test_queue_show_reports_deferral_details(home: SendworxHome) -> None:
    home.routes("down.test:[127.0.0.100]:9")
    home.start_engine()
    home.inject("u@down.test")
    home.wait_for_delivery_lines(1)
    [row] = json.loads(_queue(home, "list", "--json").stdout)
    assert row["attempts"] == 1
    assert row["next_attempt_at"] > time.time() + 300
    assert "refused" in row["last_errors"]["u@down.test"]


def test_garbage_control_files_fall_back_to_defaults_and_say_so(home: SendworxHome) -> None:
    home.set_control("concurrencyremote", "lots\n")
    home.set_control("timeoutremote", "-5\n")
    (home.home / "control" / "queuelifetime").write_bytes(b"\xff\xfe\x00garbage")
    home.set_control("timeoutconnect", "99999999999999999999\n")
    with RecordingSink("127.0.0.101") as sink:
        home.routes("this is not a route", f":[127.0.0.101]:{sink.port}", "bad:host:99999")
        home.start_engine()
        settings = home.status()["settings"]
        assert settings == {
            "concurrency_remote": 255,
            "timeout_remote": 600,
            "timeout_connect": 60,
            "queue_lifetime": 604800,
            "smtp_routes": [f":[127.0.0.101]:{sink.port}"],
        }
        home.inject("u@anywhere.test")
        sink.wait_for_messages(1)
    log = home.log_text()
    assert "concurrencyremote holds 'lots'" in log
    assert "timeoutremote holds '-5'" in log
    assert "queuelifetime unreadable" in log
    assert "smtproutes line 1 skipped" in log and "smtproutes line 3 skipped" in log


def test_control_files_missing_entirely_mean_defaults(home: SendworxHome) -> None:
    home.start_engine()
    assert home.status()["settings"]["concurrency_remote"] == 255
    assert home.status()["settings"]["smtp_routes"] == []


def test_corrupt_queue_file_is_quarantined_and_the_rest_delivered(home: SendworxHome) -> None:
    home.enqueue("good@far.test")
    messages = home.home / "queue" / "mess"
    messages.mkdir(parents=True, exist_ok=True)
    (messages / "0000000000000000deadbeef00").write_bytes(b"not a queue file\n\x00\x01")
    with RecordingSink("127.0.0.102") as sink:
        home.routes(f":[127.0.0.102]:{sink.port}")
        home.start_engine()
        sink.wait_for_messages(1)
        wait_for(home.queue_empty)
    assert home.queue_files("corrupt") == ["0000000000000000deadbeef00"]
    assert "cannot be read" in home.log_text()


def test_unreadable_state_file_restarts_the_message_rather_than_dropping_it(
    home: SendworxHome,
) -> None:
    home.enqueue("u@far.test")
    [message_id] = home.queue_files("new")
    state_dir = home.home / "queue" / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / message_id).write_text("{not json")
    with RecordingSink("127.0.0.103") as sink:
        home.routes(f":[127.0.0.103]:{sink.port}")
        home.start_engine()
        sink.wait_for_messages(1)
        wait_for(home.queue_empty)
    assert "unreadable" in home.log_text()


def test_stale_temp_files_from_dead_injectors_are_cleaned_at_start(home: SendworxHome) -> None:
    temporary = home.home / "queue" / "tmp"
    temporary.mkdir(parents=True, exist_ok=True)
    stale, fresh = (
        temporary / "0000000000000000aaaaaaaaaa",
        temporary / "0000000000000000bbbbbbbbbb",
    )
    stale.write_bytes(b"half a message")
    fresh.write_bytes(b"being written right now")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    home.start_engine()
    assert home.queue_files("tmp") == [fresh.name]


def test_broken_config_file_is_refused_with_a_clear_message(home: SendworxHome) -> None:
    (home.home / "sendworx.toml").write_text('[delivery]\nremote_port = "twenty-five"\nbogus = 1\n')
    result = subprocess.run(home.command("send"), capture_output=True, text=True, timeout=30)
    assert result.returncode == 78
    assert "delivery.remote_port" in result.stderr and "delivery.bogus" in result.stderr
    assert "Traceback" not in result.stderr
    (home.home / "sendworx.toml").write_text("[delivery\n")
    result = subprocess.run(home.command("send"), capture_output=True, text=True, timeout=30)
    assert result.returncode == 78 and "not valid TOML" in result.stderr
