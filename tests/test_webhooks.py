"""Signed webhooks against a real engine, a real `webhookd` and real receivers (PHP's built-in
server checking with hash_hmac, and a Python one): every event arrives signed with its
documented fields; a kill -9 storm loses none; a receiver down gets everything once back;
a slow, silent, endless or redirecting receiver neither slows mail nor grows the sender;
addresses inside the network are refused unless the operator allows them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import trustme
from support.instance import SendworxHome
from support.net import free_port, wait_for
from support.panel import Panel
from support.postfix_sink import PostfixSink
from support.raw_server import RawServer
from support.sink import Behaviour as SinkBehaviour
from support.sink import RecordingSink
from support.webhook_receiver import Behaviour, PythonReceiver, php_received, php_receiver

from sendworx.shared.pidfile import running_pid
from sendworx.shared.webhooks import WebhookStore

# Loopback allowed; the sender at normal priority (idle, the default, would leave it to the
# CPU the other tests running beside these leave unused).
NODEWORX_WEBHOOKS = "/nodeworx/mail/webhooks"
SITE_WEBHOOKS = "/siteworx/mail/webhooks"
LOOPBACK = {"allow_networks": ["127.0.0.0/8"], "flush_seconds": 0.05, "priority": "normal"}


def _cli(home: SendworxHome, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        home.command("webhooks", *arguments), capture_output=True, text=True, timeout=60
    )


def _add(home: SendworxHome, url: str, *options: str) -> tuple[int, str]:
    """A new endpoint's id and secret, added with the command line."""
    done = _cli(home, "add", url, *options)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    endpoint_id = int(lines[0].split()[1].rstrip(":"))
    [secret] = [line.split()[1] for line in lines if line.startswith("secret: ")]
    return endpoint_id, secret


def _start_webhookd(home: SendworxHome) -> subprocess.Popen[bytes]:
    process = home.spawn("webhookd")

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"webhookd exited: {home.stderr('webhookd')[-2000:]}")
        return running_pid(home.instance.webhookd_pid_file) == process.pid and os.path.exists(
            home.instance.webhooks_trigger_socket
        )

    wait_for(ready, 15)
    return process


def _attempts(home: SendworxHome, endpoint_id: int) -> list[dict[str, Any]]:
    attempts, _ = WebhookStore(home.instance.webhooks_path).attempts(endpoint_id, 1, 500)
    return [attempt.to_document() for attempt in attempts]


def _listed(home: SendworxHome) -> dict[int, dict[str, Any]]:
    done = _cli(home, "list", "--json")
    assert done.returncode == 0, done.stderr
    return {row["id"]: row for row in json.loads(done.stdout)["endpoints"]}


def _answer(recipient: str) -> str | None:
    if recipient.startswith("gone@"):
        return "550 5.1.1 <gone@far.example>: user unknown"
    if recipient.startswith("busy@"):  # not a rate limit: pacing would slow the bounce down
        return "452 4.2.2 mailbox full, try later"
    return None


