"""The webhook sender's parts run in the test process against real sockets: `WebhookSender`
over a real store posting to a real receiver (retries, the breaker, 410, giving up), a
`Lane` against scripted servers that break HTTP in every way a receiver can, and the
`sendworx webhooks` command with its controller. (tests/test_webhooks.py runs `webhookd`
itself as a process; these are where their branches are seen, and are quicker to vary.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter
from support.raw_server import RawServer
from support.webhook_receiver import Behaviour, PythonReceiver

from sendworx.cli.main import _parser
from sendworx.cli.webhooks_command import run as run_command
from sendworx.engine.events import Fate, FateEvent
from sendworx.engine.webhook_outbox import WebhookOutbox
from sendworx.inject.account_webhooks import WebhooksRefused, account_webhooks, own, parse
from sendworx.shared.bounce_classes import Classifier
from sendworx.shared.config import WebhooksConfig
from sendworx.shared.instance import Instance
from sendworx.shared.network_guard import AddressGuard
from sendworx.shared.queue_format import Envelope, Origin
from sendworx.shared.webhook_probe import queue_test
from sendworx.shared.webhooks import EVENTS, NewDelivery, WebhookStore
from sendworx.webhooks.poster import Lane, Poster
from sendworx.webhooks.sender import WebhookSender

SECRET = "s" * 24
FAST: dict[str, Any] = {
    "allow_networks": ["127.0.0.0/8"],
    "retry_seconds": 0.05,
    "max_retry_seconds": 0.2,
    "breaker_failures": 3,
    "breaker_seconds": 0.2,
    "timeout_seconds": 2.0,
    "priority": "normal",
}


def _queue(store: WebhookStore, endpoint: int, count: int, created: float = 0.0) -> None:
    import time

    now = created or time.time()
    store.enqueue(
        [
            NewDelivery(endpoint, f"evt_{n}", "delivered", "q", b'{"id":"evt_%d"}' % n, now)
            for n in range(count)
        ]
    )


async def _until(sender: WebhookSender, done: Callable[[], bool], seconds: float = 20) -> None:
    """Runs the sender until `done()` (looked at every 50 ms: the store is another thread's)."""
    task = asyncio.create_task(sender.run())
    try:
        async with asyncio.timeout(seconds):
            while not done():  # noqa: ASYNC110 - a condition on the store, not an event
                await asyncio.sleep(0.05)
    finally:
        sender.stop()
        await task


def test_failures_are_retried_the_breaker_pauses_and_probes_and_all_arrive(
    tmp_path: Path,
) -> None:
    answers = iter([500] * 6)

    def answer(event: dict[str, Any]) -> int:
        return next(answers, 200)

    store = WebhookStore(tmp_path / "webhooks.sqlite3")
    with PythonReceiver(secrets=[SECRET], behaviour=Behaviour(answer=answer)) as receiver:
        endpoint = store.add_endpoint(receiver.url, EVENTS, "all", "", SECRET)
        _queue(store, endpoint.id, 10)
        sender = WebhookSender(store, WebhooksConfig.model_validate(FAST))
        asyncio.run(_until(sender, lambda: len({e["id"] for e in receiver.events()}) == 10))
    assert receiver.all_signed()
    attempts, _ = store.attempts(endpoint.id, 1, 500)
    failed = [a for a in attempts if a.outcome == "retry"]
    assert len(failed) == 6 and all(a.status == 500 for a in failed)
    assert store.counts() == {} or store.counts()[endpoint.id]["pending"] == 0
    current = store.endpoint(endpoint.id)
    assert current is not None and current.failures == 0 and current.paused_until == 0


def test_a_410_disables_and_what_cannot_be_delivered_in_its_life_is_dead(tmp_path: Path) -> None:
    store = WebhookStore(tmp_path / "webhooks.sqlite3")
    with PythonReceiver(secrets=[SECRET], behaviour=Behaviour(status=410)) as gone:
        endpoint = store.add_endpoint(gone.url, EVENTS, "all", "", SECRET)
        dead_port = store.add_endpoint("http://127.0.0.1:9/hook", EVENTS, "all", "", SECRET)
        _queue(store, endpoint.id, 3)
        _queue(store, dead_port.id, 2)
        config = WebhooksConfig.model_validate(
            {**FAST, "max_age_hours": 1 / 3600, "breaker_failures": 100}
        )
        sender = WebhookSender(store, config)

        def settled() -> bool:
            counts = store.counts()
            return (
                counts.get(dead_port.id, {}).get("pending", 1) == 0
                and not (store.endpoint(endpoint.id) or endpoint).enabled
            )

        asyncio.run(_until(sender, settled))
    current = store.endpoint(endpoint.id)
    assert current is not None and current.disabled_reason.startswith("410 from the receiver")
    dead, total = store.queued(dead_port.id, "dead")
    assert total == 2 and all("cannot connect" in item.last_result for item in dead)
    assert store.redeliver(dead_port.id, [dead[0].id], now=1e10) == 1


async def _headers_too_long(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"y" * 20000 + b"\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(5)


async def _not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"220 this is an SMTP server\r\n")
    await writer.drain()
    await asyncio.sleep(5)


async def _hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")


async def _chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        await writer.drain()


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)


