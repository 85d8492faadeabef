"""Sending limits with `action = "reject"`: the injectors ask the running engine before they
queue, and a sender over its cap is refused — a real SMTP client sees 451 or 550 with the
rule's name, sendmail exits 75 or 77 and says why. What is let through is counted once."""

from __future__ import annotations

import getpass
import os
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.accounts import NOBODY, as_user
from support.instance import SendworxHome
from support.net import wait_for
from support.sink import RecordingSink

from sendworx.shared import admission, unix_sockets

POLICY = f"""
[[limit]]
name = "relayed"
scope = "domain"
match = ["shop.test"]
messages_per_hour = 2
action = "reject"

[[limit]]
name = "scripts"
scope = "account"
match = ["{getpass.getuser()}"]
recipients_per_hour = 3
action = "reject"
reject_code = 550

[[limit]]
name = "others"
scope = "domain"
messages_per_hour = 1
"""


def _send(home: SendworxHome, sender: str, recipient: str) -> str:
    """SMTP from another account (nobody): mail to localhost counts against the account that
    connects (the kernel's word), and no account limit here names nobody."""

    def send() -> str:
        try:
            with smtplib.SMTP("127.0.0.1", home.smtpd_port, timeout=10) as client:
                client.sendmail(sender, [recipient], f"Subject: from {sender}\r\n\r\nhi\r\n")
        except smtplib.SMTPDataError as refused:
            error = refused.smtp_error
            return f"{refused.smtp_code} {error.decode() if isinstance(error, bytes) else error}"
        return "250"

    return as_user(NOBODY, send)


@pytest.fixture
def running(home: SendworxHome) -> Iterator[tuple[SendworxHome, RecordingSink]]:
    (home.home / "policy.toml").write_text(POLICY)
    with RecordingSink("127.0.4.20") as sink:
        home.routes(f"far.test:[127.0.4.20]:{sink.port}")
        home.start_engine()
        home.start_smtpd()
        yield home, sink


def test_smtp_clients_over_a_reject_limit_get_451_with_the_rule(
    running: tuple[SendworxHome, RecordingSink],
) -> None:
    home, sink = running
    assert _send(home, "a@shop.test", "u1@far.test") == "250"
    assert _send(home, "b@SHOP.test", "u2@far.test") == "250"
    refused = _send(home, "c@shop.test", "u3@far.test")
    assert refused.startswith("451 4.7.1 Sending limit relayed reached; try again after 20")
    # Counted once, at the door: the two let in go at once, not held for the window.
    sink.wait_for_messages(2)
    wait_for(home.queue_empty)
    assert 'refused from="c@shop.test"' in home.log_text("smtpd")


def test_sendmail_over_a_reject_limit_exits_77_and_says_why(
    running: tuple[SendworxHome, RecordingSink],
) -> None:
    home, sink = running
    ok = home.sendmail("-f", "me@mine.test", "u1@far.test", "u2@far.test")
    assert ok.returncode == 0, ok.stderr
    refused = home.sendmail("-f", "me@mine.test", "u3@far.test", "u4@far.test")
    assert refused.returncode == 77
    assert refused.stderr.decode() == "sendmail: Sending limit scripts reached; not queued\n"
    assert home.sendmail("-f", "me@mine.test", "u5@far.test").returncode == 0
    sink.wait_for_messages(2)
    wait_for(home.queue_empty)
    assert sorted(r for m in sink.received() for r in m.recipients) == [
        "u1@far.test",
        "u2@far.test",
        "u5@far.test",
    ]


def test_with_the_engine_stopped_limits_fail_open(home: SendworxHome) -> None:
    (home.home / "policy.toml").write_text(POLICY)
    home.start_smtpd()
    for number in range(4):
        assert _send(home, f"x{number}@shop.test", "u@far.test") == "250"
        assert home.sendmail("-f", "me@mine.test", "a@far.test", "b@far.test").returncode == 0
    assert len(home.queue_files("new")) == 8


def _ask_as(uid: int, socket_path: Path, account: str) -> str | None:
    """Ask for admission as `uid` (the directory opened as root first: only `run/` itself is
    open to the site accounts)."""
    with unix_sockets.short_path(socket_path) as address:

        def ask() -> str:
            refusal = admission.ask(Path(address), "me@mine.test", account, 3)
            return refusal.rule if refusal else "-"

        answer = as_user(uid, ask)
    return None if answer == "-" else answer


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to ask as another account")
def test_another_account_cannot_claim_to_be_the_one_with_room(
    running: tuple[SendworxHome, RecordingSink],
) -> None:
    """The engine takes a caller's account from the kernel (SO_PEERCRED), not from what it
    says: `nobody` claiming to be the owner is counted as nobody (no rule: let through), and
    the owner's own cap (3 recipients an hour) is untouched by it."""
    home, _ = running
    home.instance.run_dir.chmod(0o711)  # as an operator opens it to the site accounts
    socket_path = home.instance.admission_socket
    owner = getpass.getuser()
    for _ in range(3):
        assert _ask_as(65534, socket_path, owner) is None
    assert _ask_as(0, socket_path, owner) is None
    assert _ask_as(0, socket_path, owner) == "scripts"
