"""The engine as a process: connection caps, signals, graceful stop, pid lock, metrics."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support.dns_server import DNSServer
from support.instance import SendworxHome
from support.net import free_port, wait_for
from support.sink import Behaviour, RecordingSink

from sendworx.shared.pidfile import AlreadyRunning, PidFile, running_pid
from sendworx.shared.unix_sockets import short_path


def test_concurrency_remote_caps_connections_across_destinations(
    home: SendworxHome, dns_server: DNSServer, sink_port: int
) -> None:
    home.set_control("concurrencyremote", "3\n")
    dns_server.add("mx.many.test", "A", "127.0.0.80")
    for number in range(12):
        dns_server.add(f"d{number}.test", "MX", "10 mx.many.test.")
        home.enqueue(f"u@d{number}.test")
    with RecordingSink("127.0.0.80", sink_port, behaviour=Behaviour(data_delay=0.3)) as sink:
        home.start_engine()
        sink.wait_for_messages(12, timeout=30)
    assert sink.stats.most_open == 3


def test_destination_concurrency_keeps_one_destination_from_taking_every_connection(
    home: SendworxHome,
) -> None:
    home.write_config(delivery={"destination_concurrency": 2})
    home.enqueue("u@one.test", copies=8)
    with RecordingSink("127.0.0.81", behaviour=Behaviour(data_delay=0.3)) as sink:
        home.routes(f":[127.0.0.81]:{sink.port}")
        home.start_engine()
        sink.wait_for_messages(8, timeout=30)
    assert sink.stats.most_open == 2


def test_zero_concurrency_holds_mail_until_sighup_raises_it(home: SendworxHome) -> None:
    home.set_control("concurrencyremote", "0\n")
    with RecordingSink("127.0.0.82") as sink:
        home.routes(f":[127.0.0.82]:{sink.port}")
        engine = home.start_engine()
        home.inject("u@held.test")
        wait_for(lambda: home.status()["active"] == 1)
        time.sleep(0.5)
        assert sink.received() == []
        home.set_control("concurrencyremote", "5\n")
        engine.send_signal(signal.SIGHUP)
        sink.wait_for_messages(1)
    assert home.status()["concurrency_remote"] == 5


def test_sighup_applies_new_routes_to_queued_mail_without_losing_it(home: SendworxHome) -> None:
    with (
        RecordingSink("127.0.0.83", behaviour=Behaviour(rcpt_reply=lambda r: "451 busy")) as old,
        RecordingSink("127.0.0.84") as new,
    ):
        home.routes(f":[127.0.0.83]:{old.port}")
        engine = home.start_engine()
        home.inject("u@moved.test")
        home.wait_for_delivery_lines(1)
        home.routes(f":[127.0.0.84]:{new.port}")
        engine.send_signal(signal.SIGHUP)
        engine.send_signal(signal.SIGALRM)
        new.wait_for_messages(1)
    assert home.status()["settings"]["smtp_routes"] == [f":[127.0.0.84]:{new.port}"]


def test_a_reload_sent_while_the_engine_starts_reaches_it_and_does_not_kill_it(
    home: SendworxHome,
) -> None:
    """The panel signals whoever holds the engine's pid lock as soon as a setting changes; the
    engine holds it while it loads the queue, before its loop takes SIGHUP. (Seen in CI: a
    restart among concurrent updates failed, the new engine killed by the update's SIGHUP.)"""
    home.set_control("concurrencyremote", "0\n")
    home.enqueue("u@loading.test", copies=200)
    process = home.spawn("send")
    wait_for(lambda: running_pid(home.instance.engine_pid_file) is not None, interval=0.001)
    home.set_control("concurrencyremote", "7\n")
    process.send_signal(signal.SIGHUP)
    wait_for(lambda: home.engine_answers(process), timeout=15)
    wait_for(lambda: home.status()["concurrency_remote"] == 7)
    assert process.poll() is None


def test_sigterm_lets_the_delivery_in_flight_finish_and_records_it(home: SendworxHome) -> None:
    with RecordingSink("127.0.0.85", behaviour=Behaviour(data_delay=1.0)) as sink:
        home.routes(f":[127.0.0.85]:{sink.port}")
        engine = home.start_engine()
        home.inject("u@inflight.test")
        wait_for(lambda: sink.stats.open_now == 1)
        time.sleep(0.2)
        assert home.stop(engine) == 0
        assert len(sink.received()) == 1
    assert home.queue_empty()
    assert [line["result"] for line in home.deliveries()] == ["delivered"]


def test_sigterm_beyond_the_grace_period_leaves_the_message_queued(home: SendworxHome) -> None:
    home.write_config(delivery={"shutdown_grace_seconds": 0.5})
    with RecordingSink("127.0.0.86", behaviour=Behaviour(data_delay=5.0)) as slow:
        home.routes(f":[127.0.0.86]:{slow.port}")
        engine = home.start_engine()
        home.inject("u@slow.test")
        wait_for(lambda: slow.stats.open_now == 1)
        started = time.monotonic()
        assert home.stop(engine) == 0
        assert time.monotonic() - started < 4
    assert len(home.queue_files()) == 1
    assert "were cut" in home.log_text()
    with RecordingSink("127.0.0.87") as fast:
        home.routes(f":[127.0.0.87]:{fast.port}")
        home.start_engine()
        fast.wait_for_messages(1)


def test_stopping_with_held_mail_writes_nothing_and_keeps_it(home: SendworxHome) -> None:
    home.set_control("concurrencyremote", "0\n")
    engine = home.start_engine()
    for number in range(3):
        home.inject(f"u{number}@held.test")
    wait_for(lambda: home.status()["active"] == 3)
    assert home.stop(engine) == 0
    assert len(home.queue_files()) == 3
    assert home.queue_files("state") == []


def test_a_second_engine_refuses_to_start(home: SendworxHome) -> None:
    engine = home.start_engine()
    second = subprocess.run(home.command("send"), capture_output=True, text=True, timeout=30)
    assert second.returncode == 1
    assert f"already running (pid {engine.pid})" in second.stderr


def test_a_start_never_fails_because_someone_asks_whether_it_runs(tmp_path: Path) -> None:
    """`running_pid` (every isRunning, every page) probes the lock; a start that met a probe
    said "already running" and exited: a restart during a billing module's poll failed."""
    path = tmp_path / "send.pid"
    path.touch()
    probe = (
        "import sys\nfrom sendworx.shared.pidfile import running_pid\n"
        "print('probing', flush=True)\nwhile True:\n    running_pid(sys.argv[1])\n"
    )
    prober = subprocess.Popen([sys.executable, "-c", probe, str(path)], stdout=subprocess.PIPE)
    try:
        assert prober.stdout is not None and prober.stdout.readline() == b"probing\n"
        for _ in range(300):
            pid_file = PidFile(path)
            pid_file.acquire()
            assert running_pid(path) == os.getpid()
            pid_file.release()
    finally:
        prober.kill()
        prober.wait()
    holder = PidFile(path)
    holder.acquire()
    with pytest.raises(AlreadyRunning):  # a real holder still keeps others out
        PidFile(path).acquire()
    holder.release()


def test_pid_lock_is_released_by_kill_9(home: SendworxHome) -> None:
    engine = home.start_engine()
    stat = subprocess.run(home.command("queue", "stat"), capture_output=True, text=True)
    assert f"engine_pid: {engine.pid}" in stat.stdout
    home.kill(engine)
    stat = subprocess.run(home.command("queue", "stat"), capture_output=True, text=True)
    assert "engine_pid: -" in stat.stdout
    replacement = home.start_engine()
    assert replacement.pid != engine.pid


def test_metrics_report_queue_connections_and_attempts(home: SendworxHome) -> None:
    port = free_port()
    home.write_config(metrics={"port": port})
    with RecordingSink("127.0.0.88") as sink:
        home.routes(f":[127.0.0.88]:{sink.port}")
        home.start_engine()
        home.inject("a@metrics.test", "b@metrics.test")
        sink.wait_for_messages(1)
        wait_for(home.queue_empty)

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
                return str(page.read().decode())

        wait_for(lambda: 'sendworx_delivery_attempts_total{result="delivered"} 2.0' in scrape())
    text = scrape()
    assert "sendworx_queue_messages 0.0" in text
    assert "sendworx_open_connections" in text
    assert "sendworx_connection_limit 255.0" in text
    # Both recipients' time in queue, in the group of a destination no pacing rule names.
    assert 'sendworx_time_in_queue_seconds_count{group="other"} 2.0' in text
    assert 'sendworx_time_in_queue_seconds_bucket{group="other",le="15.0"} 2.0' in text


def test_the_engine_sockets_are_files_only_the_owner_can_reach_even_in_a_deep_home(
    tmp_path: Path, dns_server: DNSServer
) -> None:
    """No abstract-namespace names another local user could squat: the sockets are files in
    the 0700 run directory, a stale one from a kill -9 is replaced, and a home deeper than a
    socket address can hold (108 bytes) works."""
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "home"
    home = SendworxHome(deep, dns_port=dns_server.port)
    try:
        home.instance.ensure()
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with short_path(home.instance.engine_control_socket) as address:
            stale.bind(address)  # what a kill -9 leaves behind
        stale.close()
        engine = home.start_engine()
        assert len(str(home.instance.engine_control_socket)) > 108
        assert stat.S_IMODE(home.instance.run_dir.stat().st_mode) == 0o700
        assert home.status()["pid"] == engine.pid
        listed = Path("/proc/net/unix").read_text()
        assert "@sendworx/" not in listed
        home.inject("u@nowhere.test")
        # Tried well before the 5 s rescan: sendmail's wake-up datagram reached the engine.
        wait_for(lambda: home.deliveries() != [], timeout=3)
        os.kill(engine.pid, signal.SIGKILL)
        engine.wait(10)
        assert home.instance.engine_control_socket.exists()
        assert home.start_engine().poll() is None  # the stale file is replaced
    finally:
        home.close()
