"""Mail in: the SMTP submission listener and the sendmail command, including hostile input.
Injection must work while the engine is stopped and must never acknowledge unsaved mail."""

from __future__ import annotations

import contextlib
import email
import functools
import os
import signal
import smtplib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.instance import SendworxHome
from support.net import port_open, smtp_reply, wait_for
from support.postfix_sink import PostfixSink
from support.sink import RecordingSink


@pytest.fixture
def smtpd(home: SendworxHome) -> Iterator[SendworxHome]:
    home.start_smtpd()
    yield home


def _client(home: SendworxHome, source: str = "127.0.0.1") -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", home.smtpd_port, timeout=10, source_address=(source, 0))


def test_smtpd_queues_while_the_engine_is_stopped(smtpd: SendworxHome) -> None:
    with _client(smtpd) as client:
        client.ehlo("client.test")
        client.mail("a@origin.test")
        client.rcpt("b@far.test")
        code, reply = client.data(b"Subject: queued\r\n\r\nwhile stopped\r\n")
    assert code == 250
    message_id = reply.decode().rsplit(" ", 1)[1]
    assert smtpd.queue_files("new") == [message_id]
    content = (smtpd.home / "queue" / "new" / message_id).read_bytes()
    assert b"Received: from client.test (127.0.0.1)" in content
    assert f"with ESMTP id {message_id};".encode() in content


def test_smtpd_mail_is_delivered_once_the_engine_starts(smtpd: SendworxHome) -> None:
    with RecordingSink("127.0.0.90") as sink:
        smtpd.routes(f":[127.0.0.90]:{sink.port}")
        with _client(smtpd) as client:
            client.sendmail("a@origin.test", ["b@far.test"], b"Subject: x\r\n\r\ny\r\n")
        smtpd.start_engine()
        [message] = sink.wait_for_messages(1)
    assert message.mail_from == "a@origin.test"


def test_smtpd_rejects_messages_over_the_size_limit_with_552(home: SendworxHome) -> None:
    home.write_config(smtpd={"max_message_bytes": 4096})
    home.start_smtpd()
    big = b"Subject: big\r\n\r\n" + (b"x" * 99 + b"\r\n") * 80
    with _client(home) as client, pytest.raises(smtplib.SMTPSenderRefused) as declared:
        client.sendmail("a@origin.test", ["b@far.test"], big)  # declares SIZE=: refused at MAIL
    assert declared.value.smtp_code == 552
    with _client(home) as client:
        client.ehlo("client.test")
        client.mail("a@origin.test")  # no SIZE: refused once the data is in
        client.rcpt("b@far.test")
        assert client.data(big)[0] == 552
    assert home.queue_files("new") == []


def test_smtpd_accepts_lines_longer_than_rfc_5321_allows(smtpd: SendworxHome) -> None:
    long_line = "<p>" + "h" * 5000 + "</p>"
    with PostfixSink("127.0.0.93") as sink:  # Postfix, like us, takes long lines
        smtpd.routes(f":[127.0.0.93]:{sink.port}")
        with _client(smtpd) as client:
            client.sendmail("a@origin.test", ["b@far.test"], f"Subject: html\r\n\r\n{long_line}")
        smtpd.start_engine()
        wait_for(lambda: len(sink.transactions()) == 1)
        assert long_line in sink.transactions()[0]


def test_smtpd_refuses_to_relay_for_peers_outside_relay_networks(home: SendworxHome) -> None:
    home.write_config(smtpd={"relay_networks": ["127.0.0.1/32"]})
    home.start_smtpd()
    with _client(home, source="127.0.0.91") as client:
        client.ehlo("outsider.test")
        client.mail("a@origin.test")
        code, reply = client.rcpt("b@far.test")
    assert (code, reply) == (554, b"5.7.1 Relay access denied")
    with _client(home) as client:
        client.ehlo("insider.test")
        client.mail("a@origin.test")
        assert client.rcpt("b@far.test")[0] == 250


def test_smtpd_limits_recipients_per_message_with_452(home: SendworxHome) -> None:
    home.write_config(smtpd={"max_recipients": 3})
    home.start_smtpd()
    with _client(home) as client:
        client.ehlo("client.test")
        client.mail("a@origin.test")
        codes = [client.rcpt(f"r{n}@far.test")[0] for n in range(4)]
    assert codes == [250, 250, 250, 452]


def test_smtpd_requires_a_domain_in_recipients(smtpd: SendworxHome) -> None:
    with _client(smtpd) as client:
        client.ehlo("client.test")
        client.mail("a@origin.test")
        assert client.rcpt("nodomain")[0] == 553


