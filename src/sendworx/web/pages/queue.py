"""Mail Queue (`/nodeworx/mail/queue`): totals by state, where mail waits and who sent it, a
searchable paged list with every filter `listMessages` has, one message in full, and the
operator's actions on a selection or on everything a search matches, after a confirmation
that says how many messages they touch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sendworx.shared.errors import ValidationFailed
from sendworx.web.forms import Form
from sendworx.web.page import Page, WebApp, action, view
from sendworx.web.pages.fields import action_inputs, fields
from sendworx.web.session import Notice, local_path

QUEUE = "/nodeworx/mail/queue"
PAGE = "/nodeworx/mail/queue"
SUMMARY_ROWS = 10
SUMMARY_MAX_AGE = 5  # seconds: the page polls; 100,000 messages are not regrouped each time
PAGE_SIZES = ("25", "50", "100", "250")
FILTER_LABELS = {
    "recipient": "Recipient",
    "sender": "Sender",
    "destination": "Destination",
    "state": "State",
    "kind": "Kind",
    "reply": "Last reply contains",
    "older_than": "Older than (seconds)",
    "younger_than": "Younger than (seconds)",
}
FILTERS = tuple(FILTER_LABELS)


@dataclass(frozen=True)
class Operation:
    label: str
    effect: str  # what happens to each message, for the confirmation
    done: str


OPERATIONS = {
    "retry": Operation("Retry", "tried again now (held ones stay held)", "Retried"),
    "hold": Operation("Hold", "held: never attempted and never expired until released", "Held"),
    "release": Operation("Release", "released and tried now", "Released"),
    "expire": Operation(
        "Expire", "bounced to their senders now, whatever is left undelivered", "Expired"
    ),
    "delete": Operation("Delete", "deleted without a bounce; this cannot be undone", "Deleted"),
}


def search_of(values: Any) -> dict[str, str]:
    """The filters given (a query string or a form), without the empty ones."""
    return {name: values.get(name, "").strip() for name in FILTERS if values.get(name, "").strip()}


def queue_url(search: dict[str, str]) -> str:
    return f"{PAGE}?{urlencode(search)}" if search else PAGE


def describe(search: dict[str, str]) -> str:
    if not search:
        return "the whole queue"
    return "; ".join(f"{FILTER_LABELS[name].lower()}: {value}" for name, value in search.items())


def plural(count: int, word: str = "message") -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


def queue_routes(web: WebApp) -> list[BaseRoute]:
    registry = web.dispatcher.registry
    filter_inputs = action_inputs(registry, QUEUE, "listMessages")

    async def show(page: Page) -> Response:
        params = page.request.query_params
        search = search_of(params)
        page_size = params.get("page_size", "50")
        cursor = params.get("cursor", "")
        query: dict[str, Any] = {**search, "page_size": page_size}
        if cursor:
            query["cursor"] = cursor
        summary = await page.payload(
            QUEUE, "querySummary", {"limit": SUMMARY_ROWS, "max_age": SUMMARY_MAX_AGE}
        )
        listing = await page.call(QUEUE, "listMessages", query)
        problems = listing.problems if listing.status == ValidationFailed.status else {}
        if listing.status not in (0, ValidationFailed.status):
            return page.render(
                "problem.html", 500, title="The queue cannot be listed", text=listing.payload
            )
        found = listing.payload if listing.status == 0 else {"messages": [], "total": 0}
        next_query = {**search, "page_size": page_size, "cursor": found.get("next_cursor", "")}
        return page.render(
            "queue.html",
            400 if problems else 200,
            summary=summary,
            found=found,
            search=search,
            filters=fields(filter_inputs, FILTER_LABELS, search, problems),
            problems=problems,
            choices={
                "state": filter_inputs["state"].schema["enum"],  # type: ignore[index]
                "kind": filter_inputs["kind"].schema["enum"],  # type: ignore[index]
            },
            page_size=page_size,
            page_sizes=PAGE_SIZES,
            paged=bool(cursor),
            first_url=queue_url({**search, "page_size": page_size} if search else {}),
            next_url=f"{PAGE}?{urlencode(next_query)}" if found.get("next_cursor") else "",
            here=queue_url({**search, **({"cursor": cursor} if cursor else {})}),
            describe=describe(search),
            operations=OPERATIONS,
        )

    async def message(page: Page) -> Response:
        message_id = page.request.path_params["message_id"]
        reply = await page.call(QUEUE, "queryMessage", {"id": message_id, "body": 1})
        if reply.status == ValidationFailed.status:
            return page.render(
                "problem.html",
                404,
                title="No such message",
                text=f"No message {message_id[:60]} is queued: it may have been delivered, "
                "bounced or deleted.",
                link=(f"/nodeworx/mail/history/{quote(message_id[:60])}", "What happened to it"),
            )
        if reply.status != 0:
            return page.render("problem.html", 500, title="Cannot read it", text=reply.payload)
        return page.render("message.html", message=reply.payload, operations=OPERATIONS)

    async def act(page: Page, form: Form) -> Response:
        name, _, scope = form.get("operation").partition(":")
        operation = OPERATIONS.get(name)
        search = search_of(form)
        back = local_path(form.get("back"), queue_url(search))
        if operation is None or scope not in ("selected", "matching"):
            return page.redirect(back, Notice("error", "Choose an action for the messages."))
        ids = list(dict.fromkeys(form.all("ids"))) if scope == "selected" else []
        if scope == "selected" and not ids:
            return page.redirect(
                back,
                Notice(
                    "error",
                    "Select messages first (their checkboxes), or act on everything the search "
                    "matches.",
                ),
            )
        if form.get("confirmed") != "1":
            if scope == "matching":
                counted = await page.payload(QUEUE, "listMessages", {**search, "page_size": 1})
                count, which = int(counted["total"]), f"that match {describe(search)}"
            else:
                count, which = len(ids), "you selected"
            return page.confirm(
                title=f"{operation.label} {plural(count)}?",
                text=f"The {plural(count)} {which} will be {operation.effect}.",
                target=f"{PAGE}/act",
                fields={"operation": f"{name}:{scope}", "back": back, **search},
                ids=ids,
                button=f"{operation.label} {plural(count)}",
                danger=name in ("delete", "expire"),
                cancel=back,
            )
        if scope == "selected":
            reply = await page.call(QUEUE, name, {"ids": ids})
        elif name == "delete":
            reply = await page.call(QUEUE, "purge", {**search, "confirm": 1})
        else:
            reply = await page.call(QUEUE, name, search)
        if reply.status != 0:
            text = "; ".join(reply.problems.values()) if reply.problems else str(reply.payload)
            return page.redirect(back, Notice("error", f"Nothing was done: {text}"))
        # The page shown next must count the change: ask for a summary as the queue is now,
        # which the page then reuses (it accepts one SUMMARY_MAX_AGE seconds old).
        await page.payload(QUEUE, "querySummary", {"limit": SUMMARY_ROWS})
        result = reply.payload
        details = []
        if result.get("note"):
            details.append(str(result["note"]))
        if result.get("missing"):
            details.append(f"{plural(len(result['missing']))} had already left the queue.")
        if name == "delete" and back.startswith(f"{PAGE}/message/"):
            back = queue_url({})
        return page.redirect(
            back,
            Notice("ok", f"{operation.done} {plural(int(result['touched']))}.", tuple(details)),
        )

    return [
        Route(PAGE, view(web, show), methods=["GET"]),
        Route(f"{PAGE}/message/{{message_id}}", view(web, message), methods=["GET"]),
        Route(f"{PAGE}/act", action(web, act), methods=["POST"]),
    ]
