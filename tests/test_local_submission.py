"""Mail from every local account: the compiled sendmail client, the submission daemon and
what the kernel says about who called. Accounts are real uids (root, daemon, nobody), the
client a real binary, the daemon a real process; nothing here believes what a caller says.
"""

from __future__ import annotations

import json
import os
import signal
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.accounts import NOBODY, as_user, run_client
from support.instance import SendworxHome
from support.net import wait_for
from support.sink import RecordingSink

from sendworx.inject.submit_client import submit
from sendworx.shared import unix_sockets
from sendworx.shared.history import HistoryEvent, HistoryWriter
from sendworx.shared.queue_format import new_message_id
from sendworx.shared.webhooks import WebhookStore

DAEMON = 1  # Debian's `daemon` account: a second customer
PHP_MAIL = b"To: alice@far.test\nCc: carol@far.test\nBcc: secret@far.test\nSubject: order\n\nok\n"


@pytest.fixture
def submission(open_home: SendworxHome) -> SendworxHome:
    open_home.start_submitd()
    for directory in (open_home.home, open_home.instance.run_dir):
        directory.chmod(0o711)
    return open_home


def test_every_account_submits_and_the_kernel_names_it(
    submission: SendworxHome, sendmail_client: Path
) -> None:
    """root, daemon and nobody each run sendmail; the origin is each one's uid and account
    whatever it says: a forged -f and $USER change the sender, never the origin."""
    for uid in (0, DAEMON, NOBODY):
        done = run_client(submission, sendmail_client, "-i", "bob@far.test", uid=uid)
        assert (done.returncode, done.stderr) == (0, b"")
    forged = subprocess.run(
        ["sendmail", "-f", "root@localhost", "-i", "bob@far.test"],
        executable=sendmail_client,
        input=b"Subject: me, root\n\nno\n",
        capture_output=True,
        env={"SENDWORX_SUBMIT_SOCKET": str(submission.instance.submission_socket), "USER": "root"},
        user=NOBODY,
        timeout=30,
    )
    assert forged.returncode == 0
    queued = submission.queued()
    origins = [(e.origin.uid, e.origin.account) for e, _ in queued if e.origin is not None]
    assert origins == [(0, "root"), (DAEMON, "daemon"), (NOBODY, "nobody"), (NOBODY, "nobody")]
    assert [envelope.sender for envelope, _ in queued] == [
        "root@sendworx.test",
        "daemon@sendworx.test",
        "nobody@sendworx.test",
        "root@localhost",  # what -f says, and only the sender
    ]
    assert f"from userid {NOBODY})".encode() in queued[3][1]


def test_the_flags_php_and_cron_send_work_as_sendworx_sendmail(
    submission: SendworxHome, sendmail_client: Path
) -> None:
    php = run_client(submission, sendmail_client, "-t", "-i", message=PHP_MAIL, uid=NOBODY)
    cron = run_client(
        submission,
        sendmail_client,
        "-FCronDaemon",
        "-i",
        "-B8BITMIME",
        "-oem",
        "root",
        message=b"Subject: Cron <root@host> run-parts\n\nreport\n",
    )
    dotted = run_client(
        submission, sendmail_client, "x@far.test", message=b"Subject: d\r\n\r\nkept\r\n.\r\nnot\r\n"
    )
    assert [done.returncode for done in (php, cron, dotted)] == [0, 0, 0]
    (php_envelope, php_content), (cron_envelope, cron_content), (_, dotted_content) = (
        submission.queued()
    )
    assert php_envelope.recipients == ("alice@far.test", "carol@far.test", "secret@far.test")
    assert b"Bcc" not in php_content and b"secret" not in php_content
    assert cron_envelope.recipients == ("root@sendworx.test",)
    assert b"From: CronDaemon <root@sendworx.test>" in cron_content
    assert dotted_content.endswith(b"kept\r\n")


def test_the_compiled_client_says_what_the_python_one_says(
    submission: SendworxHome, sendmail_client: Path
) -> None:
    """Every answer comes from the daemon: the two clients exit and print alike."""
    cases = [
        (["-i", "ok@far.test"], b"Subject: x\n\ny\n"),
        (["-i"], b"Subject: x\n\nno recipient\n"),
        (["-i", "bad address@x"], b"Subject: x\n\ny\n"),
        (["-bs"], b""),  # SMTP on standard input: not supported
        (["-F", "Evil\nBcc: x@y", "ok@far.test"], b"Subject: x\n\ny\n"),
    ]
    for arguments, message in cases:
        compiled = run_client(submission, sendmail_client, *arguments, message=message)
        read, write = os.pipe()
        os.write(write, message)
        os.close(write)
        with (
            os.fdopen(read, "rb") as stdin,
            tempfile.TemporaryFile() as out,
            tempfile.TemporaryFile() as err,
        ):
            path = submission.instance.submission_socket
            status = submit(path, ["sendmail", *arguments], stdin, out, err)
            err.seek(0)
            assert (compiled.returncode, compiled.stderr) == (status, err.read()), arguments
    statuses = [run_client(submission, sendmail_client, *a, message=m).returncode for a, m in cases]
    assert statuses == [0, 64, 65, 64, 65]