def test_events_reach_php_and_python_receivers_signed_with_their_fields(
    home: SendworxHome, tmp_path: Path
) -> None:
    home.write_config(webhooks=LOOPBACK)
    php_port, php_log = free_port("127.0.0.151"), tmp_path / "php.jsonl"
    with (
        RecordingSink("127.0.0.150", behaviour=SinkBehaviour(rcpt_reply=_answer)) as sink,
        PythonReceiver() as receiver,
    ):
        home.routes(f":[127.0.0.150]:{sink.port}")
        everything, secret = _add(home, receiver.url, "--description", "all of it")
        receiver.secrets.append(secret)
        php_url = f"http://127.0.0.151:{php_port}/hook"
        shop, php_secret = _add(
            home, php_url, "--events", "delivered,bounced", "--scope", "domain",
            "--scope-value", "shop.example",
        )  # fmt: skip
        with php_receiver("127.0.0.151", php_port, php_secret, php_log):
            home.start_engine()
            _start_webhookd(home)
            home.inject("ok@far.example", "gone@far.example", sender="a@shop.example")
            home.inject("busy@far.example", sender="b@elsewhere.example")
            # Two messages and the bounce of the first (to a@shop.example, from <>): each
            # accepted once; ok delivered, gone bounced, busy deferred, the bounce delivered.
            wait_for(lambda: len(receiver.events()) >= 7, timeout=20)
            wait_for(lambda: len(php_received(php_log)) >= 2, timeout=20)
    assert receiver.all_signed()
    by_kind = {(e["event"], e["recipient"]): e for e in receiver.events()}
    assert set(by_kind) == {
        ("accepted", ""),
        ("delivered", "ok@far.example"),
        ("bounced", "gone@far.example"),
        ("deferred", "busy@far.example"),
        ("delivered", "a@shop.example"),
    }
    assert [e["event"] for e in receiver.events()].count("accepted") == 3
    assert len(receiver.events()) == 7
    assert by_kind[("delivered", "a@shop.example")]["message"]["from"] == ""
    bounced = by_kind[("bounced", "gone@far.example")]
    assert bounced["status"] == "5.1.1" and "user unknown" in bounced["reply"]
    assert bounced["class"] == "invalid_recipient" and bounced["outcome"] == "failed"
    assert bounced["destination"] == "far.example" and bounced["attempt"] == 1
    assert bounced["message"]["from"] == "a@shop.example"
    assert bounced["message"]["to"] == ["ok@far.example", "gone@far.example"]
    assert bounced["message"]["subject"] == "test"
    assert bounced["message"]["message_id"].endswith("@t") and bounced["node"] == "sendworx.test"
    deferred = by_kind[("deferred", "busy@far.example")]
    assert deferred["outcome"] == "retrying" and deferred["class"] == "mailbox_full"
    assert by_kind[("delivered", "ok@far.example")]["relay"].startswith("127.0.0.150")
    headers = next(r.headers for r in receiver.received if r.event["recipient"] == "ok@far.example")
    assert headers["Sendworx-Event"] == "delivered" and headers["Sendworx-Attempt"] == "1"
    assert headers["Sendworx-Event-Id"] == by_kind[("delivered", "ok@far.example")]["id"]
    assert headers["Content-Type"] == "application/json"
    # PHP got only what it asked for: the shop's deliveries and bounces, each signature good.
    got = php_received(php_log)
    assert all(line["signed"] for line in got)
    assert sorted(line["event"]["event"] for line in got) == ["bounced", "delivered"]
    assert {line["event"]["message"]["from"] for line in got} == {"a@shop.example"}
    listed = _listed(home)
    assert listed[everything]["state"] == "ok" and listed[shop]["events"] == [
        "delivered",
        "bounced",
    ]
    assert [a["outcome"] for a in _attempts(home, shop)] == ["done", "done"]


def test_a_rotated_secret_signs_beside_the_old_one_for_the_grace_period(
    home: SendworxHome,
) -> None:
    home.write_config(webhooks=LOOPBACK)
    with PythonReceiver() as receiver:
        endpoint, old = _add(home, receiver.url)
        receiver.secrets.append(old)
        _start_webhookd(home)
        done = _cli(home, "edit", str(endpoint), "--rotate-secret", "--grace-hours", "2")
        assert done.returncode == 0, done.stderr
        [new] = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("secret")]
        assert new != old
        tested = _cli(home, "test", str(endpoint))
        assert tested.returncode == 0 and tested.stdout.startswith("done 200"), tested
        [first] = receiver.received
        assert first.signed  # the receiver still knows only the old secret
        assert first.headers["Sendworx-Signature"].count("v1=") == 2
        assert first.event["event"] == "test"
        receiver.secrets[:] = [new]  # the receiver moves to the new secret: that holds too
        assert _cli(home, "test", str(endpoint)).returncode == 0
        assert receiver.all_signed() and len(receiver.received) == 2
        assert _cli(home, "secret", str(endpoint)).stdout.strip() == new
        done = _cli(home, "edit", str(endpoint), "--rotate-secret", "--grace-hours", "0")
        assert done.returncode == 0
        # The receiver does not know the newest secret, and the grace is over at once.
        assert _cli(home, "test", str(endpoint)).returncode == 1
        assert _attempts(home, endpoint)[0]["status"] == 400


