"""smtproutes parsing and the lookup walk (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sendworx.shared.routes import Relay, Route, RouteError, RouteTable, parse_route

label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
hostname = st.lists(label, min_size=1, max_size=4).map(".".join)


def test_route_walk_prefers_most_specific_suffix() -> None:
    table = RouteTable.from_lines([":catchall.test", ".c:suffix-c.test", ".b.c:suffix-bc.test"])
    route = table.lookup("a.b.c")
    assert route is not None and route.relay == Relay("suffix-bc.test", None, False)


def test_exact_match_beats_suffixes() -> None:
    table = RouteTable.from_lines([".b.c:suffix.test", "a.b.c:exact.test"])
    route = table.lookup("A.B.C")
    assert route is not None and route.relay is not None and route.relay.host == "exact.test"


def test_exact_entry_with_empty_relay_stops_the_walk_and_means_mx() -> None:
    table = RouteTable.from_lines([":catchall.test", "direct.test:"])
    route = table.lookup("direct.test")
    assert route == Route("direct.test", None)


def test_no_route_means_mx() -> None:
    assert RouteTable.from_lines(["other.test:relay.test"]).lookup("mine.test") is None


def test_suffix_does_not_match_the_bare_domain() -> None:
    assert RouteTable.from_lines([".example.test:relay.test"]).lookup("example.test") is None


def test_later_lines_override_earlier_ones_with_the_same_domain() -> None:
    table = RouteTable.from_lines(["x.test:first.test", "x.test:second.test"])
    route = table.lookup("x.test")
    assert route is not None and route.relay is not None and route.relay.host == "second.test"


@pytest.mark.parametrize(
    ("line", "relay"),
    [
        ("a.test:relay.test", Relay("relay.test", None, False)),
        ("a.test:relay.test:2525", Relay("relay.test", 2525, False)),
        ("a.test:192.0.2.1", Relay("192.0.2.1", None, True)),
        ("a.test:[192.0.2.1]:26", Relay("192.0.2.1", 26, True)),
        ("a.test:[2001:db8::1]:587", Relay("2001:db8::1", 587, True)),
        (":[127.0.0.1]", Relay("127.0.0.1", None, True)),
        ("a.test:", None),
    ],
)
def test_relays_parse(line: str, relay: Relay | None) -> None:
    assert parse_route(line).relay == relay


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "empty"),
        ("a.test relay.test", "spaces"),
        ("norelay", "no ':'"),
        ("a.test:relay.test:0", "1 to 65535"),
        ("a.test:relay.test:65536", "1 to 65535"),
        ("a.test:relay.test:http", "1 to 65535"),
        ("a.test:[not-an-ip]", "not an IP"),
        ("a.test:[192.0.2.1", "unclosed"),
        ("a.test:[192.0.2.1]x", "unexpected"),
        ("bad_domain!:relay.test", "not empty, a host name or a .suffix"),
        ("a.test:-relay-.test", "not a host name"),
        ("..test:relay.test", "not empty, a host name"),
        ("a.test:" + "r" * 64 + ".test", "not a host name"),
    ],
)
def test_bad_routes_say_what_is_wrong(line: str, message: str) -> None:
    with pytest.raises(RouteError, match=message):
        parse_route(line)


@given(domain=hostname, relay=hostname, port=st.none() | st.integers(1, 65535))
def test_routes_round_trip_through_their_text(domain: str, relay: str, port: int | None) -> None:
    text = f"{domain}:{relay}" + ("" if port is None else f":{port}")
    route = parse_route(text)
    assert parse_route(str(route)) == route


@given(labels=st.lists(label, min_size=1, max_size=5))
def test_catch_all_matches_every_domain(labels: list[str]) -> None:
    table = RouteTable.from_lines([":[127.0.0.1]"])
    assert table.lookup(".".join(labels)) == Route("", Relay("127.0.0.1", None, True))
