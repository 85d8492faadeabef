"""How an attempt splits a message's recipients: this host's, per destination in bounded
transactions, and those that name nowhere."""

from __future__ import annotations

from sendworx.engine.attempts import Outcome
from sendworx.engine.delivery_plan import plan_delivery
from sendworx.shared.destinations import MxDomain, RelayHost
from sendworx.shared.routes import RouteTable, parse_route

NO_ROUTES = RouteTable()


def test_recipients_group_by_destination_in_transactions_of_the_cap() -> None:
    recipients = [f"u{n}@a.test" for n in range(5)] + ["x@b.test", "y@A.TEST"]
    plan = plan_delivery(
        "s@o.test", recipients, routes=NO_ROUTES, local_domains=frozenset(), per_transaction=2
    )
    assert plan.failures == [] and plan.local == []
    by_a = [rcpts for destination, rcpts in plan.transactions if destination == MxDomain("a.test")]
    assert by_a == [
        ["u0@a.test", "u1@a.test"],
        ["u2@a.test", "u3@a.test"],
        ["u4@a.test", "y@A.TEST"],
    ]
    assert (MxDomain("b.test"), ["x@b.test"]) in plan.transactions


def test_this_hosts_recipients_go_local_and_routes_pick_the_relay() -> None:
    routes = RouteTable([parse_route("b.test:relay.test:2525")])
    plan = plan_delivery(
        "s@o.test",
        ["root@me.test", "x@b.test"],
        routes=routes,
        local_domains=frozenset({"me.test"}),
        per_transaction=100,
    )
    assert plan.local == ["root@me.test"]
    [(destination, recipients)] = plan.transactions
    assert isinstance(destination, RelayHost) and destination.relay.port == 2525
    assert recipients == ["x@b.test"]


def test_a_recipient_that_names_nowhere_fails_now_and_the_rest_go() -> None:
    plan = plan_delivery(
        "s@o.test",
        ["bad@a..b", "ok@a.test"],
        routes=NO_ROUTES,
        local_domains=frozenset(),
        per_transaction=100,
    )
    [failure] = plan.failures
    assert (failure.recipient, failure.outcome, failure.status) == (
        "bad@a..b",
        Outcome.FAILED,
        "5.1.3",
    )
    assert plan.transactions == [(MxDomain("a.test"), ["ok@a.test"])]


def test_a_sender_with_control_characters_never_reaches_the_wire() -> None:
    plan = plan_delivery(
        "s\r\nRCPT TO:<x@evil.test>@o.test",
        ["a@a.test", "b@b.test"],
        routes=NO_ROUTES,
        local_domains=frozenset(),
        per_transaction=100,
    )
    assert plan.transactions == [] and plan.local == []
    assert [(f.recipient, f.status) for f in plan.failures] == [
        ("a@a.test", "5.1.7"),
        ("b@b.test", "5.1.7"),
    ]