def test_addresses_inside_the_network_are_refused_unless_allowed(home: SendworxHome) -> None:
    for url in (
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",  # a name is judged by what it resolves to
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:10.0.0.1]/",
        "http://2130706433/",  # 127.0.0.1 in the form inet_aton accepts
        "gopher://example.com/",
    ):
        done = _cli(home, "add", url)
        assert done.returncode == 1 and "url" in done.stderr, (url, done.stderr)
    assert not home.instance.webhooks_path.exists() or _listed(home) == {}
    with PythonReceiver() as receiver:
        home.write_config(webhooks=LOOPBACK)
        endpoint, _ = _add(home, receiver.url)
        # The operator takes the allowance back: the sender refuses at the request itself.
        home.write_config(webhooks={"allow_networks": [], "priority": "idle"})
        sender = _start_webhookd(home)
        assert os.sched_getscheduler(sender.pid) == os.SCHED_IDLE  # the default: below mail
        assert _cli(home, "test", str(endpoint)).returncode == 1
        [attempt] = _attempts(home, endpoint)
        assert attempt["status"] == 0 and attempt["reply"].startswith("refused:")
        assert "loopback" in attempt["reply"] and receiver.received == []


def _endless(body: bytes) -> Any:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n")
        while True:  # a gigabyte, as fast as we read it
            writer.write(body)
            await writer.drain()

    return script


def _redirect(port: int) -> Any:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            location = f"http://127.0.0.152:{port}/hook"
            writer.write(
                f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()
            )
            await writer.drain()

    return script


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(3600)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_hostile_receivers_cost_a_capped_read_and_a_timeout_and_mail_goes_on(
    home: SendworxHome,
) -> None:
    home.write_config(webhooks={**LOOPBACK, "timeout_seconds": 1.0, "breaker_failures": 100})
    redirect_port = free_port("127.0.0.152")
    with (
        RawServer(_endless(b"x" * 65536), host="127.0.0.153") as endless,
        RawServer(_redirect(redirect_port), host="127.0.0.152", port=redirect_port) as redirect,
        RawServer(_silent, host="127.0.0.154") as silent,
        RecordingSink("127.0.0.155") as sink,
    ):
        home.routes(f":[127.0.0.155]:{sink.port}")
        ids = {
            name: _add(home, f"http://{server.host}:{server.port}/hook")[0]
            for name, server in (("endless", endless), ("redirect", redirect), ("silent", silent))
        }
        home.start_engine()
        sender = _start_webhookd(home)
        started = time.monotonic()
        for n in range(20):
            home.inject(f"r{n}@far.example")
        wait_for(lambda: len(sink.messages) == 20, timeout=20)
        mail_seconds = time.monotonic() - started
        wait_for(lambda: len(_attempts(home, ids["silent"])) >= 4, timeout=20)
        wait_for(lambda: len(_attempts(home, ids["endless"])) >= 40, timeout=20)
        wait_for(lambda: len(_attempts(home, ids["redirect"])) >= 40, timeout=20)
        rss = _rss_kib(sender.pid)
        requests_to_redirect = redirect.connections
        # What each receiver got, read while they still serve (then they close, and the
        # sender's next attempts find nobody).
        attempts = {name: _attempts(home, endpoint) for name, endpoint in ids.items()}
    assert mail_seconds < 10
    assert rss < 150 * 1024, rss  # 40 gigabyte replies were read 64 KiB each
    endless_attempt = attempts["endless"][0]
    assert endless_attempt["status"] == 200 and endless_attempt["outcome"] == "done"
    assert endless_attempt["reply"] == "x" * 1000
    redirected = attempts["redirect"][0]
    assert redirected["status"] == 302 and "not followed" in redirected["reply"]
    assert redirected["outcome"] == "retry"
    assert requests_to_redirect <= 4  # keep-alive connections, and no request followed it
    for silence in attempts["silent"]:
        assert silence["status"] == 0 and silence["reply"] == "no answer within 1s"
        assert 900 <= silence["milliseconds"] < 3000


def test_a_410_disables_the_endpoint_and_new_events_are_not_queued_for_it(
    home: SendworxHome,
) -> None:
    home.write_config(webhooks=LOOPBACK)
    with (
        PythonReceiver(behaviour=Behaviour(status=410)) as receiver,
        RecordingSink("127.0.0.156") as sink,
    ):
        home.routes(f":[127.0.0.156]:{sink.port}")
        endpoint, secret = _add(home, receiver.url)
        receiver.secrets.append(secret)
        home.start_engine()
        _start_webhookd(home)
        home.inject("one@far.example")
        wait_for(lambda: _listed(home)[endpoint]["state"] == "disabled", timeout=20)
        listed = _listed(home)[endpoint]
        assert listed["disabled_reason"].startswith("410 from the receiver at")
        wait_for(lambda: len(sink.messages) == 1, timeout=10)
        time.sleep(1.5)  # the engine sees the endpoint disabled within a second
        home.inject("two@far.example")
        wait_for(lambda: len(sink.messages) == 2, timeout=10)
        time.sleep(0.5)
        counts = WebhookStore(home.instance.webhooks_path).counts()[endpoint]
        # The first message's two events (one or both got the 410); none of the second's.
        assert counts["dead"] >= 1 and counts["dead"] + counts["pending"] == 2
        assert _cli(home, "edit", str(endpoint), "--enable").returncode == 0
        assert _listed(home)[endpoint]["state"] == "ok"