@pytest.mark.parametrize(
    ("script", "status", "reply"),
    [
        (_headers_too_long, 0, "reply headers over 16384 bytes"),
        (_not_http, 0, "not HTTP"),
        (_hangs_up, 0, "the receiver closed the connection"),
        (_chunked, 202, "hello world"),
        (_silent, 0, "no answer within 1s"),
    ],
)
def test_a_lane_answers_every_way_a_receiver_can_break_http(
    script: Any, status: int, reply: str
) -> None:
    config = WebhooksConfig.model_validate({**FAST, "timeout_seconds": 1.0})

    async def post(url: str) -> list[Any]:
        lane = Lane(Poster(config, AddressGuard(config.allow_networks)))
        try:
            return [await lane.post(url, b"{}", {"Sendworx-Event": "test"}) for _ in range(2)]
        finally:
            lane.close()

    with RawServer(script) as server:
        answers = asyncio.run(post(f"http://127.0.0.1:{server.port}/hook"))
    for answer in answers:  # the second on a kept connection, or a new one
        assert answer.status == status and answer.reply.startswith(reply), answer
    if script is _chunked:
        assert server.connections == 1  # kept alive between the two


def test_a_lane_refuses_addresses_inside_and_names_that_resolve_inside() -> None:
    config = WebhooksConfig.model_validate({**FAST, "allow_networks": []})

    async def post(url: str) -> str:
        lane = Lane(Poster(config, AddressGuard()))
        return (await lane.post(url, b"{}", {})).reply

    assert "loopback" in asyncio.run(post("http://127.0.0.1:9/"))
    said = asyncio.run(post("http://localhost:9/"))
    assert said.startswith("refused: localhost resolves to") and "allow_networks" in said
    assert "link-local" in asyncio.run(post("http://169.254.169.254/latest/"))


def _command(instance: Instance, capsys: pytest.CaptureFixture[str], *words: str) -> Any:
    status = run_command(_parser().parse_args(["webhooks", *words]), instance)
    out = capsys.readouterr()
    return status, out.out, out.err


def test_the_command_manages_endpoints_through_the_controller(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "sendworx.toml").write_text(
        'helo_name = "node1.test"\n[webhooks]\nallow_networks = ["127.0.0.0/8"]\n'
    )
    instance = Instance(home)
    status, out, err = _command(instance, capsys, "add", "http://127.0.0.1:9/a", "--events",
                                "delivered,bounced", "--description", "shop")  # fmt: skip
    assert status == 0 and out.startswith("endpoint 1: http://127.0.0.1:9/a (ok)"), err
    secret = out.split("secret: ")[1].split()[0]
    status, out, _ = _command(instance, capsys, "list")
    assert status == 0 and "1 ok http://127.0.0.1:9/a [all] delivered,bounced" in out
    status, out, _ = _command(instance, capsys, "list", "--json")
    [listed] = json.loads(out)["endpoints"]
    assert listed["secret"] == secret[:10] + "..." and listed["pending"] == 0
    assert _command(instance, capsys, "secret", "1")[1].strip() == secret
    status, out, _ = _command(instance, capsys, "edit", "1", "--rotate-secret", "--disable")
    assert status == 0 and "(disabled)" in out and secret not in out
    status, out, _ = _command(instance, capsys, "test", "1")
    assert status == 1 and out.startswith("pending")
    status, out, _ = _command(instance, capsys, "attempts", "1")
    assert status == 0 and out == ""
    status, out, _ = _command(instance, capsys, "deliveries", "1", "--json")
    assert status == 0 and json.loads(out)["deliveries"][0]["event"] == "test"
    status, out, _ = _command(instance, capsys, "redeliver", "1")
    assert status == 0 and json.loads(out) == {"redelivered": 0}
    status, _, err = _command(instance, capsys, "add", "http://10.0.0.1/", "--scope", "account")
    assert status == 1 and "private" in err
    status, _, err = _command(instance, capsys, "edit", "7", "--enable")
    assert status == 1 and "no endpoint 7" in err
    assert _command(instance, capsys, "delete", "1")[0] == 0
    status, out, err = _command(instance, capsys, "list")
    assert out == "" and "no webhook endpoint" in err


