"""The panel's memory of recently parsed calls: the same answer as parsing, nothing shared
that a handler could change, and bounded."""

from __future__ import annotations

import xmlrpc.client
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sendworx.api.registry import normalize_input
from sendworx.transports.route_call import MalformedRequest
from sendworx.transports.xmlrpc import RecentCalls, parse_request

SEND = "/nodeworx/mail/send"
KEY = "-----BEGIN INTERWORX API KEY-----\nabc\n-----END INTERWORX API KEY-----\n"


def body(auth: Any, action: str = "isRunning", *rest: Any) -> bytes:
    return xmlrpc.client.dumps((auth, SEND, action, *rest), "iworx.route", allow_none=True).encode()


def test_the_same_bytes_again_are_answered_from_memory() -> None:
    calls = RecentCalls()
    first = calls.parse(body(KEY))
    assert calls.parse(body(KEY)) is first
    assert (first.auth, first.call.controller, first.call.action, first.call.input) == (
        KEY,
        SEND,
        "isRunning",
        None,
    )
    assert len(calls) == 1


@pytest.mark.parametrize("no_input", [{}, [], "", None])
def test_every_spelling_of_no_input_is_kept_as_none(no_input: Any) -> None:
    assert RecentCalls().parse(body(KEY, "isRunning", no_input)).call.input is None


def test_what_is_kept_cannot_be_changed_by_whoever_reads_it() -> None:
    calls = RecentCalls()
    request = calls.parse(body({"apikey": KEY}, "isRunningOnNode", {"node_id": "mx1"}))
    with pytest.raises(TypeError):
        request.auth["apikey"] = "someone else"  # type: ignore[index]
    with pytest.raises(TypeError):
        request.call.input["node_id"] = "mx2"
    assert calls.parse(body({"apikey": KEY}, "isRunningOnNode", {"node_id": "mx1"})) is request


@pytest.mark.parametrize(
    "auth, values",
    [
        (KEY, {"routes": ["example.com smtp.example.net"]}),
        (KEY, {"settings": {"nested": 1}}),
        (KEY, ["a", "b"]),
        ({"apikey": [KEY]}, {}),
        (["not", "an", "auth"], {}),
    ],
)
def test_calls_holding_containers_are_parsed_every_time(auth: Any, values: Any) -> None:
    calls = RecentCalls()
    first = calls.parse(body(auth, "update", values))
    second = calls.parse(body(auth, "update", values))
    assert first is not second and first == second
    assert len(calls) == 0


def test_large_bodies_are_not_kept() -> None:
    calls = RecentCalls(max_body_bytes=1024)
    large = body(KEY + "x" * 2000)
    assert calls.parse(large) is not calls.parse(large)
    assert len(calls) == 0


def test_malformed_bodies_fail_every_time_and_are_not_kept() -> None:
    calls = RecentCalls()
    for _ in range(2):
        with pytest.raises(MalformedRequest):
            calls.parse(b"<methodCall><methodName>iworx.route</methodName>")
    assert len(calls) == 0


def test_only_the_newest_bodies_are_kept() -> None:
    calls = RecentCalls(capacity=8)
    oldest = calls.parse(body(KEY + "0"))
    for number in range(1, 20):
        calls.parse(body(KEY + str(number)))
    assert len(calls) == 8
    assert calls.parse(body(KEY + "0")) is not oldest  # forgotten, parsed again
    newest = calls.parse(body(KEY + "19"))
    assert calls.parse(body(KEY + "19")) is newest


def texts(size: int) -> st.SearchStrategy[str]:
    return st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=size)


scalars = st.one_of(texts(20), st.integers(-(2**31), 2**31 - 1), st.booleans())
inputs: st.SearchStrategy[Any] = st.one_of(
    st.just({}),
    st.just([]),
    st.dictionaries(texts(10), scalars, max_size=4),
    st.dictionaries(texts(10), st.lists(scalars, max_size=2), max_size=2),
)
auths: st.SearchStrategy[Any] = st.one_of(
    texts(40), st.dictionaries(texts(10), scalars, max_size=3)
)


@given(auth=auths, values=inputs)
def test_remembered_calls_mean_what_parsing_means(auth: Any, values: Any) -> None:
    data = body(auth, "update", values)
    parsed = parse_request(data)
    calls = RecentCalls()
    for remembered in (calls.parse(data), calls.parse(data)):
        assert (
            remembered.call.controller == parsed.call.controller
            and remembered.call.action == parsed.call.action
        )
        assert remembered.auth == parsed.auth
        assert normalize_input(remembered.call.input) == normalize_input(parsed.call.input)