def test_smtpd_answers_452_and_leaves_nothing_when_the_disk_is_full(home: SendworxHome) -> None:
    queue = home.home / "queue"
    queue.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(queue)])
    if mounted.returncode != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        home.start_smtpd()
        with _client(home) as client:
            client.sendmail("a@origin.test", ["b@far.test"], b"Subject: fits\r\n\r\nsmall\r\n")
            filler = queue / "filler"
            with contextlib.suppress(OSError), filler.open("wb") as handle:
                while True:
                    handle.write(b"\0" * 4096)
                    handle.flush()
            with pytest.raises(smtplib.SMTPDataError) as full:
                client.sendmail(
                    "a@origin.test", ["b@far.test"], b"Subject: x\r\n\r\n" + b"y" * 9000
                )
            assert full.value.smtp_code == 452
            filler.unlink()
            client.sendmail("a@origin.test", ["b@far.test"], b"Subject: again\r\n\r\nok\r\n")
        assert len(home.queue_files("new")) == 2
        assert home.queue_files("tmp") == []
        result = home.sendmail("x@far.test")
        assert result.returncode == 0
    finally:
        home.close()
        subprocess.run(["umount", "-l", str(queue)], check=False)


# -- sendmail ---------------------------------------------------------------------------------


def _queued(home: SendworxHome) -> tuple[dict[str, object], bytes]:
    import json

    [name] = home.queue_files("new")
    raw = (home.home / "queue" / "new" / name).read_bytes()
    _, envelope, content = raw.split(b"\n", 2)
    return json.loads(envelope), content


def test_sendmail_t_takes_recipients_from_headers_and_drops_bcc(home: SendworxHome) -> None:
    message = (
        b"To: One <one@far.test>, two@far.test\n"
        b"Cc: three@far.test\n"
        b"Bcc: secret@far.test,\n  hidden@far.test\n"
        b"Subject: headers\n\nbody\n"
    )
    result = home.sendmail("-t", "-f", "me@origin.test", "extra@far.test", message=message)
    assert result.returncode == 0, result.stderr
    envelope, content = _queued(home)
    assert envelope["sender"] == "me@origin.test"
    assert sorted(envelope["recipients"]) == sorted(  # type: ignore[call-overload]
        [
            "extra@far.test",
            "one@far.test",
            "two@far.test",
            "three@far.test",
            "secret@far.test",
            "hidden@far.test",
        ]
    )
    assert b"Bcc" not in content and b"hidden@far.test" not in content
    parsed = email.message_from_bytes(content)
    assert parsed["Subject"] == "headers"


def test_sendmail_adds_missing_date_message_id_and_from(home: SendworxHome) -> None:
    result = home.sendmail(
        "-f", "me@origin.test", "-F", "Mail Robot", "x@far.test", message=b"Subject: s\n\nb\n"
    )
    assert result.returncode == 0
    _, content = _queued(home)
    parsed = email.message_from_bytes(content)
    assert parsed["From"] == "Mail Robot <me@origin.test>"
    assert parsed["Date"] and parsed["Message-ID"].endswith("@sendworx.test>")


def test_sendmail_keeps_existing_headers(home: SendworxHome) -> None:
    message = b"From: a@b.test\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <keep@me>\n\nb\n"
    assert home.sendmail("x@far.test", message=message).returncode == 0
    parsed = email.message_from_bytes(_queued(home)[1])
    assert (parsed["From"], parsed["Message-ID"]) == ("a@b.test", "<keep@me>")


def test_sendmail_lone_dot_ends_input_unless_i_is_given(home: SendworxHome) -> None:
    message = b"Subject: dots\n\nbefore\n.\nafter\n"
    assert home.sendmail("x@far.test", message=message).returncode == 0
    first = _queued(home)[1]
    assert b"before" in first and b"after" not in first
    for name in home.queue_files("new"):
        (home.home / "queue" / "new" / name).unlink()
    assert home.sendmail("-oi", "x@far.test", message=message).returncode == 0
    assert b"\n.\nafter" in _queued(home)[1]


def test_sendmail_qualifies_bare_user_names(home: SendworxHome) -> None:
    assert home.sendmail("-f", "robot", "alice").returncode == 0
    envelope, _ = _queued(home)
    assert envelope["sender"] == "robot@sendworx.test"
    assert envelope["recipients"] == ["alice@sendworx.test"]


