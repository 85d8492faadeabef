"""Webhooks (`/nodeworx/mail/webhooks`, permission EMAIL): the endpoints this node's events
are posted to, each with its state and queue; the recent attempts of each, with what the
receiver answered; adding an endpoint (its secret shown once), sending a test event,
enabling or disabling, rotating the secret, redelivering dead events, deleting (behind a
confirmation). Everything goes through `/nodeworx/mail/webhooks`, as the CLI does."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sendworx.shared.webhooks import EVENTS, SCOPES
from sendworx.web.forms import Form
from sendworx.web.page import Page, WebApp, action, view
from sendworx.web.pages.outcomes import problems_of
from sendworx.web.session import Notice

WEBHOOKS = "/nodeworx/mail/webhooks"
PAGE = WEBHOOKS
ATTEMPTS_SHOWN = 10


def webhooks_routes(web: WebApp) -> list[BaseRoute]:
    async def show(page: Page) -> Response:
        reply = await page.call(WEBHOOKS, "listEndpoints", {})
        unavailable = "" if reply.status == 0 else str(reply.payload)
        endpoints: list[dict[str, Any]] = reply.payload["endpoints"] if not unavailable else []
        for endpoint in endpoints:
            attempts = await page.call(
                WEBHOOKS, "listAttempts", {"id": endpoint["id"], "per_page": ATTEMPTS_SHOWN}
            )
            endpoint["attempts"] = attempts.payload["attempts"] if attempts.status == 0 else []
        return page.render(
            "webhooks.html",
            endpoints=endpoints,
            events=EVENTS,
            scopes=SCOPES,
            unavailable=unavailable,
        )

    async def add(page: Page, form: Form) -> Response:
        inputs: dict[str, Any] = form.subset(("url", "scope", "scope_value", "description"))
        inputs["events"] = form.all("events") or list(EVENTS)
        reply = await page.call(WEBHOOKS, "add", inputs)
        if reply.status != 0:
            return page.redirect(PAGE, Notice("error", f"Not added: {problems_of(reply)}"))
        endpoint = reply.payload
        text = (
            f"Endpoint {endpoint['id']} added. Its signing secret, shown this once (and by "
            f"`sendworx webhooks secret {endpoint['id']}`): {endpoint['secret']}"
        )
        if endpoint.get("warning"):
            text += f". Note: {endpoint['warning']}"
        return page.redirect(PAGE, Notice("ok", text))

    async def test(page: Page, form: Form) -> Response:
        reply = await page.call(WEBHOOKS, "test", {"id": form.get("id")})
        if reply.status != 0:
            return page.redirect(PAGE, Notice("error", f"Not sent: {problems_of(reply)}"))
        result = reply.payload
        if result.get("outcome") == "done":
            status = result["status"]
            said = f"{status} in {result['milliseconds']} ms"
            return page.redirect(PAGE, Notice("ok", f"Test event delivered: {said}."))
        said = f"{result.get('status') or 'no answer'}: {result.get('reply', '')}"
        return page.redirect(PAGE, Notice("error", f"Test event not delivered ({said})."))

    async def switch(page: Page, form: Form) -> Response:
        enabled = 1 if form.get("enabled") == "1" else 0
        reply = await page.call(WEBHOOKS, "edit", {"id": form.get("id"), "enabled": enabled})
        if reply.status != 0:
            return page.redirect(PAGE, Notice("error", f"Not changed: {problems_of(reply)}"))
        word = "enabled: events are sent to it again" if enabled else "disabled"
        return page.redirect(PAGE, Notice("ok", f"Endpoint {reply.payload['id']} {word}."))

    async def rotate(page: Page, form: Form) -> Response:
        endpoint_id = form.get("id")
        if form.get("confirmed") != "1":
            return page.confirm(
                title=f"Rotate the signing secret of endpoint {endpoint_id}?",
                text="A new secret signs from now on; the old one keeps signing beside it for"
                " 24 hours, so the receiver can move to the new one meanwhile.",
                target=f"{PAGE}/rotate",
                fields={"id": endpoint_id},
                button="Rotate the secret",
                danger=False,
                cancel=PAGE,
            )
        inputs = {"id": endpoint_id, "rotate_secret": 1, "grace_hours": 24}
        reply = await page.call(WEBHOOKS, "edit", inputs)
        if reply.status != 0:
            return page.redirect(PAGE, Notice("error", f"Not rotated: {problems_of(reply)}"))
        secret = reply.payload["secret"]
        text = f"New secret of endpoint {endpoint_id}, shown this once: {secret}"
        return page.redirect(PAGE, Notice("ok", text))

    async def redeliver(page: Page, form: Form) -> Response:
        reply = await page.call(WEBHOOKS, "redeliver", {"id": form.get("id")})
        if reply.status != 0:
            return page.redirect(
                PAGE, Notice("error", f"Nothing redelivered: {problems_of(reply)}")
            )
        count = reply.payload["redelivered"]
        return page.redirect(PAGE, Notice("ok", f"{count} dead event(s) due again."))

    async def delete(page: Page, form: Form) -> Response:
        endpoint_id = form.get("id")
        if form.get("confirmed") != "1":
            return page.confirm(
                title=f"Delete endpoint {endpoint_id}?",
                text="Its waiting and dead events and its attempts go with it.",
                target=f"{PAGE}/delete",
                fields={"id": endpoint_id},
                button="Delete the endpoint",
                danger=True,
                cancel=PAGE,
            )
        reply = await page.call(WEBHOOKS, "delete", {"id": endpoint_id})
        if reply.status != 0:
            return page.redirect(PAGE, Notice("error", f"Not deleted: {problems_of(reply)}"))
        return page.redirect(PAGE, Notice("ok", f"Endpoint {endpoint_id} deleted."))

    return [
        Route(PAGE, view(web, show), methods=["GET"]),
        Route(f"{PAGE}/add", action(web, add), methods=["POST"]),
        Route(f"{PAGE}/test", action(web, test), methods=["POST"]),
        Route(f"{PAGE}/switch", action(web, switch), methods=["POST"]),
        Route(f"{PAGE}/rotate", action(web, rotate), methods=["POST"]),
        Route(f"{PAGE}/redeliver", action(web, redeliver), methods=["POST"]),
        Route(f"{PAGE}/delete", action(web, delete), methods=["POST"]),
    ]
