"""What an attacker, a hostile peer and a careless operator try, collected by class.

Each section is one class of attack against real processes; a new case of a class goes into
its section, so the next attacker finds the class already covered.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import smtplib
import socket
import subprocess
import threading
import time
import xmlrpc.client
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.accounts import NOBODY, as_user
from support.instance import SendworxHome
from support.net import connection_held_by, free_port, smtp_reply, wait_for
from support.panel import SEND, Panel, control_file
from support.raw_server import RawServer
from support.sink import RecordingSink

from sendworx.client import AsyncClient, BadResponse, Client, calls
from sendworx.shared import unix_sockets
from sendworx.shared.queue_format import Envelope
from sendworx.transports import soap

# -- parsers: no XML parser of ours opens a file or a URL, in any encoding --------------------


def _release(fifo: Path) -> None:
    with contextlib.suppress(OSError):  # ENXIO: nobody is stuck reading it, as it should be
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


@contextlib.contextmanager
def _fifo(directory: Path) -> Iterator[Path]:
    """A FIFO that blocks whoever opens it for reading. A watchdog lets a stuck reader go after
    10 s, so a parser that opened it fails the test's time limit instead of hanging it."""
    path = directory / "trap.fifo"
    os.mkfifo(path)
    watchdog = threading.Timer(10, _release, (path,))
    watchdog.start()
    try:
        yield path
    finally:
        watchdog.cancel()
        _release(path)


def _hostile(target: Path, encoding: str, document: str) -> bytes:
    doctype = f'<!DOCTYPE r [<!ENTITY % p SYSTEM "{target.as_uri()}"> %p;]>'
    return f'<?xml version="1.0" encoding="{encoding}"?>{doctype}{document}'.encode(encoding)


XMLRPC_CALL = (
    "<methodCall><methodName>iworx.route</methodName><params><param><value>k</value></param>"
    "<param><value>/nodeworx/mail/send</value></param><param><value>isRunning</value></param>"
    "</params></methodCall>"
)


def _post_xmlrpc(panel: Panel, body: bytes) -> str:
    with pytest.raises(xmlrpc.client.Fault) as fault:
        xmlrpc.client.loads(panel.post(body))
    return fault.value.faultString


def _post_soap(panel: Panel, body: bytes) -> str:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", panel.http_port, timeout=10)
    connection.request("POST", "/soap", body, {"Content-Type": "text/xml; charset=utf-16"})
    response = connection.getresponse()
    assert response.status == 500  # a SOAP 1.1 Client fault
    return response.read().decode()


@pytest.mark.parametrize("encoding", ["UTF-16", "UTF-32", "UTF-8"])
def test_the_panel_opens_no_file_a_request_names(
    shared_panel: Panel, tmp_path: Path, encoding: str
) -> None:
    envelope = _hostile_envelope()
    with _fifo(tmp_path) as fifo:
        for post, document in ((_post_xmlrpc, XMLRPC_CALL), (_post_soap, envelope)):
            answers = set()
            for target in (
                fifo,  # opening it would freeze the shared_panel
                shared_panel.home.home / "panel" / "master.key",
                Path("/etc/passwd"),
                tmp_path / "missing",
            ):
                started = time.monotonic()
                answers.add(post(shared_panel, _hostile(target, encoding, document)))
                assert time.monotonic() - started < 5
            assert len(answers) == 1, answers  # no file-existence oracle
            assert "DTDs and entity declarations are not allowed" in answers.pop()
    assert shared_panel.call("isRunning")["status"] == 0


# -- cluster peer: a node (or what answers as one) cannot freeze, redirect or probe the manager ---


def _hostile_envelope() -> str:
    return (
        f'<e:Envelope xmlns:e="{soap.SOAP_11.envelope}"><e:Body><route><apikey>k</apikey>'
        "<ctrl_name>/nodeworx/mail/send</ctrl_name><action>isRunning</action></route>"
        "</e:Body></e:Envelope>"
    )


def test_a_node_answering_with_a_dtd_freezes_no_client(tmp_path: Path) -> None:
    """The cluster manager reads its nodes' replies with the same reader: same refusal."""
    with _fifo(tmp_path) as fifo:
        reply = _hostile(fifo, "UTF-16", "<methodResponse><params/></methodResponse>")

        async def node(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            await reader.read(65536)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(reply), reply)
            )
            await writer.drain()

        with RawServer(node) as server:
            url = f"http://127.0.0.1:{server.port}"
            started = time.monotonic()
            with Client(url, "key", timeout=5) as client, pytest.raises(BadResponse) as refused:
                client.run(calls.is_running())
            assert "DTDs and entity declarations are not allowed" in str(refused.value)

            async def asynchronous() -> None:
                async with AsyncClient(url, "key", timeout=5) as client:
                    with pytest.raises(BadResponse):
                        await client.run(calls.is_running())

            asyncio.run(asynchronous())
            assert time.monotonic() - started < 5