@pytest.mark.parametrize(
    ("arguments", "status"),
    [
        ((), 64),
        (("-q",), 64),
        (("-f",), 64),
        (("evil@far.test\r\nRCPT TO:<other@far.test>",), 65),
        (("bell\x07@far.test",), 65),
        (("a b@far.test",), 65),
        (("x" * 400 + "@far.test",), 65),
        (("@far.test",), 65),
    ],
)
def test_sendmail_rejects_bad_invocations_with_sysexits(
    home: SendworxHome, arguments: tuple[str, ...], status: int
) -> None:
    result = subprocess.run(
        home.command("sendmail", *arguments), input=b"Subject: x\n\ny\n", capture_output=True
    )
    assert result.returncode == status, result.stderr
    assert home.queue_files("new") == []
    assert b"Traceback" not in result.stderr


def test_sendmail_handles_many_recipients_headerless_and_binary_messages(
    home: SendworxHome,
) -> None:
    recipients = [f"user{n}@bulk.test" for n in range(1200)]
    binary = bytes(range(256)) * 40
    with RecordingSink("127.0.0.92") as sink:
        home.routes(f":[127.0.0.92]:{sink.port}")
        home.start_engine()
        assert home.sendmail("-i", *recipients, message=b"no headers at all\n").returncode == 0
        assert home.sendmail("-i", "bin@far.test", message=binary).returncode == 0
        eight_bit = "Subject: Grüße\nX-Note: naïve\n\ncafé\n".encode()
        assert home.sendmail("-i", "utf8@far.test", message=eight_bit).returncode == 0
        wait_for(lambda: len(sink.recipients()) == 1202, timeout=60)
        wait_for(home.queue_empty)
    transactions = [m for m in sink.received() if m.recipients[0].startswith("user")]
    assert len(transactions) == 24  # 1200 recipients, 50 per transaction
    eight = next(m for m in sink.received() if m.recipients == ("utf8@far.test",))
    assert "Subject: Grüße".encode() in eight.content


def test_queue_files_are_never_left_half_written_by_a_killed_sendmail(
    home: SendworxHome, tmp_path: Path
) -> None:
    process = subprocess.Popen(home.command("sendmail", "-i", "x@far.test"), stdin=subprocess.PIPE)
    assert process.stdin is not None
    process.stdin.write(b"Subject: never finished\n\n" + b"z" * 100_000)
    process.kill()
    process.wait()
    assert home.queue_files("new") == []
    assert home.queue_files("mess") == []


def _workers(parent: int) -> list[int]:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(child) for child in children]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _forking(parent: subprocess.Popen[bytes]) -> bool:
    return parent.poll() is not None or len(_workers(parent.pid)) >= 1


def _submit(home: SendworxHome) -> None:
    with _client(home) as client:
        client.sendmail("a@origin.test", ["b@far.test"], b"Subject: w\r\n\r\nw\r\n")


def test_smtpd_runs_workers_and_replaces_one_that_dies(home: SendworxHome) -> None:
    home.write_config(smtpd={"workers": 3})
    parent = home.start_smtpd()
    wait_for(lambda: len(_workers(parent.pid)) == 3)
    victim = _workers(parent.pid)[0]
    os.kill(victim, 9)
    wait_for(lambda: victim not in _workers(parent.pid) and len(_workers(parent.pid)) == 3)
    for _ in range(6):
        _submit(home)
    assert len(home.queue_files("new")) == 6
    assert "starting another" in home.log_text("smtpd")


def test_smtpd_workers_die_with_their_parent_and_stop_with_it(home: SendworxHome) -> None:
    home.write_config(smtpd={"workers": 2})
    parent = home.start_smtpd()
    wait_for(lambda: len(_workers(parent.pid)) == 2)
    workers = _workers(parent.pid)
    home.kill(parent)
    wait_for(lambda: not any(_alive(worker) for worker in workers))
    wait_for(lambda: not port_open("127.0.0.1", home.smtpd_port))  # nothing holds the port
    replacement = home.start_smtpd()
    _submit(home)
    wait_for(lambda: len(_workers(replacement.pid)) == 2)
    workers = _workers(replacement.pid)
    assert home.stop(replacement) == 0
    assert not any(_alive(worker) for worker in workers)


def test_smtpd_stopped_while_its_workers_start_stops_them_all(home: SendworxHome) -> None:
    """A SIGTERM that reaches the listener while it forks its workers stops every one: a
    worker that got it before its own handler was set once ran the parent's and served on."""
    home.write_config(smtpd={"workers": 4})
    for _ in range(8):
        parent = home.spawn("smtpd")
        wait_for(functools.partial(_forking, parent), timeout=15)
        workers = _workers(parent.pid) if parent.poll() is None else []
        assert home.stop(parent) == 0
        assert not any(_alive(worker) for worker in workers)


