"""DKIM signing end to end: mail handed in through every door is signed once, at the door, for
the accounts a key allows, and what a real SMTP server receives verifies with dkimpy and with
OpenDKIM against records served by a DNS server on loopback. The keys' controller refuses
hostile input and changes nothing; a rotation's pending key is never used before DNS shows it.
"""

from __future__ import annotations

import os
import smtplib
import subprocess
from pathlib import Path

import dkim
import dns.resolver
import pytest
from support.accounts import NOBODY, as_user, run_client
from support.dns_server import DNSServer
from support.instance import SendworxHome
from support.opendkim_check import opendkim_results
from support.sink import Received, RecordingSink

from sendworx.shared.dkim_keys import KeyStore, Origins

DAEMON = 1  # Debian's `daemon` account: the customer who owns shop.example


# Domains under .example: OpenDKIM resolves through libunbound, which answers every name
# under .test itself (NXDOMAIN, RFC 6761's special-use names) and never asks our server.


def _dkimpy(message: bytes, dns_port: int) -> list[bool]:
    """dkimpy's verdict on each signature, its keys looked up in the test's DNS server."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port = ["127.0.0.1"], dns_port

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        try:
            answer = resolver.resolve(name.decode(), "TXT")
        except dns.resolver.NXDOMAIN:
            return b""
        return b"".join(b"".join(rdata.strings) for rdata in answer)

    checker = dkim.DKIM(message)
    verdicts = []
    for index in range(message.count(b"DKIM-Signature:")):
        try:
            verdicts.append(bool(checker.verify(idx=index, dnsfunc=lookup)))
        except dkim.ValidationError:
            verdicts.append(False)
    return verdicts


def _client(home: SendworxHome, client: Path, uid: int, message: bytes) -> None:
    done = run_client(home, client, "-t", "-i", message=message, uid=uid)
    assert (done.returncode, done.stderr) == (0, b"")


def _by_subject(received: list[Received]) -> dict[str, bytes]:
    found = {}
    for message in received:
        for line in message.content.split(b"\r\n"):
            if line.startswith(b"Subject: "):
                found[line[9:].decode()] = message.content
    return found


def test_every_door_signs_for_the_accounts_a_key_allows_and_both_verifiers_agree(
    open_home: SendworxHome, dns_server: DNSServer, sendmail_client: Path
) -> None:
    home = open_home
    store = KeyStore(home.instance.dkim_dir)
    owners = Origins(accounts=("daemon",))
    rsa = store.add("shop.example", selector="rsa", origins=owners)
    ed = store.add(
        "shop.example", selector="ed", algorithm="ed25519", origins=owners, pending=False
    )
    records = dns_server.publish_dkim(rsa, ed)
    home.write_config(smtpd={"workers": 1})
    home.start_submitd()
    home.start_smtpd()
    for directory in (home.home, home.instance.run_dir):
        directory.chmod(0o711)
    shop = "From: Shop <orders@shop.example>\nTo: buyer@far.test\nSubject: {}\n\n{}\n"
    # The owner's site, through sendmail (LF line ends, trailing blanks, 8-bit text).
    _client(home, sendmail_client, DAEMON, shop.format("owner", "Merci  \n\n\ncafé").encode())
    # Another account claiming the shop's domain: no signature for it.
    _client(home, sendmail_client, NOBODY, shop.format("intruder", "fake").encode())

    def smtp_as(subject: str) -> str:
        with smtplib.SMTP("127.0.0.1", home.smtpd_port, timeout=10) as smtp:
            text = shop.format(subject, "over smtp").replace("\n", "\r\n")
            smtp.sendmail("orders@shop.example", ["buyer@far.test"], text.encode())
        return "sent"

    assert as_user(DAEMON, lambda: smtp_as("owner over smtp")) == "sent"
    assert as_user(NOBODY, lambda: smtp_as("intruder over smtp")) == "sent"
    smtp_as("root over smtp")  # the host itself may sign as any of its domains
    queued = {
        content.split(b"Subject: ")[1].split(b"\n")[0].strip().decode(): content
        for _, content in home.queued()
    }
    assert {subject: body.count(b"DKIM-Signature:") for subject, body in queued.items()} == {
        "owner": 2,
        "intruder": 0,
        "owner over smtp": 2,
        "intruder over smtp": 0,
        "root over smtp": 2,
    }
    with RecordingSink("127.0.0.77") as sink:
        home.routes(f"far.test:[127.0.0.77]:{sink.port}")
        home.start_engine()
        received = _by_subject(sink.wait_for_messages(5))
    for subject in ("owner", "owner over smtp", "root over smtp"):
        message = received[subject]
        assert _dkimpy(message, dns_server.port) == [True, True], subject
        assert opendkim_results(message, records) == ["pass", "pass"], subject
        # Signed once at the door: what went out is what was queued, signatures and all.
        assert message.count(b"DKIM-Signature:") == 2
    assert b"DKIM-Signature" not in received["intruder"]
    assert home.instance.log_dir is not None
    submitd_log = (home.instance.log_dir / "submitd.log").read_text()
    assert "not signed: account nobody may not sign as shop.example" in submitd_log


def test_a_pending_key_signs_nothing_until_dns_shows_it_and_mail_verifies_at_every_step(
    panel_home: SendworxHome, dns_server: DNSServer
) -> None:
    """A rotation: mail before (old key), during (the new one pending: still the old key),
    after the switch (the new key) verifies against the records published at each step;
    finishing before the record is published is refused and changes nothing."""
    home = panel_home
    published: dict[str, str] = {}

    def run(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            home.command("dkim", *arguments), capture_output=True, text=True, timeout=60
        )

    assert run("add", "shop.example", "--selector", "old", "--any").returncode == 0
    store = KeyStore(home.instance.dkim_dir)
    [old] = store.of_domain("shop.example")
    published |= dns_server.publish_dkim(old)
    with RecordingSink("127.0.0.78") as sink:
        home.routes(f"shop.example:[127.0.0.78]:{sink.port}", f"far.test:[127.0.0.78]:{sink.port}")
        home.start_engine()
        home.inject("x@far.test", sender="a@shop.example", body="before")
        started = run("rotate", "shop.example", "start", "--selector", "new", "--json")
        assert started.returncode == 0, started.stderr
        home.inject("x@far.test", sender="a@shop.example", body="during")
        early = run("rotate", "shop.example", "finish")
        assert early.returncode == 1 and "missing in DNS" in early.stderr
        assert [key.state for key in store.of_domain("shop.example")] == ["active", "pending"]
        [_, new] = store.of_domain("shop.example")
        published |= dns_server.publish_dkim(new)
        assert run("check", "shop.example").returncode == 0
        assert run("rotate", "shop.example", "finish").returncode == 0
        home.inject("x@far.test", sender="a@shop.example", body="after")
        messages = sink.wait_for_messages(3)
    selectors = []
    for message in messages:
        assert _dkimpy(message.content, dns_server.port) == [True]
        assert opendkim_results(message.content, published) == ["pass"]
        selectors.append(message.content.split(b" s=")[1].split(b";")[0].decode())
    assert selectors == ["old", "old", "new"]
    assert [key.state for key in store.of_domain("shop.example")] == ["retiring", "active"]


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        (("add", "shop\x01.test"), "domain"),
        (("add", "../../etc"), "domain"),
        (("add", "shop.example", "--selector", "../x"), "selector"),
        (("add", "shop.example", "--bits", "512"), "bits"),
        (("add", "shop.example", "--account", "Bad Name!"), "origins"),
        (("add", "shop.example", "--import", "{broken}"), "key"),
    ],
)
def test_hostile_input_gets_status_11_and_changes_nothing(
    panel_home: SendworxHome, tmp_path: Path, arguments: tuple[str, ...], field: str
) -> None:
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    argv = [argument.replace("{broken}", str(broken)) for argument in arguments]
    done = subprocess.run(
        panel_home.command("dkim", *argv), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert f"{field}: " in done.stderr
    assert KeyStore(panel_home.instance.dkim_dir).all_keys() == []


@pytest.fixture
def panel_home(home: SendworxHome) -> SendworxHome:
    """An instance whose users exist (the dkim command acts as the local operator), without
    the host key `init` makes, so each test starts from no key at all."""
    subprocess.run(home.command("init"), check=True, capture_output=True, timeout=60)
    store = KeyStore(home.instance.dkim_dir)
    for key in store.all_keys():
        store.delete(key.domain)
    assert os.path.isdir(home.instance.dkim_dir)
    return home
