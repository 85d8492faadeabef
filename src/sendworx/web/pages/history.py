"""Delivery history (`/nodeworx/mail/history`, permission EMAIL): a search over every
message's events, newest first, a page at a time; and one message's whole story
(`/nodeworx/mail/history/{queue_id}`), from acceptance to its last event. Both read
`/nodeworx/mail/history`, as the CLI does. Linked from the Mail Queue and Activity."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sendworx.shared.bounce_classes import CLASSES
from sendworx.shared.errors import ValidationFailed
from sendworx.shared.history import EVENTS
from sendworx.web.page import Page, WebApp, view

HISTORY = "/nodeworx/mail/history"
PAGE = HISTORY
FILTERS = {
    "recipient": ("Recipient", "an address, or a domain"),
    "sender": ("Sender", "an address, or a domain"),
    "account": ("Account", "the Unix account that sent it"),
    "message_id": ("Message-ID", "the header's value"),
}
PER_PAGE = 50


def history_routes(web: WebApp) -> list[BaseRoute]:
    async def search(page: Page) -> Response:
        params = page.request.query_params
        wanted = {name: params.get(name, "").strip() for name in (*FILTERS, "event", "class")}
        wanted = {name: value for name, value in wanted.items() if value}
        number = int(params.get("page", "1")) if params.get("page", "1").isdigit() else 1
        inputs: dict[str, Any] = {**wanted, "page": max(number, 1), "per_page": PER_PAGE}
        reply = await page.call(HISTORY, "listEvents", inputs)
        problems: dict[str, str] = {}
        events: list[dict[str, Any]] = []
        more, unavailable = False, ""
        if reply.status == ValidationFailed.status:
            problems = dict(reply.problems)
        elif reply.status != 0:
            unavailable = str(reply.payload)
        else:
            events, more = reply.payload["events"], bool(reply.payload["more"])
        return page.render(
            "history.html",
            filters=FILTERS,
            events_list=EVENTS,
            classes=CLASSES,
            wanted=wanted,
            problems=problems,
            events=events,
            unavailable=unavailable,
            page_number=inputs["page"],
            previous=_url(wanted, inputs["page"] - 1) if inputs["page"] > 1 else "",
            next=_url(wanted, inputs["page"] + 1) if more else "",
        )

    async def story(page: Page) -> Response:
        queue_id = page.request.path_params["queue_id"]
        reply = await page.call(HISTORY, "queryMessage", {"queue_id": queue_id})
        events = reply.payload["events"] if reply.status == 0 else []
        problem = "" if reply.status == 0 else str(reply.problems.get("queue_id", reply.payload))
        return page.render(
            "history_message.html", queue_id=queue_id, events=events, problem=problem
        )

    return [
        Route(PAGE, view(web, search), methods=["GET"]),
        Route(f"{PAGE}/{{queue_id}}", view(web, story), methods=["GET"]),
    ]


def _url(wanted: dict[str, str], number: int) -> str:
    return f"{PAGE}?{urlencode({**wanted, 'page': number})}"