def _http_node(reply_head: bytes, body: bytes, chunks: int = 1) -> RawServer:
    """A node answering every request with this status line and headers, then `body`
    `chunks` times."""

    async def node(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        await reader.readexactly(int(length[1]) if length else 0)
        writer.write(reply_head)
        for _ in range(chunks):
            writer.write(body)
            await writer.drain()

    return RawServer(node)


def _route_reply(struct: str) -> bytes:
    document = f"<methodResponse><params><param><value><struct>{struct}</struct></value>"
    return (document + "</param></params></methodResponse>").encode()


def test_a_node_cannot_redirect_the_manager_or_fill_its_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 307 is never followed (the key would go where the node says, in clear text); a
    reply over the cap is refused before it is all read; a reply with a status that is not
    an integer is that node's own bad response in a cascade, never an error for the call."""
    from sendworx.client import clients
    from sendworx.cluster.manager import ClusterManager
    from sendworx.cluster.store import Node, NodeStore
    from sendworx.panel.tls import ensure_certificates

    monkeypatch.setattr(clients, "MAX_REPLY_BYTES", 1024 * 1024)
    # A certificate to pin (plain-HTTP nodes never present it; the client wants one).
    certificate = ensure_certificates(tmp_path / "tls", ["node.test"]).certificate.read_text()
    seen_by_target: list[bytes] = []

    async def target(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen_by_target.append(await reader.read(65536))

    malformed = _route_reply(
        "<member><name>status</name><value><string>zero</string></value></member>"
        "<member><name>payload</name><value><string>x</string></value></member>"
    )
    with RawServer(target) as elsewhere:
        redirect = (
            f"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{elsewhere.port}"
            "/xmlrpc\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ).encode()
        huge = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 400000000\r\n\r\n"
        odd = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % len(malformed)
        )
        with (
            _http_node(redirect, b"") as redirecting,
            _http_node(huge, b"x" * 65536, chunks=64) as flooding,
            _http_node(odd, malformed) as confused,
        ):
            store = NodeStore(tmp_path / "nodes.json")
            for name, server in (("r", redirecting), ("f", flooding), ("c", confused)):
                url = f"http://127.0.0.1:{server.port}"
                store.add(Node(f"{name}.test", url, "SECRET-KEY", certificate, "ab"))

            async def cascade() -> dict[str, object]:
                manager = ClusterManager(store, "manager.test", timeout=10)
                try:
                    return await manager.cascade("done here", calls.is_running())
                finally:
                    await manager.aclose()

            results = asyncio.run(cascade())
    assert results["manager.test"] == {"status": 0, "payload": "done here"}
    redirected = results["r.test"]
    assert isinstance(redirected, dict) and redirected["status"] == 1
    assert str(redirected["payload"]).startswith("HTTP 307 from http://127.0.0.1:")
    assert results["f.test"] == {"status": 1, "payload": "the reply is larger than 1 MB"}
    assert results["c.test"] == {
        "status": 1,
        "payload": "the reply's status or reply_code is not an integer",
    }
    assert seen_by_target == []  # the key never went where the redirect pointed


def test_registering_a_node_is_no_port_scanner_and_starves_no_thread_pool(
    tmp_path: Path,
) -> None:
    """A closed port, a port speaking plain text and one that never answers the handshake all
    get the same reason; eight slow registrations at once leave the thread pool (where the
    API's own work runs) free."""
    from sendworx.cluster.errors import RegistrationRefused
    from sendworx.cluster.manager import ClusterManager
    from sendworx.cluster.store import NodeStore

    async def chatty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 not TLS at all\r\n")
        await writer.drain()
        await reader.read()

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    with RawServer(chatty) as text, RawServer(mute) as silent:
        closed = free_port()
        manager = ClusterManager(NodeStore(tmp_path / "nodes.json"), "manager.test", timeout=2)

        async def reasons() -> tuple[set[str], float]:
            async def refused(port: int) -> str:
                with pytest.raises(RegistrationRefused) as why:
                    await manager.register(f"127.0.0.1:{port}", "key")
                return str(why.value).replace(f"127.0.0.1:{port}", "NODE")

            slow = [asyncio.create_task(refused(silent.port)) for _ in range(8)]
            await asyncio.sleep(0.2)
            started = time.monotonic()
            await asyncio.to_thread(lambda: None)  # the API's scrypt and index work run here
            waited = time.monotonic() - started
            answers = {await refused(closed), await refused(text.port)}
            answers.update([await task for task in slow])
            await manager.aclose()
            return answers, waited

        answers, waited = asyncio.run(reasons())
    assert answers == {"NODE is not a sendworx node answering over TLS (see the panel log)"}
    assert waited < 0.5


# -- envelope and body: what senders choose never reaches the wire, a log or a header raw -----

BAD_DOMAINS = ["[a..b]", "[999.1.1.1]", "[::1]", "[IPv6:127.0.0.1]", "[tag:x]", "[1.2.3.4", "a..b"]


def _smtp(home: SendworxHome) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", home.smtpd_port, timeout=10)


def test_smtpd_refuses_a_domain_that_names_no_host_or_address(home: SendworxHome) -> None:
    home.start_smtpd()
    with _smtp(home) as client:
        client.ehlo("client.test")
        for domain in BAD_DOMAINS:  # sent as they are: smtplib's quoting would mend some
            assert client.docmd(f"MAIL FROM:<a@{domain}>")[0] // 100 == 5, domain
            assert client.docmd("MAIL FROM:<a@origin.test>")[0] == 250
            assert client.docmd(f"RCPT TO:<x@{domain}>")[0] // 100 == 5, domain
            client.rset()
        client.mail("a@origin.test")
        for good in ("x@[127.0.0.1]", "x@[IPv6:::1]", "x@[IPv6:2001:db8::1]", "x@far.test"):
            assert client.docmd(f"RCPT TO:<{good}>")[0] == 250, good
    assert home.queue_empty()


def test_sendmail_refuses_them_with_exit_65(home: SendworxHome) -> None:
    for domain in BAD_DOMAINS:
        result = home.sendmail(f"x@{domain}")
        assert result.returncode == 65, (domain, result.stderr)
        assert home.sendmail("-f", f"a@{domain}", "x@example.test").returncode == 65
    assert home.queue_empty()


def test_mail_queued_for_nowhere_fails_and_never_stops_other_delivery(
    home: SendworxHome, sink_port: int
) -> None:
    """Queue files from before injection checked literals: each such recipient fails at once
    with a bounce; a handful of them (more than max_active_messages) stop nothing."""
    home.write_config(delivery={"max_active_messages": 2})
    with RecordingSink("127.0.2.1", sink_port) as sink, RecordingSink("127.0.2.2") as origin:
        home.routes(f"origin.test:[127.0.2.2]:{origin.port}", f"far.test:[127.0.2.1]:{sink_port}")
        for _ in range(4):
            home.enqueue("x@[a..b]")  # the injectors' own queue code, without their checks
        home.enqueue("good@[127.0.2.1]", "bad@[a..b]", "worse@a..b")
        home.enqueue("other@far.test")
        engine = home.start_engine()
        sink.wait_for_messages(2)
        bounces = origin.wait_for_messages(5)
        wait_for(home.queue_empty)
        assert home.stop(engine) == 0
        home.start_engine()  # a restart sends nothing again
        time.sleep(1)
    assert sorted(sink.recipients()) == ["good@[127.0.2.1]", "other@far.test"]
    assert len(bounces) == 5 and {b.recipients for b in bounces} == {("sender@origin.test",)}
    failed = [line for line in home.deliveries() if line["result"] == "failed"]
    assert {line["rcpt"] for line in failed} == {"x@[a..b]", "bad@[a..b]", "worse@a..b"}
    assert all(line["status"] == "5.1.3" for line in failed)


def test_control_characters_in_envelope_addresses_never_reach_the_wire(
    home: SendworxHome, sink_port: int
) -> None:
    """smtpd answers 501 for a CR or NUL inside MAIL FROM or RCPT TO; a queue file that
    holds one anyway (written before the check) fails that recipient with 5.1.3, and the
    body's bare CR and NUL are normalised on the way out."""
    home.start_smtpd()
    with socket.create_connection(("127.0.0.1", home.smtpd_port), timeout=10) as raw:
        stream = raw.makefile("rwb")
        stream.readline()
        for command, expected in (
            (b"EHLO client.test\r\n", b"250 "),
            (b"MAIL FROM:<a\rRCPT TO:<x@far.test>@origin.test>\r\n", b"501 "),
            (b"MAIL FROM:<a\x00b@origin.test>\r\n", b"501 "),
            (b"MAIL FROM:<\xff@origin.test>\r\n", b"500 "),  # not UTF-8: not queueable
            (b"MAIL FROM:<a@origin.test>\r\n", b"250 "),
            (b"RCPT TO:<x\rDATA\r@far.test>\r\n", b"501 "),
            (b"RCPT TO:<x\x00@far.test>\r\n", b"501 "),
        ):
            stream.write(command)
            stream.flush()
            reply = smtp_reply(stream)[-1]
            assert reply.startswith(expected), (command, reply)
    assert home.queue_empty()
    with RecordingSink("127.0.2.1", sink_port) as sink:
        home.routes(f"far.test:[127.0.2.1]:{sink_port}")
        envelope = Envelope("a@origin.test", ("bad\rRSET\r@far.test", "good@far.test"), time.time())
        home.instance.queue().inject(envelope, b"Subject: x\r\n\r\none\rtwo\x00three\r\n")
        home.start_engine()
        [message] = sink.wait_for_messages(1)
        wait_for(home.queue_empty)
    assert message.recipients == ("good@far.test",)
    assert b"one\r\ntwo" in message.content and b"\x00" not in message.content
    assert re.search(rb"\r(?!\n)", message.content) is None
    [failed] = [line for line in home.deliveries() if line["rcpt"] == "bad\rRSET\r@far.test"]
    assert failed["result"] == "failed" and failed["status"] == "5.1.3"
    assert "control characters" in failed["reply"]


def test_sendmail_refuses_a_full_name_that_would_add_header_lines(home: SendworxHome) -> None:
    result = home.sendmail("-F", "Eve\nBcc: victim@far.test", "x@far.test")
    assert result.returncode == 65 and b"control characters" in result.stderr
    assert home.queue_empty()


def test_what_senders_choose_reaches_smtpd_log_escaped(home: SendworxHome) -> None:
    """A right-to-left override (printable to smtpd, not to a terminal) in a sender address
    is logged as a JSON escape, like every address in send.log."""
    home.start_smtpd()
    with smtplib.SMTP("127.0.0.1", home.smtpd_port, timeout=10) as client:
        client.ehlo("client.test")
        client.sendmail("ev\u202eil@origin.test", ["x@far.test"], b"hi", mail_options=["SMTPUTF8"])
    wait_for(lambda: "queued id=" in home.log_text("smtpd"))
    logged = home.log_text("smtpd")
    assert 'from="ev\\u202eil@origin.test"' in logged and "\u202e" not in logged


# -- settings writes: all or nothing, one writer at a time, never a crash ---------------------


def _json_update(panel: Panel, body: bytes) -> httpx.Response:
    """An `update` as raw JSON: JSON can carry what XML cannot (a lone surrogate, \u0000)."""
    return httpx.post(
        f"http://127.0.0.1:{panel.http_port}/api/v1{SEND}/update",
        content=body,
        headers={"Authorization": "Bearer " + " ".join(panel.key.split())},
        timeout=60,
    )


def test_a_bad_route_anywhere_writes_no_file_at_all(panel: Panel) -> None:
    before = {name: control_file(panel.home, name) for name in ("concurrencyremote", "smtproutes")}
    for route in (
        r"a.test:[fe80::1%\ud800]",  # a lone surrogate in an IPv6 zone (was HTTP 500, half written)
        r"a.test:[fe80::1%eth0\u0000]",
        "a.test:[fe80::1%e#;:[]",
        r"a.test:relay.test:\u00b2",  # a superscript digit: isdigit(), but int() refuses it
    ):
        body = ('{"concurrency_remote": 7, "smtp_routes": ["' + route + '"]}').encode()
        response = _json_update(panel, body)
        assert response.status_code == 400, (route, response.text)
        assert response.json()["errors"][0]["field"] == "smtp_routes", response.text
    assert {name: control_file(panel.home, name) for name in before} == before


def test_a_garbled_routes_file_is_skipped_line_by_line_not_fatal(home: SendworxHome) -> None:
    home.set_control("smtproutes", "a.test:relay.test:\u00b2\nb.test:[fe80::1%eth0]\n")
    home.start_engine()
    assert home.status()["settings"]["smtp_routes"] == ["b.test:[fe80::1%eth0]"]
    assert "smtproutes line 1 skipped" in home.log_text()


def test_routes_are_stored_as_they_were_written(panel: Panel) -> None:
    reply = panel.call("update", {"smtp_routes": ":127.0.0.1:2525\r\nB.test:[::1]\r\n"})
    assert reply["status"] == 0
    assert control_file(panel.home, "smtproutes") == ":127.0.0.1:2525\nB.test:[::1]\n"
    routes = panel.call("queryUpdate")["payload"]["smtp_routes"]
    assert routes == [":127.0.0.1:2525", "B.test:[::1]"]


def test_a_flood_of_routes_is_refused_without_stalling_other_calls(panel: Panel) -> None:
    routes = [f"d{number}.test:relay{number}.test" for number in range(200_000)]
    body = json.dumps({"smtp_routes": routes}).encode()
    answers: list[float] = []
    refused: list[httpx.Response] = []
    sender = threading.Thread(target=lambda: refused.append(_json_update(panel, body)))
    sender.start()
    while sender.is_alive():
        started = time.monotonic()
        assert panel.call("isRunning")["status"] == 0
        answers.append(time.monotonic() - started)
    sender.join()
    [response] = refused
    assert response.status_code == 400 and "at most 10000 routes" in response.text
    assert answers and max(answers) < 1.0, answers  # the event loop was never held for long
    assert control_file(panel.home, "smtproutes") is None


@contextlib.contextmanager
def _writers_lock(control_dir: Path) -> Iterator[None]:
    """What every writer of control files holds while it updates: a flock on the directory."""
    fd = os.open(control_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def test_writers_in_different_processes_leave_the_files_of_one_of_them(panel: Panel) -> None:
    """The panel and the in-process command line (`sendworx settings set`) write at once."""
    commands = [
        subprocess.Popen(
            panel.home.command(
                "settings", "set", f"concurrency_remote={number}", f"timeout_remote={number + 100}"
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for number in range(1, 13)
    ]

    def update_until_the_commands_end(offset: int) -> None:
        number = offset
        while any(command.poll() is None for command in commands):
            number = number % 50 + 500 + offset
            values = {"concurrency_remote": number, "timeout_remote": number + 100}
            assert panel.call("update", values)["status"] == 0
            number += 4

    mixed: list[tuple[str | None, str | None]] = []

    def read_under_the_writers_lock() -> None:
        """Whenever no writer is in the middle of an update, the files are one request's."""
        while any(command.poll() is None for command in commands):
            with _writers_lock(panel.home.instance.control_dir):
                pair = (
                    control_file(panel.home, "concurrencyremote"),
                    control_file(panel.home, "timeoutremote"),
                )
            if pair[0] is not None and pair[1] != f"{int(pair[0]) + 100}\n":
                mixed.append(pair)

    threads = [threading.Thread(target=update_until_the_commands_end, args=(n,)) for n in range(4)]
    threads.append(threading.Thread(target=read_under_the_writers_lock))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for command in commands:
        assert command.wait(60) == 0, command.stderr
    assert not mixed, mixed[:5]
    concurrency = int(control_file(panel.home, "concurrencyremote") or "0")
    assert control_file(panel.home, "timeoutremote") == f"{concurrency + 100}\n"


# -- the pages: forms and queries nobody's browser would send ----------------------------------


def _page_session(panel: Panel) -> tuple[httpx.Client, str]:
    """A logged-in client of the pages and its CSRF token."""
    base = f"http://127.0.0.1:{panel.http_port}"
    client = httpx.Client(base_url=base, timeout=30)
    login = client.get("/login")
    token = login.text.split('name="token" value="')[1].split('"')[0]
    reply = client.post(
        "/login", data={"token": token, "email": panel.email, "password": panel.password}
    )
    assert reply.status_code == 303, reply.text
    page = client.get("/nodeworx/mail/mta")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    return client, csrf


def test_hostile_forms_change_nothing_and_get_a_page(panel: Panel) -> None:
    client, csrf = _page_session(panel)
    before = control_file(panel.home, "concurrencyremote")
    try:
        # Far too large: the panel's own limit, a page saying so.
        huge = client.post(
            "/nodeworx/mail/mta/settings",
            content=b"csrf=" + csrf.encode() + b"&x=" + b"a" * (11 * 1024 * 1024),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert huge.status_code == 413 and "<h1>Too large</h1>" in huge.text
        # Not a form, too many fields, invalid UTF-8, values of the wrong kind.
        assert client.post("/nodeworx/mail/mta/settings", json={"csrf": csrf}).status_code == 400
        fields = "&".join(f"f{n}=1" for n in range(6000))
        many = client.post(
            "/nodeworx/mail/mta/settings",
            content=f"csrf={csrf}&{fields}".encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert many.status_code == 400
        garbled = client.post(
            "/nodeworx/mail/mta/settings",
            content=b"csrf=" + csrf.encode() + b"&section=delivery&concurrency_remote=%ff%fe\x00",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert garbled.status_code == 400 and "must be an integer" in garbled.text
        for section in ("", "nope", "../etc", "delivery\r\nX: y"):
            reply = client.post(
                "/nodeworx/mail/mta/settings", data={"csrf": csrf, "section": section}
            )
            assert reply.status_code == 303
        rows = client.post(
            "/nodeworx/mail/mta/routes",
            data={"csrf": csrf, "op": "up-99999999999999999999", "route_domain": ["a"] * 3},
        )
        assert rows.status_code == 303  # three domains, no relays: three "domain:" routes
        queue = client.post(
            "/nodeworx/mail/queue/act",
            data={
                "csrf": csrf,
                "operation": "delete:selected",
                "ids": ["../../etc/passwd"],
                "confirmed": "1",
            },
        )
        assert queue.status_code == 303
    finally:
        client.close()
    assert control_file(panel.home, "concurrencyremote") == before
    assert panel.process is not None and panel.process.poll() is None
    assert (panel.home.home / "control").is_dir() and not (panel.home.home / "etc").exists()


def test_hostile_strings_in_a_search_are_shown_as_text(panel: Panel) -> None:
    client, _ = _page_session(panel)
    script = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    try:
        page = client.get("/nodeworx/mail/queue", params={"sender": script, "reply": script})
        assert page.status_code == 200
        assert "<script>alert(1)" not in page.text and "<img src=x" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        message = client.get("/nodeworx/mail/queue/message/" + "%3Cscript%3E")
        assert message.status_code == 404 and "<script>" not in message.text
        assert client.get("/nodeworx/live", params={"parts": script, "hours": script}).json() == {}
        for path in ("/login?next=https://evil.test/", "/login?next=//evil.test"):
            reply = client.get(path)  # logged in already: sent on, but only to this panel
            assert reply.status_code == 303 and reply.headers["location"] == "/"
    finally:
        client.close()


# -- local users: what another account on the machine can reach ---------------------------------


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another account")
def test_another_account_reaches_the_admission_socket_but_never_the_control_socket(
    home: SendworxHome,
) -> None:
    """With run/ opened for search (as sendmail from site accounts needs), `nobody` may ask
    the admission socket about limits, but the control socket (status, queue actions, holds)
    refuses it, whatever it sends."""
    home.start_engine()
    run_dir = home.instance.run_dir
    run_dir.chmod(0o711)
    with (
        unix_sockets.short_path(home.instance.engine_control_socket) as control_path,
        unix_sockets.short_path(home.instance.admission_socket) as admission_path,
    ):

        def control() -> str:
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(control_path)
                client.sendall(b'queue {"action": "delete", "ids": []}\n')
                return client.recv(1000).decode()

        def admission() -> str:
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(admission_path)
                client.sendall(b'{"sender": "a@b.test", "account": "root", "recipients": 1}\n')
                return client.recv(1000).decode()

        assert as_user(NOBODY, control) == "error PermissionError"
        assert as_user(NOBODY, admission) == "{}\n"
    assert home.status()["pid"]  # the engine answers its owner as ever


def test_a_flood_of_admission_connections_spends_none_of_the_engines_descriptors(
    home: SendworxHome,
) -> None:
    """The admission socket is open to every local account: 500 connections that never send
    a request are closed beyond the first 64, so the engine keeps its file descriptors for
    delivery, and mail still goes (the injectors that cannot ask go ahead)."""
    with RecordingSink("127.0.4.60") as sink:
        home.routes(f"far.test:[127.0.4.60]:{sink.port}")
        engine = home.start_engine()
        descriptors = Path(f"/proc/{engine.pid}/fd")
        before = len(list(descriptors.iterdir()))
        flood = []
        with unix_sockets.short_path(home.instance.admission_socket) as address:
            for _ in range(500):
                client = socket.socket(socket.AF_UNIX)
                client.connect(address)
                flood.append(client)
        try:
            time.sleep(0.5)
            assert len(list(descriptors.iterdir())) <= before + 64 + 5
            assert home.sendmail("-f", "a@origin.test", "u@far.test").returncode == 0
            sink.wait_for_messages(1)
        finally:
            for client in flood:
                client.close()


def test_logs_settings_and_queue_files_are_the_instance_owners_alone(panel: Panel) -> None:
    """Every envelope address is in the logs and the queue, the audit trail in panel.log:
    nothing the processes write is readable by other local users."""
    home = panel.home
    old_log = home.home / "log" / "send.log"
    old_log.parent.mkdir(parents=True, exist_ok=True)
    old_log.write_text("from an older version\n")
    old_log.chmod(0o644)
    # Concurrency 0 keeps the message queued for the look at its file.
    assert panel.call("update", {"timeout_connect": 45, "concurrency_remote": 0})["status"] == 0
    assert panel.call("start")["status"] == 0
    home.start_smtpd()
    with smtplib.SMTP("127.0.0.1", home.smtpd_port, timeout=10) as client:
        client.sendmail("a@origin.test", ["x@far.test"], "hi")
    wait_for(lambda: home.queue_files() != [])
    written = [
        old_log,
        home.home / "log" / "panel.log",
        home.home / "log" / "smtpd.log",
        home.home / "control" / "timeoutconnect",
        home.home / "panel" / "users.json",
        *(home.home / "queue" / "mess").iterdir(),
    ]
    for path in written:
        assert os.stat(path).st_mode & 0o077 == 0, (path, oct(os.stat(path).st_mode))


# -- slow clients and broken framing: nobody starves the panel or loses a reply -------------------


def test_slow_and_greedy_clients_cannot_starve_the_panel(home: SendworxHome) -> None:
    """A flood of connections from one address that never finish their headers: beyond the
    per-address cap they are closed at once, the rest when their header deadline passes, a
    trickled body when its deadline passes; meanwhile another client is served at once."""
    panel = Panel(
        home,
        header_timeout_seconds=1.0,
        body_timeout_seconds=1.0,
        max_connections_per_address=50,
    ).start()
    flood: list[socket.socket] = []
    try:
        for number in range(120):
            attacker = socket.create_connection(
                ("127.0.0.1", panel.http_port), timeout=5, source_address=("127.0.0.2", 0)
            )
            if number % 2:
                attacker.sendall(b"POST /xmlrpc HTTP/1.1\r\nHost: x\r\n")  # never finished
            flood.append(attacker)
        trickle = socket.create_connection(("127.0.0.1", panel.http_port), timeout=5)
        trickle.sendall(b"POST /xmlrpc HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n<a")
        started = time.monotonic()
        assert panel.call("isRunning")["status"] == 0
        assert time.monotonic() - started < 1.0

        def closed(peer: socket.socket) -> bool:
            peer.settimeout(3)
            try:
                return peer.recv(1024) == b""
            except ConnectionResetError:
                return True  # closed with our unread bytes in its buffer
            except TimeoutError:
                return False

        refused = [peer for peer in flood if closed(peer)]
        assert len(refused) == 120  # 70 at once, the other 50 at their header deadline
        assert closed(trickle)
        assert time.monotonic() - started < 6
        assert panel.call("isRunning")["status"] == 0
    finally:
        for peer in flood:
            peer.close()
        panel.stop()


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status)[1])  # type: ignore[index]


def test_smtpd_holds_little_for_a_client_that_floods_and_never_reads(home: SendworxHome) -> None:
    """Commands pipelined without end by a client that never reads the replies: the listener
    stops reading once its replies back up, so the client blocks, not the listener's memory,
    and it is cut at the idle timeout; a line that never ends is thrown away as it comes;
    another client is served throughout."""
    home.write_config(smtpd={"workers": 1, "idle_timeout_seconds": 4})
    listener = home.start_smtpd()
    before = _rss_kib(listener.pid)
    with socket.create_connection(("127.0.0.1", home.smtpd_port), timeout=1) as flood:
        flood_port = flood.getsockname()[1]
        flood.sendall(b"EHLO flood.test\r\n")
        sent, chunk = 0, b"NOOP\r\n" * 10_000
        with contextlib.suppress(TimeoutError):
            while sent < 500_000_000:
                sent += flood.send(chunk)
        assert sent < 100_000_000, sent  # the listener stopped taking them
        assert connection_held_by(listener.pid, home.smtpd_port, flood_port)  # not yet cut
        with socket.create_connection(("127.0.0.1", home.smtpd_port), timeout=10) as endless:
            for _ in range(400):  # 40 MB on one line
                endless.sendall(b"x" * 100_000)
            with _smtp(home) as client:
                client.sendmail("a@origin.test", ["b@far.test"], b"Subject: served\r\n\r\nyes\r\n")
            assert _rss_kib(listener.pid) - before < 20_000
            endless.sendall(b"\r\nQUIT\r\n")
            replies = endless.makefile("rb").read()
            assert b"500 5.5.2 Error: command line too long" in replies
        # Silent past the idle timeout with its replies unread: the listener lets go of the
        # connection, rather than keep it for ever behind a 421 the client would never read.
        wait_for(
            lambda: not connection_held_by(listener.pid, home.smtpd_port, flood_port), timeout=15
        )
    assert len(home.queue_files("new")) == 1


def test_garbage_after_a_call_on_a_kept_alive_connection_never_hides_its_reply(
    panel: Panel,
) -> None:
    """A valid call and garbage in one write: the call's own reply comes back (and then the
    connection closes); before, the call was applied and the client got a bare 400."""
    body = json.dumps({"hold": "domain:garbage.test"}).encode()
    request = (
        b"POST /api/v1/nodeworx/mail/policy/addHold HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + " ".join(panel.key.split()).encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    with socket.create_connection(("127.0.0.1", panel.http_port), timeout=10) as client:
        client.sendall(request + b"\x00GARBAGE \xff\r\n\r\n")
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer[:200]
    assert json.loads(payload)["payload"]["hold"] == "domain:garbage.test"
    holds = panel.call("listHolds", controller="/nodeworx/mail/policy")["payload"]
    assert [hold["hold"] for hold in holds] == ["domain:garbage.test"]


# -- lockout: guesses cannot be outrun, reset or spread ---------------------------------------


def test_concurrent_guesses_over_the_wire_cannot_outrun_the_lockout(home: SendworxHome) -> None:
    """40 wrong passwords at once from one address, then the right one: refused, from that
    address and (the account is locked too) from another; another user's key from the locked
    address is refused as well, and its success forgives nothing."""
    panel = Panel(home, max_failures=5, lockout_seconds=30).start()
    try:
        other_key = panel.add_user("other@sendworx.test", "EMAIL")

        def guess(number: int) -> int:
            proxy = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{panel.http_port}/xmlrpc")
            auth = {"email": panel.email, "password": f"wrong {number}"}
            reply = proxy.iworx.route(auth, SEND, "isRunning", {})
            assert isinstance(reply, dict)
            return int(reply["status"])

        with ThreadPoolExecutor(max_workers=40) as pool:
            assert set(pool.map(guess, range(40))) == {401}
        right = {"email": panel.email, "password": panel.password}
        locked = panel.call("isRunning", auth=right)
        assert locked["status"] == 401 and "too many failed attempts" in locked["payload"]
        assert panel.call("isRunning", auth=other_key)["status"] == 401
        elsewhere = _route_from("127.0.0.9", panel, right)
        assert elsewhere["status"] == 401 and "for this account" in elsewhere["payload"]
        assert _route_from("127.0.0.9", panel, other_key)["status"] == 0
    finally:
        panel.close()


def _route_from(source: str, panel: Panel, auth: str | dict[str, str]) -> dict[str, Any]:
    """One XML-RPC call from another loopback address."""
    body = xmlrpc.client.dumps((auth, SEND, "isRunning", {}), "iworx.route").encode()
    with socket.create_connection(
        ("127.0.0.1", panel.http_port), timeout=30, source_address=(source, 0)
    ) as client:
        client.sendall(
            b"POST /xmlrpc HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    reply = xmlrpc.client.loads(answer.partition(b"\r\n\r\n")[2])[0][0]
    assert isinstance(reply, dict)
    return reply


# -- sessions: they end with the credentials that made them -------------------------------------


def test_sessions_end_when_a_user_is_deactivated_or_their_password_changes(
    panel: Panel,
) -> None:
    users = "/nodeworx/users"
    new_user = {
        "nickname": "Ops",
        "email": "ops@sendworx.test",
        "password": "first password",
        "confirm_password": "first password",
        "perms": "EMAIL",
    }
    assert panel.call("add", new_user, controller=users)["status"] == 0
    login = {"email": "ops@sendworx.test", "password": "first password"}
    session = panel.call("getSession", auth=login, controller="/nodeworx/index")["payload"]
    assert panel.call("isRunning", auth={"sessionid": session})["status"] == 0
    change = {
        "user": "ops@sendworx.test",
        "password": "second pass",
        "confirm_password": "second pass",
    }
    assert panel.call("edit", change, controller=users)["status"] == 0
    assert panel.call("isRunning", auth={"sessionid": session})["status"] == 401
    login["password"] = "second pass"
    session = panel.call("getSession", auth=login, controller="/nodeworx/index")["payload"]
    assert panel.call("deactivate", {"user": "ops@sendworx.test"}, controller=users)["status"] == 0
    assert panel.call("isRunning", auth={"sessionid": session})["status"] == 401
    assert panel.call("isRunning", auth=login)["status"] == 401


def test_smtpd_caps_connections_overall_and_per_address_outside_relay_networks(
    home: SendworxHome,
) -> None:
    """Idle connections cannot take every descriptor: past the per-address cap a client
    outside relay_networks gets 421, past the overall cap everyone does; a connection that
    ends frees its place."""
    home.write_config(
        smtpd={
            "workers": 1,
            "max_connections": 5,
            "max_connections_per_address": 2,
            "relay_networks": ["127.0.0.2/32"],
        }
    )
    home.start_smtpd()

    def connect(source: str) -> tuple[socket.socket, bytes]:
        peer = socket.create_connection(
            ("127.0.0.1", home.smtpd_port), timeout=10, source_address=(source, 0)
        )
        return peer, peer.makefile("rb").readline()

    held = [connect("127.0.0.1"), connect("127.0.0.1")]
    outsider, refused = connect("127.0.0.1")
    assert refused.startswith(b"421 4.7.0 ") and outsider.recv(1) == b""
    held += [connect("127.0.0.2") for _ in range(3)]  # the relay network is exempt
    assert all(greeting.startswith(b"220 ") for _, greeting in held)
    insider, refused = connect("127.0.0.2")
    assert refused.startswith(b"421 4.7.0 ")  # the overall cap
    held.pop(0)[0].close()
    wait_for(lambda: connect("127.0.0.1")[1].startswith(b"220 "))
    for peer, _ in held:
        peer.close()
    outsider.close()
    insider.close()