def test_a_receiver_down_for_a_while_gets_everything_once_it_is_back(
    home: SendworxHome,
) -> None:
    home.write_config(
        webhooks={
            **LOOPBACK,
            "retry_seconds": 0.2,
            "max_retry_seconds": 1.0,
            "breaker_failures": 3,
            "breaker_seconds": 0.5,
        }
    )
    port = free_port("127.0.0.157")
    receiver = PythonReceiver(host="127.0.0.157")
    with PostfixSink("127.0.0.158") as sink:
        home.routes(f":[127.0.0.158]:{sink.port}")
        endpoint, secret = _add(home, f"http://127.0.0.157:{port}/hook")
        receiver.secrets.append(secret)
        home.start_engine()
        _start_webhookd(home)
        home.enqueue("x@far.example", copies=50)
        wait_for(home.queue_empty, timeout=20)
        wait_for(lambda: _listed(home)[endpoint]["state"] == "paused", timeout=20)
        assert _listed(home)[endpoint]["pending"] == 100
        receiver.start(port)
        try:
            wait_for(lambda: len(receiver.events()) >= 100, timeout=20)
        finally:
            receiver.stop()
    assert receiver.all_signed()
    assert len({event["id"] for event in receiver.events()}) == 100
    wait_for(lambda: _listed(home)[endpoint]["pending"] == 0, timeout=5)
    failed = [a for a in _attempts(home, endpoint) if a["outcome"] != "done"]
    assert failed and all(a["status"] == 0 for a in failed)
    assert len(failed) < 20  # the breaker spared the dead receiver most of the attempts


def test_kill_9_of_the_sender_in_a_storm_of_10000_events_loses_none(
    home: SendworxHome,
) -> None:
    home.write_config(webhooks={**LOOPBACK, "connections_per_endpoint": 8})
    with PostfixSink("127.0.0.159") as sink, PythonReceiver() as receiver:
        home.routes(f":[127.0.0.159]:{sink.port}")
        endpoint, secret = _add(home, receiver.url, "--events", "accepted,delivered")
        receiver.secrets.append(secret)
        home.enqueue("x@far.example", copies=5000)
        home.start_engine()
        kills = 0
        while kills < 3:
            sender = _start_webhookd(home)
            before = len(receiver.events())
            wait_for(lambda: len(receiver.events()) >= before + 1000, timeout=30)  # noqa: B023
            sender.send_signal(signal.SIGKILL)
            sender.wait(10)
            kills += 1
        _start_webhookd(home)
        wait_for(home.queue_empty, timeout=60)
        wait_for(lambda: len({e["id"] for e in receiver.events()}) >= 10_000, timeout=60)
        time.sleep(0.5)
        events = receiver.events()
    unique = {event["id"] for event in events}
    assert len(unique) == 10_000
    kinds = [event["event"] for event in {event["id"]: event for event in events}.values()]
    assert kinds.count("accepted") == kinds.count("delivered") == 5000
    duplicates = len(events) - len(unique)
    print(f"10000 events, {kills} kill -9 of webhookd: {duplicates} delivered twice")
    # A batch's outcomes are recorded before the next is leased: each kill -9 sends again at
    # most the batch it had leased (8 connections x 16).
    assert duplicates <= kills * 8 * 16
    assert receiver.all_signed()
    assert _listed(home)[endpoint]["pending"] == 0


def test_a_receiver_that_sleeps_30s_per_request_does_not_hold_mail_back(
    home: SendworxHome,
) -> None:
    home.write_config(webhooks={**LOOPBACK, "timeout_seconds": 60.0})
    with (
        PythonReceiver(behaviour=Behaviour(delay=30.0)) as receiver,
        PostfixSink("127.0.0.160") as sink,
    ):
        home.routes(f":[127.0.0.160]:{sink.port}")
        _add(home, receiver.url)
        home.start_engine()
        sender = _start_webhookd(home)
        started = time.monotonic()
        home.enqueue("x@far.example", copies=500)
        wait_for(home.queue_empty, timeout=30)
        elapsed = time.monotonic() - started
        answered = len(receiver.received)
        assert sender.poll() is None
    assert answered == 0  # every request still waits for its 30 s
    assert elapsed < 10, elapsed