def test_an_account_cannot_see_touch_or_forge_anothers_mail(
    submission: SendworxHome, sendmail_client: Path
) -> None:
    assert run_client(submission, sendmail_client, "-i", "a@far.test", uid=DAEMON).returncode == 0
    assert run_client(submission, sendmail_client, "-i", "b@far.test", uid=NOBODY).returncode == 0
    queue = submission.home / "queue"
    [first, _] = sorted(os.listdir(queue / "new"))

    def trespass() -> str:
        said = []
        attempts: list[Callable[[], object]] = [
            lambda: os.listdir(queue / "new"),
            lambda: (queue / "new" / first).read_bytes(),
            lambda: (queue / "new" / first).unlink(),
            lambda: (queue / "new" / "0661000000000000aaaaaaaaaa").write_bytes(b"forged"),
        ]
        for attempt in attempts:
            try:
                attempt()
                said.append("done")
            except PermissionError:
                said.append("refused")
        return " ".join(said)

    assert as_user(NOBODY, trespass) == "refused refused refused refused"
    assert len(submission.queued()) == 2
    mailq = {
        uid: run_client(submission, sendmail_client, uid=uid, program="mailq").stdout.decode()
        for uid in (0, DAEMON, NOBODY)
    }
    assert "a@far.test" in mailq[DAEMON] and "b@far.test" not in mailq[DAEMON]
    assert "b@far.test" in mailq[NOBODY] and "a@far.test" not in mailq[NOBODY]
    assert "a@far.test" in mailq[0] and "b@far.test" in mailq[0]
    assert mailq[0].rstrip().endswith("in 2 Requests.")


def test_a_flooding_account_meets_its_cap_and_the_others_keep_sending(
    open_home: SendworxHome, sendmail_client: Path
) -> None:
    open_home.write_config(submission={"messages_per_hour_per_account": 5})
    open_home.start_submitd()
    for directory in (open_home.home, open_home.instance.run_dir):
        directory.chmod(0o711)
    flood = [
        run_client(open_home, sendmail_client, "-i", f"n{n}@far.test", uid=NOBODY) for n in range(8)
    ]
    assert [done.returncode for done in flood] == [0] * 5 + [75] * 3
    assert flood[5].stderr == (
        b"sendmail: this account queued 5 messages in the last hour, its cap; try later;"
        b" not queued\n"
    )
    others = [
        run_client(open_home, sendmail_client, "-i", "d@far.test", uid=DAEMON) for _ in range(3)
    ]
    assert [done.returncode for done in others] == [0, 0, 0]
    assert run_client(open_home, sendmail_client, "-i", "r@far.test").returncode == 0  # root's
    too_big = run_client(
        open_home, sendmail_client, "-i", "x@far.test", message=b"x" * (36 * 1024 * 1024)
    )
    assert too_big.returncode == 65 and b"message too large" in too_big.stderr
    assert len(open_home.queued()) == 9


def test_without_the_daemon_sendmail_exits_75_and_says_why(
    submission: SendworxHome, sendmail_client: Path
) -> None:
    daemon = submission.processes[-1]
    submission.stop(daemon)
    refused = run_client(submission, sendmail_client, "-i", "x@far.test", uid=NOBODY)
    assert refused.returncode == 75
    assert refused.stderr.startswith(b"sendmail: the local mail submission service does not answer")
    assert refused.stderr.endswith(b"; nothing was queued\n")
    assert submission.queued() == []


def test_mail_handed_in_while_the_engine_is_stopped_goes_once_it_starts(
    submission: SendworxHome, sendmail_client: Path
) -> None:
    with RecordingSink("127.0.0.95") as sink:
        submission.routes(f":[127.0.0.95]:{sink.port}")
        assert (
            run_client(submission, sendmail_client, "-i", "x@far.test", uid=NOBODY).returncode == 0
        )
        submission.start_engine()
        [message] = sink.wait_for_messages(1)
    assert message.recipients == ("x@far.test",)


