"""Webhooks' pure rules: the signature, where requests may go, when to retry and pause, what
an event's body says, and the store's queue (SQLite in a temporary directory)."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import sqlite3
from pathlib import Path

import pytest

from sendworx.engine.events import Fate, FateEvent
from sendworx.engine.webhook_outbox import event_name, webhook_event
from sendworx.shared.config import WebhooksConfig
from sendworx.shared.network_guard import AddressGuard, RefusedAddress
from sendworx.shared.queue_format import Envelope, Origin, header_notes
from sendworx.shared.webhook_signature import SignatureError, sign, verify
from sendworx.shared.webhooks import EVENTS, NewDelivery, Settlement, WebhookStore
from sendworx.webhooks.health import Health, retry_delay

BODY = b'{"id":"evt_1","event":"delivered"}'


def test_the_signature_is_stripes_scheme_and_any_v1_of_a_rotation_verifies() -> None:
    header = sign(["new-secret-0123456789", "old-secret-0123456789"], 1_700_000_000, BODY)
    stamp, first, second = header.split(",")
    assert stamp == "t=1700000000"
    expected = hmac.new(b"old-secret-0123456789", b"1700000000." + BODY, hashlib.sha256)
    assert second == f"v1={expected.hexdigest()}"
    assert first.startswith("v1=") and first != second
    for secret in ("new-secret-0123456789", "old-secret-0123456789"):
        assert verify(header, secret, BODY, now=1_700_000_100) == 1_700_000_000


@pytest.mark.parametrize(
    ("secret", "body", "now"),
    [
        ("other-secret-0123456", BODY, 1_700_000_000),  # not our secret
        ("new-secret-0123456789", BODY + b" ", 1_700_000_000),  # the body changed
        ("new-secret-0123456789", BODY, 1_700_000_301),  # replayed after five minutes
    ],
)
def test_a_signature_that_does_not_hold_is_refused(secret: str, body: bytes, now: int) -> None:
    header = sign(["new-secret-0123456789"], 1_700_000_000, BODY)
    with pytest.raises(SignatureError):
        verify(header, secret, body, now=now)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://[::1]:8080/",
        "http://10.1.2.3/",
        "http://192.168.0.10/",
        "http://172.16.5.5/",
        "http://169.254.169.254/latest/meta-data/",  # the cloud's metadata service
        "http://[fd00:ec2::254]/",  # its IPv6 address
        "http://[::ffff:127.0.0.1]/",  # IPv4 inside IPv6
        "http://100.64.0.1/",  # shared (carrier-grade NAT)
        "http://0.0.0.0/",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
        "ftp://example.com/",
        "http://user:pass@example.com/",
        "http://exa mple.com/",
        "file:///etc/passwd",
        "http:///nohost",
    ],
)
def test_urls_that_point_inside_or_are_not_http_are_refused(url: str) -> None:
    with pytest.raises(RefusedAddress):
        AddressGuard().check_url(url)


def test_the_operators_networks_are_allowed_and_nothing_else() -> None:
    guard = AddressGuard(["127.0.0.0/8", "10.9.0.0/16"])
    assert guard.check_url("http://127.0.0.5:81/x").port == 81
    assert guard.check_url("https://10.9.1.1/").port == 443
    assert guard.check_url("http://[::ffff:127.0.0.1]/").literal is not None
    with pytest.raises(RefusedAddress):
        guard.check_url("http://10.8.0.1/")
    with pytest.raises(RefusedAddress):
        guard.check_url("http://[::1]/")  # IPv6 loopback was not allowed
    target = AddressGuard().check_url("https://hooks.example.com/in")
    assert (target.host, target.port, target.literal) == ("hooks.example.com", 443, None)
    assert AddressGuard().refusal(__import__("ipaddress").ip_address("93.184.216.34")) is None


def test_retries_double_within_jitter_and_the_breaker_pauses_longer_each_time() -> None:
    config = WebhooksConfig(retry_seconds=10, max_retry_seconds=3600, breaker_failures=3)
    rng = random.Random(1)
    delays = [retry_delay(attempts, config, rng) for attempts in range(1, 12)]
    for attempts, delay in enumerate(delays, start=1):
        base = min(10 * 2 ** (attempts - 1), 3600)
        assert base * 0.8 <= delay <= base * 1.2
    health = Health()
    assert not health.failed(100.0, config) and not health.failed(101.0, config)
    assert health.failed(102.0, config) and health.paused(110.0)
    assert health.paused_until == 102.0 + 30
    assert not health.probing(120.0) and health.probing(132.0)
    assert health.failed(132.0, config)  # the probe failed: paused again, twice as long
    assert health.paused_until == 132.0 + 60
    assert health.succeeded() and not health.paused(133.0) and not health.succeeded()


def test_subjects_are_decoded_and_cut_and_the_message_id_found_in_the_head_only() -> None:
    message = (
        b"From: a@b\r\nSubject: =?utf-8?q?Caf=C3=A9?= order\r\n #12\r\n"
        b"Message-ID: <x@y>\r\n\r\nSubject: not this\r\n"
    )
    assert header_notes(message) == ("x@y", "Café order #12")
    assert header_notes(b"Subject: " + b"s" * 400 + b"\n\n")[1] == "s" * 250
    assert header_notes(b"Subject: =?bogus?x?zz?=\n\n") == ("", "=?bogus?x?zz?=")
    assert header_notes(b"\n\nSubject: body only\n") == ("", "")


def _fate(fate: Fate, status: str = "", recipient: str | None = None) -> FateEvent:
    envelope = Envelope(
        "a@shop.example",
        ("x@far.example", "y@far.example"),
        birth=1_700_000_000.0,
        origin=Origin("sendmail", 1001, "alice"),
        size=321,
        message_id_header="m@shop.example",
        subject="Your order",
    )
    return FateEvent(
        fate, 1_700_000_005.25, "q1", recipient, status=status, reply="550 5.1.1 gone",
        relay="mx.far.example[192.0.2.1]", attempt=2, envelope=envelope,
    )  # fmt: skip


def test_fates_become_webhook_events_with_the_documented_fields() -> None:
    assert event_name(_fate(Fate.FAILED, "5.1.1", "x@far.example")) == "bounced"
    assert event_name(_fate(Fate.FAILED, "4.4.7", "x@far.example")) == "expired"
    assert event_name(_fate(Fate.BOUNCED)) is None  # the report itself is no event
    assert {event_name(_fate(fate)) for fate in Fate} - {None} == set(EVENTS)
    event = webhook_event(_fate(Fate.FAILED, "5.1.1", "x@far.example"), "bounced", "node1")
    document = json.loads(event.to_json())
    assert document["event"] == "bounced" and document["outcome"] == "failed"
    assert document["time"] == "2023-11-14T22:13:25.250Z"
    assert document["message"] == {
        "queue_id": "q1",
        "message_id": "m@shop.example",
        "from": "a@shop.example",
        "to": ["x@far.example", "y@far.example"],
        "to_count": 2,
        "subject": "Your order",
        "size": 321,
    }
    assert (document["recipient"], document["destination"]) == ("x@far.example", "far.example")
    assert (document["account"], document["attempt"], document["node"]) == ("alice", 2, "node1")
    assert document["id"].startswith("evt_") and document["status"] == "5.1.1"


def _item(endpoint: int, n: int, created: float = 1000.0) -> NewDelivery:
    return NewDelivery(endpoint, f"evt_{n}", "delivered", "q", b"{}", created)


def test_the_queue_gives_oldest_due_first_and_settles(tmp_path: Path) -> None:
    store = WebhookStore(tmp_path / "webhooks.sqlite3")
    endpoint = store.add_endpoint("http://h/", EVENTS, "all", "", "s" * 20, now=1.0)
    store.enqueue([_item(endpoint.id, n) for n in range(5)])
    store.enqueue([_item(endpoint.id, 5)], due=2000.0)
    current, first = store.due(endpoint.id, now=1000.0, limit=2)
    assert current == endpoint and [item.event_id for item in first] == ["evt_0", "evt_1"]
    # Nothing marks a batch taken: read again (a sender restarted after a kill -9), the same
    # deliveries are due, to be sent again.
    assert store.due(endpoint.id, 1000.0, 2)[1] == first
    store.settle(
        [
            Settlement(first[0], 1001.0, 200, "ok", 1.0, "done"),
            Settlement(first[1], 1001.0, 500, "oops", 1.0, "retry", due=1100.0),
        ]
    )
    assert [item.event_id for item in store.due(endpoint.id, 1050.0, 10)[1]] == [
        "evt_2", "evt_3", "evt_4",
    ]  # fmt: skip
    retried = store.due(endpoint.id, 1100.0, 10)[1]
    assert [(item.event_id, item.attempts) for item in retried][-1] == ("evt_1", 1)
    assert [item.event_id for item in store.due(endpoint.id, 2000.0, 10)[1]][-1] == "evt_5"
    attempts, total = store.attempts(endpoint.id)
    assert total == 2 and [a.outcome for a in attempts] == ["retry", "done"]
    assert store.edit_endpoint(endpoint.id, enabled=False) is not None
    assert store.due(endpoint.id, 2000.0, 10)[1] == []  # disabled: nothing is due
    assert store.prune(now=1000.0 + 86401, max_age=86400) == 5  # past their life: dead
    assert store.counts() == {endpoint.id: {"pending": 0, "dead": 5}}
    assert store.redeliver(endpoint.id, [], now=90000.0) == 5
    assert store.delete_endpoint(endpoint.id) and store.counts() == {}


def test_a_store_from_before_is_read_as_it_is(tmp_path: Path) -> None:
    """A store written by a sender that still marked batches taken (a `leased` column and
    its partial index): after the upgrade what was marked mid-send is due like the rest."""
    path = tmp_path / "webhooks.sqlite3"
    WebhookStore(path).add_endpoint("http://h/", EVENTS, "all", "", "s" * 20, now=1.0)
    db = sqlite3.connect(path)
    with db:
        db.execute("DROP INDEX deliveries_pending")
        db.execute("ALTER TABLE deliveries ADD COLUMN leased INTEGER NOT NULL DEFAULT 0")
        db.execute(
            "CREATE INDEX deliveries_due ON deliveries (endpoint, due) "
            "WHERE state = 'pending' AND leased = 0"
        )
        db.executemany(
            "INSERT INTO deliveries (endpoint, event_id, event, body, created, due, leased) "
            "VALUES (1, ?, 'delivered', x'7b7d', 5.0, 5.0, ?)",
            [("evt_a", 1), ("evt_b", 0)],
        )
    db.close()
    store = WebhookStore(path)
    assert [item.event_id for item in store.due(1, 10.0, 10)[1]] == ["evt_a", "evt_b"]
    store.enqueue([_item(1, 9, created=6.0)])
    assert [item.event_id for item in store.due(1, 10.0, 10)[1]] == ["evt_a", "evt_b", "evt_9"]