def test_the_api_manages_endpoints_and_a_sites_login_sees_only_its_own(
    home: SendworxHome,
) -> None:
    home.write_config(webhooks=LOOPBACK)
    panel = Panel(home).start()
    try:
        with PythonReceiver() as receiver:
            added = panel.call(
                "add",
                {"url": receiver.url, "events": ["delivered", "bounced"], "scope": "all"},
                controller=NODEWORX_WEBHOOKS,
            )
            assert added["status"] == 0, added
            endpoint = added["payload"]
            assert endpoint["secret"].startswith("whsec_") and endpoint["state"] == "ok"
            refused = panel.call(
                "add", {"url": "http://169.254.169.254/", "events": "all"},
                controller=NODEWORX_WEBHOOKS,
            )  # fmt: skip
            assert refused["status"] != 0 and "link-local" in json.dumps(refused)
            bad = panel.call(
                "add", {"url": receiver.url, "events": "sent,opened"}, controller=NODEWORX_WEBHOOKS
            )
            assert bad["status"] != 0 and "events" in json.dumps(bad)
            key = panel.add_user("site@example.test", "EMAIL")
            site = {"domain": "shop.example", "apikey": " ".join(key.split())}
            own = panel.call("add", {"url": receiver.url}, auth=site, controller=SITE_WEBHOOKS)
            assert own["status"] == 0, own
            assert (own["payload"]["scope"], own["payload"]["scope_value"]) == (
                "domain",
                "shop.example",
            )
            other = panel.call(
                "add", {"url": receiver.url, "scope": "all"}, auth=site, controller=SITE_WEBHOOKS
            )
            assert other["status"] != 0  # a site may not ask for everyone's mail
            elsewhere = panel.call(
                "add", {"url": receiver.url, "scope_value": "other.example"}, auth=site,
                controller=SITE_WEBHOOKS,
            )  # fmt: skip
            assert elsewhere["status"] != 0
            listed = panel.call("listEndpoints", auth=site, controller=SITE_WEBHOOKS)
            assert [row["id"] for row in listed["payload"]["endpoints"]] == [own["payload"]["id"]]
            theirs = panel.call(
                "delete", {"id": endpoint["id"]}, auth=site, controller=SITE_WEBHOOKS
            )
            assert theirs["status"] != 0  # the operator's endpoint is not the site's to touch
            tested = panel.call("test", {"id": endpoint["id"]}, controller=NODEWORX_WEBHOOKS)
            assert tested["payload"]["outcome"] == "pending"  # no webhookd: said at once
            assert "not running" in tested["payload"]["reply"]
            everything = panel.call("listEndpoints", controller=NODEWORX_WEBHOOKS)
            assert len(everything["payload"]["endpoints"]) == 2
            gone = panel.call("delete", {"id": endpoint["id"]}, controller=NODEWORX_WEBHOOKS)
            assert gone["status"] == 0 and gone["payload"] == {"deleted": endpoint["id"]}
    finally:
        panel.close()


def test_https_receivers_are_verified_and_an_untrusted_certificate_refused(
    home: SendworxHome, tmp_path: Path
) -> None:
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(context)
    with PythonReceiver() as receiver:
        assert receiver.server is not None
        receiver.server.socket = context.wrap_socket(receiver.server.socket, server_side=True)
        url = f"https://127.0.0.1:{receiver.port}/hook"
        home.write_config(webhooks={**LOOPBACK, "ca_file": str(ca_file)})
        endpoint, secret = _add(home, url)
        receiver.secrets.append(secret)
        sender = _start_webhookd(home)
        assert _cli(home, "test", str(endpoint)).returncode == 0
        assert receiver.all_signed() and len(receiver.received) == 1
        home.stop(sender)
        del home.config["webhooks"]["ca_file"]  # the system's authorities only
        home.write_config()
        _start_webhookd(home)
        assert _cli(home, "test", str(endpoint)).returncode == 1
        assert _attempts(home, endpoint)[0]["reply"].startswith("TLS certificate not trusted")
        assert len(receiver.received) == 1