def test_a_killed_daemon_loses_nothing_it_acknowledged(
    submission: SendworxHome, sendmail_client: Path
) -> None:
    """Four loops of sendmail calls while the daemon is killed (-9) and started again: every
    call that exited 0 is in the queue; the others exited 75."""
    acknowledged: list[str] = []
    statuses: set[int] = set()
    lock, stop = threading.Lock(), threading.Event()

    def loop(number: int) -> None:
        count = 0
        while not stop.is_set():
            token = f"t{number}-{count}"
            count += 1
            done = run_client(
                submission,
                sendmail_client,
                "-i",
                "x@far.test",
                message=f"Subject: {token}\n\n.".encode(),
            )
            with lock:
                statuses.add(done.returncode)
                if done.returncode == 0:
                    acknowledged.append(token)

    threads = [threading.Thread(target=loop, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(3):
            wait_for(lambda: len(acknowledged) >= 10)
            before = len(acknowledged)
            submission.kill(submission.processes[-1])
            submission.start_submitd()
            submission.instance.run_dir.chmod(0o711)
            wait_for(lambda: len(acknowledged) > before + 5)  # noqa: B023 - read at once
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    subjects = {content.split(b"\n", 3)[2] for _, content in submission.queued()}
    assert statuses <= {0, 75}
    missing = [t for t in acknowledged if f"Subject: {t}".encode() not in subjects]
    assert missing == []


def test_smtp_on_loopback_is_the_account_that_connects(
    open_home: SendworxHome, sendmail_client: Path
) -> None:
    """An account talking SMTP to localhost is that account (the kernel owns the answer),
    for its limits as for sendmail: it cannot slip out of them by changing door."""
    home = open_home
    home.write_config(smtpd={"workers": 1})
    (home.home / "policy.toml").write_text(
        '[[limit]]\nname = "one"\nscope = "account"\nmatch = ["nobody"]\n'
        'messages_per_hour = 1\naction = "reject"\n'
    )
    home.set_control("concurrencyremote", "0\n")  # the engine answers limits, delivers nothing
    home.start_engine()
    home.start_smtpd()
    home.start_submitd()
    for directory in (home.home, home.instance.run_dir):
        directory.chmod(0o711)

    def over_smtp() -> str:
        codes = []
        for number in range(2):
            with smtplib.SMTP("127.0.0.1", home.smtpd_port, timeout=10) as smtp:
                smtp.ehlo()
                smtp.mail("site@shop.test")
                smtp.rcpt("x@far.test")
                try:
                    codes.append(smtp.data(f"Subject: {number}\r\n\r\nx\r\n".encode())[0])
                except smtplib.SMTPDataError as refused:
                    codes.append(refused.smtp_code)
        return " ".join(map(str, codes))

    assert as_user(NOBODY, over_smtp) == "250 451"  # the second is over nobody's limit
    after = run_client(home, sendmail_client, "-i", "x@far.test", uid=NOBODY)
    assert after.returncode == 75 and b"Sending limit one reached" in after.stderr
    with smtplib.SMTP("127.0.0.1", home.smtpd_port, timeout=10) as smtp:  # root: no limit
        smtp.sendmail("r@shop.test", ["x@far.test"], b"Subject: root\r\n\r\nx\r\n")
    origins = [(e.origin.via, e.origin.uid, e.origin.account) for e, _ in home.queued() if e.origin]
    assert origins == [("smtpd", NOBODY, "nobody"), ("smtpd", 0, "root")]


def test_newaliases_is_roots_and_names_every_problem(
    submission: SendworxHome, sendmail_client: Path
) -> None:
    (submission.home / "aliases").write_text(
        "# the host's aliases\npostmaster: root\nroot: admin@example.test,\n  alice\n"
        "abuse: |/usr/bin/evil\nbad line\n"
    )
    checked = run_client(submission, sendmail_client, program="newaliases", message=b"")
    assert checked.returncode == 0
    assert checked.stdout.endswith(b"aliases: 3 aliases\n")
    assert b"'|/usr/bin/evil' is not supported" in checked.stderr
    assert b"line 6: not `name: target, ...`" in checked.stderr
    refused = run_client(submission, sendmail_client, program="newaliases", uid=NOBODY, message=b"")
    assert (refused.returncode, refused.stderr) == (77, b"newaliases: only root may do that\n")


def test_garbage_on_the_socket_gets_an_answer_and_the_daemon_carries_on(
    submission: SendworxHome, sendmail_client: Path
) -> None:
    for garbage in (
        b"GET / HTTP/1.1\r\n\r\n",
        b"SWX1\xff\xff\xff\xff",
        b"SWX1\0\0\0\1\xff\xff\xff\xff",
    ):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            unix_sockets.connect(connection, submission.instance.submission_socket)
            connection.settimeout(10)
            connection.sendall(garbage)
            connection.shutdown(socket.SHUT_WR)
            answer = connection.recv(4096)
        assert answer[:1] == bytes([64]), answer
    assert run_client(submission, sendmail_client, "-i", "x@far.test").returncode == 0
    os.kill(submission.processes[-1].pid, signal.SIGHUP)  # reread the names: still serving
    assert run_client(submission, sendmail_client, "-i", "y@far.test").returncode == 0


def test_an_account_sees_the_history_of_its_own_mail_only(
    submission: SendworxHome, sendmail_client: Path
) -> None:
    """What `sendworx history` run by an account asks the daemon (the compiled client sends
    the same request): the kernel names the account, whatever the arguments say."""
    writer = HistoryWriter(submission.instance.history_path)
    now = time.time()
    first, second, third = (new_message_id() for _ in range(3))
    writer.append(
        [
            HistoryEvent(now, "delivered", first, recipient="x@far.test", account="daemon"),
            HistoryEvent(now + 1, "failed", second, recipient="y@far.test", account="nobody"),
            HistoryEvent(now + 2, "delivered", third, recipient="z@far.test", account=""),
        ]
    )
    writer.close()

    def ask(uid: int, *arguments: str) -> tuple[int, Any]:
        done = run_client(submission, sendmail_client, *arguments, uid=uid, program="mailhistory")
        return done.returncode, json.loads(done.stdout) if done.returncode == 0 else done.stderr

    def recipients(uid: int, *arguments: str) -> list[str]:
        status, payload = ask(uid, *arguments)
        assert status == 0, payload
        return [event["recipient"] for event in payload["events"]]

    assert recipients(NOBODY) == ["y@far.test"]
    assert recipients(DAEMON) == ["x@far.test"]
    assert recipients(0) == ["z@far.test", "y@far.test", "x@far.test"]
    assert recipients(NOBODY, "--recipient", "x@far.test") == []  # daemon's: not found
    assert recipients(NOBODY, first) == []  # another account's message: no story
    assert recipients(DAEMON, first) == ["x@far.test"]
    status, said = ask(NOBODY, "--per-page", "100000")
    assert status == 64 and b"--per-page up to 500" in said
    status, said = ask(NOBODY, "--event", "'; DROP TABLE events; --")
    assert status == 64 and b"invalid choice" in said


def test_an_account_manages_webhooks_for_its_own_mail_only(
    submission: SendworxHome, sendmail_client: Path
) -> None:
    """What `sendworx webhooks` run by an account asks the daemon: endpoints for the mail of
    the account the kernel names, none of another's, and no scope of its choosing."""

    def ask(uid: int, *arguments: str) -> tuple[int, Any]:
        done = run_client(
            submission, sendmail_client, *arguments, uid=uid, program="mailwebhooks", message=b""
        )
        return done.returncode, json.loads(done.stdout) if done.returncode == 0 else done.stderr

    status, added = ask(NOBODY, "add", "https://hooks.example.com/mail", "--events", "bounced")
    assert status == 0, added
    assert (added["scope"], added["scope_value"], added["events"]) == (
        "account",
        "nobody",
        ["bounced"],
    )
    assert added["secret"].startswith("whsec_") and added["owner"] == "account nobody"
    status, said = ask(NOBODY, "add", "http://127.0.0.1:8080/")
    assert status == 64 and b"loopback" in said  # no allowance in this instance
    status, said = ask(NOBODY, "add", "http://169.254.169.254/latest/meta-data/")
    assert status == 64 and b"link-local" in said
    status, theirs = ask(DAEMON, "add", "https://hooks.example.org/daemon")
    assert status == 0 and theirs["scope_value"] == "daemon"
    status, listed = ask(NOBODY, "list")
    assert status == 0 and [row["id"] for row in listed["endpoints"]] == [added["id"]]
    assert listed["endpoints"][0]["secret"].endswith("...")  # listed, not revealed
    for action in ("delete", "secret", "rotate", "attempts", "test"):
        status, said = ask(NOBODY, action, str(theirs["id"]))
        assert status == 64 and b"no endpoint" in said, (action, said)
    status, secret = ask(NOBODY, "secret", str(added["id"]))
    assert status == 0 and secret["secret"] == added["secret"]
    status, rotated = ask(NOBODY, "rotate", str(added["id"]), "--grace-hours", "1")
    assert status == 0 and rotated["secret"] != added["secret"] and rotated["old_secret_until"]
    started = time.monotonic()
    status, tested = ask(NOBODY, "test", str(added["id"]))
    assert status == 0 and tested["outcome"] == "pending" and "not running" in tested["reply"]
    assert time.monotonic() - started < 5  # not waited for: nobody sends
    status, said = ask(0, "list")
    assert status == 64  # root manages every endpoint with `sendworx webhooks` itself
    status, said = ask(NOBODY, "add", "https://x.example/", "--scope", "all")
    assert status == 64
    assert ask(NOBODY, "delete", str(added["id"]))[0] == 0
    assert ask(NOBODY, "list")[1]["endpoints"] == []
    assert [e.scope_value for e in WebhookStore(submission.instance.webhooks_path).endpoints()] == [
        "daemon"
    ]
