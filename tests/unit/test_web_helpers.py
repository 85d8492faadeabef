"""The pages' pure parts: the routes table's row operations, where a login may send you, CSRF
tokens, the origin check, notices, and the filters that format figures for people."""

from __future__ import annotations

from starlette.requests import Request

from sendworx.web.forms import Form
from sendworx.web.pages.mta import RouteRow, edited_rows
from sendworx.web.rendering import age, size, when
from sendworx.web.security import CsrfTokens, same_origin
from sendworx.web.session import MAX_MESSAGES, Notice, Notices, local_path


def _routes_form(op: str, *rows: tuple[str, str]) -> Form:
    fields = [("csrf", "x")]
    for domain, relay in rows:
        fields += [("route_domain", domain), ("route_relay", relay)]
    return Form((*fields, ("op", op)))


def test_route_rows_move_and_go_and_blank_rows_are_dropped() -> None:
    rows = [("a.test", "r1"), ("b.test", ""), ("", "smart.example")]
    assert edited_rows(_routes_form("up-1", *rows, ("", ""))) == (
        [RouteRow("b.test", ""), RouteRow("a.test", "r1"), RouteRow("", "smart.example")],
        "up",
    )
    moved, _ = edited_rows(_routes_form("down-2", *rows))  # the last row stays last
    assert [row.domain for row in moved] == ["a.test", "b.test", ""]
    gone, operation = edited_rows(_routes_form("delete-0", *rows))
    assert operation == "delete" and [row.domain for row in gone] == ["b.test", ""]
    untouched, _ = edited_rows(_routes_form("delete-99", *rows))
    assert len(untouched) == 3
    trimmed, operation = edited_rows(_routes_form("save", (" c.test ", " [192.0.2.1]:25 ")))
    assert operation == "save" and trimmed == [RouteRow("c.test", "[192.0.2.1]:25")]


def test_after_login_only_a_path_on_this_panel_is_followed() -> None:
    assert local_path("/nodeworx/mail/queue?state=held", "/") == "/nodeworx/mail/queue?state=held"
    for elsewhere in ("https://evil.test/", "//evil.test/", "/\\evil.test", "", "x", "/a\nb"):
        assert local_path(elsewhere, "/") == "/", elsewhere


def test_a_csrf_token_belongs_to_its_session_and_its_process() -> None:
    tokens = CsrfTokens()
    token = tokens.token("session-1")
    assert tokens.valid("session-1", token)
    assert not tokens.valid("session-2", token)
    assert not tokens.valid("session-1", "")
    assert not tokens.valid("session-1", "é" * 64)  # not ASCII: refused, not an error
    assert not CsrfTokens().valid("session-1", token)  # a restarted panel


def _request(headers: dict[str, str], scheme: str = "https") -> Request:
    raw = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    return Request(
        {
            "type": "http",
            "scheme": scheme,
            "headers": raw,
            "method": "POST",
            "path": "/",
            "query_string": b"",
        }
    )


def test_the_origin_check_believes_origin_then_referer() -> None:
    host = {"Host": "panel.example:2443"}
    assert same_origin(_request({**host, "Origin": "https://panel.example:2443"}))
    assert not same_origin(_request({**host, "Origin": "https://evil.example"}))
    assert not same_origin(_request({**host, "Origin": "null"}))  # a sandboxed frame
    assert not same_origin(_request({**host, "Origin": "http://panel.example:2443"}))
    assert same_origin(_request({**host, "Referer": "https://panel.example:2443/x?y"}))
    assert not same_origin(_request({**host, "Referer": "https://panel.example:9999/"}))
    assert same_origin(_request(host))  # neither: the CSRF token decides


def test_notices_wait_for_their_session_and_stay_bounded() -> None:
    notices = Notices()
    for number in range(MAX_MESSAGES + 3):
        notices.add("s1", Notice("ok", str(number)))
    waiting = notices.take("s1")
    assert waiting[0].text == "3" and len(waiting) == MAX_MESSAGES
    assert notices.take("s1") == [] and notices.take("s2") == []


def test_figures_are_formatted_for_people() -> None:
    assert [age(s) for s in (0, 59, 60, 3_600, 3_660, 86_400, 90_000)] == [
        "0 s",
        "59 s",
        "1 min",
        "1 h",
        "1 h 1 min",
        "1 d",
        "1 d 1 h",
    ]
    assert [size(n) for n in (0, 1023, 1024, 5 * 1024 * 1024)] == [
        "0 B",
        "1023 B",
        "1.0 KB",
        "5.0 MB",
    ]
    assert when(0) == "" and when(1_800_000_000) == "2027-01-15 08:00:00 UTC"
