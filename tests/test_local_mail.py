"""Mail for this host itself is delivered to local Maildirs under the instance, never dropped:
the banner's test message that bounces, its bounce to root, a double bounce to postmaster.
Real engine and listener processes; `sendworx mailbox` reads what arrived."""

from __future__ import annotations

import email
import json
import socket
import subprocess

from support.instance import SendworxHome
from support.net import wait_for
from support.sink import Behaviour, RecordingSink


def _mailbox(home: SendworxHome, *arguments: str) -> str:
    done = subprocess.run(home.command("mailbox", *arguments), capture_output=True, check=True)
    return done.stdout.decode()


def _maildir(home: SendworxHome, mailbox: str) -> list[bytes]:
    new = home.home / "mailboxes" / mailbox / "new"
    return [path.read_bytes() for path in sorted(new.iterdir())] if new.exists() else []


def test_mail_to_root_and_this_host_lands_in_local_mailboxes(home: SendworxHome) -> None:
    home.set_control("locals", "intranet.test\n")
    home.start_engine()
    host = socket.gethostname()
    for recipient in ("root", "root@localhost", f"Alice@{host}", "ops@intranet.test"):
        result = home.sendmail("-f", "cron@localhost", recipient)
        assert result.returncode == 0, result.stderr
    wait_for(lambda: len(_maildir(home, "postmaster")) == 2 and _maildir(home, "ops"))
    wait_for(home.queue_empty)
    [alice] = _maildir(home, "alice")
    message = email.message_from_bytes(alice)
    assert message["Return-Path"] == "<cron@localhost>"
    assert message["Delivered-To"] == f"Alice@{host}"
    lines = home.deliveries()
    assert {line["relay"] for line in lines} == {"local"}
    assert {line["result"] for line in lines} == {"delivered"}


def test_the_banners_test_message_bounces_home_and_a_double_bounce_reaches_postmaster(
    home: SendworxHome,
) -> None:
    """A message that fails remotely bounces to its local sender's mailbox; a bounce that
    fails (its sender was remote and refuses) goes to postmaster's, as a double bounce."""
    refusing = Behaviour(refuse_rcpt="550 5.1.1 no such user")
    with RecordingSink("127.0.4.40", behaviour=refusing) as far:
        home.routes(f"far.test:[127.0.4.40]:{far.port}")
        home.start_engine()
        assert home.sendmail("-f", "root@localhost", "you@far.test").returncode == 0
        wait_for(lambda: _maildir(home, "postmaster"))  # root is postmaster's alias
        [bounce] = _maildir(home, "postmaster")
        assert b"you@far.test" in bounce and b"550 5.1.1 no such user" in bounce
        assert home.sendmail("-f", "", "x@far.test").returncode == 0  # a bounce that fails
        wait_for(lambda: len(_maildir(home, "postmaster")) == 2)
        wait_for(home.queue_empty)
    double = email.message_from_bytes(_maildir(home, "postmaster")[1])
    assert double["Return-Path"] == "<>"


def test_a_local_part_that_names_no_mailbox_bounces_and_nothing_escapes(home: SendworxHome) -> None:
    home.start_engine()
    for hostile in ("../../etc@localhost", ".hidden@localhost", "a/b@localhost"):
        assert home.sendmail("-f", "cron@localhost", hostile).returncode in (0, 65)
    wait_for(home.queue_empty)
    failed = [line for line in home.deliveries() if line["result"] == "failed"]
    assert failed and all(line["status"] == "5.1.1" for line in failed)
    mailboxes = sorted(path.name for path in (home.home / "mailboxes").iterdir())
    assert mailboxes == ["cron"]  # only the bounces, to their sender
    assert not (home.home / "etc").exists()


def test_the_mailbox_command_lists_and_shows(home: SendworxHome) -> None:
    home.start_engine()
    message = b"Subject: disk \x1b[2J full\nFrom: cron@localhost\n\nthe disk is full\n"
    assert home.sendmail("-f", "cron@localhost", "root", message=message).returncode == 0
    wait_for(lambda: _maildir(home, "postmaster"))
    assert _mailbox(home).split() == ["postmaster", "1"]
    [listed] = json.loads(_mailbox(home, "postmaster", "--json"))
    assert listed["sender"] == "cron@localhost" and listed["subject"] == "disk \x1b[2J full"
    text = _mailbox(home, "postmaster")
    assert "\x1b" not in text and "disk \\x1b[2J full" in text
    shown = _mailbox(home, "postmaster", listed["id"])
    assert "the disk is full" in shown and "\x1b" not in shown
    missing = subprocess.run(home.command("mailbox", "postmaster", "nope"), capture_output=True)
    assert missing.returncode == 1 and b"no message nope" in missing.stderr


def test_the_aliases_file_sends_roots_mail_to_mailboxes_and_elsewhere_and_stops_loops(
    home: SendworxHome,
) -> None:
    """root: a mailbox here and an address elsewhere (a forwarded copy, marked
    Delivered-To); a message already marked delivered to postmaster here, coming back to
    postmaster, is a forwarding loop (5.4.6)."""
    (home.home / "aliases").write_text("postmaster: root\nroot: ops, admin@far.test\nops: alice\n")
    with RecordingSink("127.0.0.96") as sink:
        home.routes(f"far.test:[127.0.0.96]:{sink.port}")
        home.start_engine()
        assert home.sendmail("-f", "cron@localhost", "root").returncode == 0
        [forwarded] = sink.wait_for_messages(1)
        assert forwarded.recipients == ("admin@far.test",)
        assert forwarded.mail_from == "cron@localhost"
        assert b"Delivered-To: root@sendworx.test" in forwarded.content
        wait_for(lambda: _maildir(home, "alice"))
        assert _maildir(home, "root") == [] and _maildir(home, "postmaster") == []
        looped = b"Delivered-To: postmaster@sendworx.test\nSubject: again\n\nx\n"
        assert home.sendmail("-f", "admin@far.test", "postmaster", message=looped).returncode == 0
        [bounce] = sink.wait_for_messages(2)[1:]
    assert bounce.recipients == ("admin@far.test",)
    assert b"5.4.6" in bounce.content and b"mail forwarding loop for postmaster" in bounce.content
    assert len(_maildir(home, "alice")) == 1
    assert _mailbox(home, "root").count("\n") >= 1  # `sendworx mailbox root` reads alice's