def test_a_reload_while_workers_start_reaches_every_worker(home: SendworxHome) -> None:
    """SIGHUP (systemctl reload, an API update) that reaches a worker before its event loop
    takes the signal is kept for it, not dropped: every worker greets with the new name."""
    home.write_config(smtpd={"workers": 4})

    def greeting() -> bytes:
        with smtplib.SMTP("127.0.0.1", home.smtpd_port, timeout=10) as client:
            return bytes(client.ehlo("client.test")[1].split(b"\n")[0])

    def all_greet_as(wanted: set[bytes]) -> bool:
        return {greeting() for _ in range(24)} == wanted

    def all_started(parent: subprocess.Popen[bytes]) -> bool:
        return len(_workers(parent.pid)) == 4 and port_open("127.0.0.1", home.smtpd_port)

    for number in range(5):
        home.set_control("me", f"before{number}.test\n")
        parent = home.spawn("smtpd")
        wait_for(functools.partial(_forking, parent), timeout=15)
        home.set_control("me", f"after{number}.test\n")
        parent.send_signal(signal.SIGHUP)
        wait_for(functools.partial(all_started, parent))
        # A worker may greet once or twice before its loop takes the signal; then never again.
        wanted = {f"after{number}.test".encode()}
        wait_for(functools.partial(all_greet_as, wanted), timeout=10)
        assert home.stop(parent) == 0


def test_smtpd_restarted_at_once_waits_for_its_dead_workers_port(home: SendworxHome) -> None:
    """After a kill -9 of the listener its workers hold the port until they die, a moment
    after the pid lock is free: a listener started at once (systemd's restart, an operator)
    waits for the port instead of failing; one that stays taken is a clear error."""
    with socket.create_server(("127.0.0.1", home.smtpd_port)):  # as a dying worker would
        starting = home.spawn("smtpd")
        wait_for(lambda: "is in use; waiting up to 3 s" in home.log_text("smtpd"))
    wait_for(lambda: port_open("127.0.0.1", home.smtpd_port))
    _submit(home)
    assert starting.poll() is None
    home.stop(starting)
    with socket.create_server(("127.0.0.1", home.smtpd_port)):  # someone else's, for good
        refused = subprocess.run(home.command("smtpd"), capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1
    assert f"cannot listen on 127.0.0.1 port {home.smtpd_port}: [Errno 98]" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_smtpd_answers_a_pipelined_transaction_in_one_go(smtpd: SendworxHome) -> None:
    """PIPELINING (RFC 2920): MAIL, RCPT and DATA in one write, then the data and QUIT in
    another; every reply comes, in order, and the message is queued once."""
    with socket.create_connection(("127.0.0.1", smtpd.smtpd_port), timeout=10) as raw:
        stream = raw.makefile("rwb")
        assert stream.readline().startswith(b"220 ")
        stream.write(b"EHLO client.test\r\n")
        stream.flush()
        assert b"250-PIPELINING\r\n" in smtp_reply(stream)
        stream.write(
            b"MAIL FROM:<a@origin.test>\r\nRCPT TO:<b@far.test>\r\nRCPT TO:<c>\r\nDATA\r\n"
        )
        stream.flush()
        codes = [smtp_reply(stream)[-1][:4] for _ in range(4)]
        assert codes == [b"250 ", b"250 ", b"553 ", b"354 "]
        stream.write(b"Subject: piped\r\n\r\n..dot\r\n.\r\nNOOP\r\nQUIT\r\n")
        stream.flush()
        queued, noop, bye = (smtp_reply(stream)[-1] for _ in range(3))
        assert queued.startswith(b"250 2.0.0 Ok: queued as ")
        assert (noop, bye) == (b"250 2.0.0 Ok\r\n", b"221 2.0.0 Bye\r\n")
        assert stream.readline() == b""  # closed after QUIT
    [message_id] = smtpd.queue_files("new")
    assert queued.rstrip().endswith(message_id.encode())
    assert (smtpd.home / "queue" / "new" / message_id).read_bytes().endswith(b"\r\n.dot\r\n")


def test_smtpd_cuts_a_silent_client_with_421(home: SendworxHome) -> None:
    home.write_config(smtpd={"idle_timeout_seconds": 1})
    home.start_smtpd()
    with socket.create_connection(("127.0.0.1", home.smtpd_port), timeout=10) as raw:
        stream = raw.makefile("rwb")
        assert stream.readline().startswith(b"220 ")
        started = time.monotonic()
        assert stream.readline().startswith(b"421 4.4.2 ")
        assert 0.9 < time.monotonic() - started < 5
        assert stream.readline() == b""
