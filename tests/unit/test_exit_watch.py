"""ExitWatch: a real process's exit shows at the next question, kill -9 included."""

from __future__ import annotations

import subprocess

from support.net import wait_for

from sendworx.backends.exit_watch import ExitWatch


def test_a_running_process_is_alive_until_killed() -> None:
    watch = ExitWatch()
    process = subprocess.Popen(["sleep", "30"])
    try:
        assert watch.alive(process.pid) is True
        assert watch.alive(process.pid) is True  # the same pidfd, polled again
        process.kill()
        wait_for(lambda: watch.alive(process.pid) is False, timeout=5)
        assert watch.alive(process.pid) is False  # zombie until reaped: still exited
    finally:
        process.kill()
        process.wait()
    assert watch.alive(process.pid) is False  # reaped: the pid is gone


def test_watching_another_pid_forgets_the_first() -> None:
    watch = ExitWatch()
    first, second = subprocess.Popen(["sleep", "30"]), subprocess.Popen(["sleep", "30"])
    try:
        assert watch.alive(first.pid) and watch.alive(second.pid)
        second.kill()
        second.wait()
        assert watch.alive(second.pid) is False
        assert watch.alive(first.pid) is True
    finally:
        for process in (first, second):
            process.kill()
            process.wait()
