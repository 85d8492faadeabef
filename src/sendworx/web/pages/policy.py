"""Sending Policy (`/nodeworx/mail/policy`, permission EMAIL): the senders on hold, released
or purged behind a confirmation; a sender put on hold by hand; and the policy file, edited
with every problem named and nothing saved on any (the API's `update`)."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sendworx.shared.errors import ValidationFailed
from sendworx.shared.wire import Reply
from sendworx.web.forms import Form
from sendworx.web.page import Page, WebApp, action, view
from sendworx.web.pages.outcomes import change_notice
from sendworx.web.session import Notice

POLICY = "/nodeworx/mail/policy"
PAGE = POLICY
ENDINGS = {
    "release": ("Release", "releaseHold", "Its held mail is tried now; the sender sends again."),
    "purge": (
        "Purge",
        "purgeHold",
        "Its held mail is deleted, without a bounce, and the hold ends. This cannot be undone.",
    ),
}


def policy_routes(web: WebApp) -> list[BaseRoute]:
    async def render(
        page: Page, *, text: str | None = None, problem: str = "", status: int = 200
    ) -> Response:
        current: dict[str, Any] = await page.payload(POLICY, "queryPolicy")  # holds included
        return page.render(
            "policy.html",
            status,
            holds=current["holds"],
            policy=current,
            text=current["policy"] if text is None else text,
            problem=problem,
        )

    async def show(page: Page) -> Response:
        return await render(page)

    async def end_hold(page: Page, form: Form) -> Response:
        operation, hold = form.get("operation"), form.get("hold")
        if operation not in ENDINGS or not hold:
            return page.redirect(PAGE, Notice("error", "Choose a hold and what to do with it."))
        label, api_action, meaning = ENDINGS[operation]
        everywhere = form.get("cascade_to_nodes") == "1"
        if form.get("confirmed") != "1":
            return page.confirm(
                title=f"{label} the hold on {hold}?",
                text=meaning,
                target=f"{PAGE}/hold",
                fields={
                    "operation": operation,
                    "hold": hold,
                    "cascade_to_nodes": "1" if everywhere else "0",
                },
                button=f"{label} {hold}",
                danger=operation == "purge",
                cancel=PAGE,
            )
        inputs: dict[str, Any] = {"hold": hold, "cascade_to_nodes": int(everywhere)}
        reply = await page.call(POLICY, api_action, inputs)
        return page.redirect(PAGE, _notice(reply, operation, hold))

    async def add_hold(page: Page, form: Form) -> Response:
        inputs = {"hold": form.get("hold"), "reason": form.get("reason")}
        reply = await page.call(POLICY, "addHold", inputs)
        if reply.status == ValidationFailed.status:
            problem = reply.problems.get("hold") or str(reply.payload)
            return page.redirect(PAGE, Notice("error", f"Not held: {problem}"))
        return page.redirect(PAGE, _notice(reply, "add", inputs["hold"]))

    async def save_file(page: Page, form: Form) -> Response:
        text = form.get("policy").replace("\r\n", "\n")
        inputs = {"policy": text, "cascade_to_nodes": int(form.get("cascade_to_nodes") == "1")}
        reply = await page.call(POLICY, "update", inputs)
        if reply.status == ValidationFailed.status:
            problem = reply.problems.get("policy") or str(reply.payload)
            return await render(page, text=text, problem=problem, status=400)
        return page.redirect(PAGE, change_notice(reply, "Sending policy saved"))

    return [
        Route(PAGE, view(web, show), methods=["GET"]),
        Route(f"{PAGE}/hold", action(web, end_hold), methods=["POST"]),
        Route(f"{PAGE}/add", action(web, add_hold), methods=["POST"]),
        Route(f"{PAGE}/file", action(web, save_file), methods=["POST"]),
    ]


def _notice(reply: Reply, operation: str, hold: str) -> Notice:
    """ "domain:x released: 3 messages." here; one line per node when it went to every node."""
    verb = {"release": "released", "purge": "purged", "add": "put on hold"}[operation]
    payload = reply.payload
    if reply.status == 0 and isinstance(payload, dict) and "touched" in payload:
        count = payload["touched"]
        return Notice("ok", f"{hold} {verb}: {count} message{'' if count == 1 else 's'}.")
    return change_notice(reply, f"{hold} {verb}")
