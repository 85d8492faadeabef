"""Delivery history (`/nodeworx/mail/history`, permission EMAIL): a search over every
message's events, newest first, a page at a time; and one message's whole story
(`/nodeworx/mail/history/{queue_id}`), from acceptance to its last event. Both read
`/nodeworx/mail/history`, as the CLI does. Linked from the Mail Queue and Activity."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sendworx.shared.bounce_classes import CLASSES
from sendworx.shared.history import EVENTS
from sendworx.web.page import Page, WebApp, view
from sendworx.web.pages.searches import run_search

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
        names = (*FILTERS, "event", "class")
        payload, context = await run_search(page, PAGE, HISTORY, "listEvents", names, PER_PAGE)
        return page.render(
            "history.html",
            filters=FILTERS,
            events_list=EVENTS,
            classes=CLASSES,
            events=payload["events"] if payload is not None else [],
            **context,
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