def _fate(fate: Fate, account: str, sender: str, recipient: str | None = None) -> FateEvent:
    envelope = Envelope(
        sender, ("x@far.example",), birth=1.0, origin=Origin("sendmail", 1000, account)
    )
    return FateEvent(fate, 2.0, "q" + account, recipient, status="5.1.1", envelope=envelope)


def test_the_engines_outbox_queues_what_each_endpoint_wants_and_nothing_without_one(
    tmp_path: Path,
) -> None:
    """engine/webhook_outbox.py as the engine runs it: events handed to the listener, its
    thread matching them against the endpoints (event, account, sender domain) and queueing
    the JSON."""
    path = tmp_path / "webhooks.sqlite3"
    registry = CollectorRegistry()
    dropped = Counter("dropped", "events not queued", registry=registry)

    def outbox() -> WebhookOutbox:
        return WebhookOutbox(
            path,
            node=lambda: "node1",
            wake=tmp_path / "webhooks.sock",
            flush_seconds=60,
            classifier=Classifier.load(tmp_path / "no-rules.toml"),
            dropped=dropped,
        )

    idle = outbox()
    idle.start()
    idle.listen(_fate(Fate.ACCEPTED, "alice", "a@shop.example"))
    idle.close()
    assert not path.exists()  # no endpoint: nothing kept, no store made
    store = WebhookStore(path)
    everything = store.add_endpoint("http://h/all", EVENTS, "all", "", SECRET)
    alice = store.add_endpoint("http://h/alice", ("bounced",), "account", "alice", SECRET)
    shop = store.add_endpoint("http://h/shop", EVENTS, "domain", "shop.example", SECRET)
    running = outbox()
    running.start()
    running.listen(_fate(Fate.ACCEPTED, "alice", "a@mail.shop.example"))
    running.listen(_fate(Fate.FAILED, "alice", "a@other.example", "x@far.example"))
    running.listen(_fate(Fate.DELIVERED, "bob", "b@shop.example", "x@far.example"))
    running.listen(_fate(Fate.RETRIED, "bob", "b@shop.example"))  # not a webhook event
    running.close()
    queued = store.due(everything.id, 1e10, 10)[1]
    assert sorted((d.event, json.loads(d.body)["account"]) for d in queued) == [
        ("accepted", "alice"),
        ("bounced", "alice"),
        ("delivered", "bob"),
    ]
    assert [d.event for d in store.due(alice.id, 1e10, 10)[1]] == ["bounced"]
    shop_events = store.due(shop.id, 1e10, 10)[1]
    assert sorted(d.event for d in shop_events) == ["accepted", "delivered"]
    bounced = next(d for d in store.queued(everything.id, "pending")[0] if d.event == "bounced")
    assert bounced.queue_id == "qalice" and dropped._value.get() == 0


def test_an_accounts_requests_touch_its_own_endpoints_only(tmp_path: Path) -> None:
    store = WebhookStore(tmp_path / "webhooks.sqlite3")
    guard = AddressGuard()

    def ask(account: str, *words: str) -> Any:
        return json.loads(account_webhooks(store, guard, account, parse(list(words))))

    added = ask("alice", "add", "https://hooks.example.com/a", "--events", "bounced,expired")
    assert added["events"] == ["bounced", "expired"] and added["scope_value"] == "alice"
    for words in (
        ("add", "http://10.1.1.1/"),
        ("add", "https://x.example/", "--events", "sent"),
        ("delete", str(added["id"] + 1)),
        ("secret", "x"),
        ("attempts", str(added["id"]), "--page", "0"),
        ("rotate", str(added["id"]), "--grace-hours", "9999"),
        ("nonsense",),
    ):
        with pytest.raises(WebhooksRefused):
            ask("alice", *words)
    with pytest.raises(WebhooksRefused):
        ask("bob", "secret", str(added["id"]))  # alice's
    assert ask("bob", "list") == {"endpoints": []}
    assert ask("alice", "attempts", str(added["id"]))["total"] == 0
    rotated = ask("alice", "rotate", str(added["id"]))
    assert rotated["secret"] != added["secret"]
    event_id = queue_test(store, own(store, "alice", str(added["id"])), "node1")
    assert store.queued(added["id"], "pending")[0][0].event_id == event_id
    for _ in range(9):
        ask("alice", "add", "https://hooks.example.com/more")
    with pytest.raises(WebhooksRefused, match="at most 10"):
        ask("alice", "add", "https://hooks.example.com/eleventh")
    assert ask("alice", "delete", str(added["id"])) == {"deleted": added["id"]}
