"""Suppression list (`/nodeworx/mail/suppression`, permission EMAIL): the addresses mail is
not attempted to, searched a page at a time, newest first; addresses added by hand or taken
off (behind a confirmation); and the whole list as CSV. Everything goes through
`/nodeworx/mail/suppression`, as the CLI does."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sendworx.shared.suppression import REASONS
from sendworx.web.forms import Form
from sendworx.web.page import NO_STORE, Page, WebApp, action, view
from sendworx.web.pages.outcomes import problems_of
from sendworx.web.pages.searches import run_search
from sendworx.web.session import Notice

SUPPRESSION = "/nodeworx/mail/suppression"
PAGE = SUPPRESSION
PER_PAGE = 50


def suppression_routes(web: WebApp) -> list[BaseRoute]:
    async def show(page: Page) -> Response:
        names = ("search", "reason")
        payload, context = await run_search(
            page, PAGE, SUPPRESSION, "listAddresses", names, PER_PAGE
        )
        return page.render(
            "suppression.html",
            reasons=REASONS,
            entries=payload["addresses"] if payload is not None else [],
            total=payload["total"] if payload is not None else 0,
            **context,
        )

    async def export(page: Page) -> Response:
        reply = await page.call(SUPPRESSION, "exportCsv", {})
        if reply.status != 0:
            return page.redirect(PAGE, Notice("error", str(reply.payload)))
        headers = {**NO_STORE, "content-disposition": 'attachment; filename="suppression.csv"'}
        return Response(str(reply.payload), media_type="text/csv", headers=headers)

    async def add(page: Page, form: Form) -> Response:
        inputs = {"address": form.get("address"), **form.subset(("days", "note"))}
        if not inputs.get("days"):
            inputs.pop("days", None)
        reply = await page.call(SUPPRESSION, "add", inputs)
        if reply.status != 0:
            return page.redirect(PAGE, Notice("error", f"Nothing added: {problems_of(reply)}"))
        added = reply.payload["added"]
        return page.redirect(PAGE, Notice("ok", f"Suppressed: {', '.join(added)}."))

    async def remove(page: Page, form: Form) -> Response:
        addresses = " ".join(form.all("address")).split()
        if not addresses:
            return page.redirect(PAGE, Notice("error", "Choose the addresses to take off."))
        if form.get("confirmed") != "1":
            shown = ", ".join(addresses[:5]) + (" and others" if len(addresses) > 5 else "")
            return page.confirm(
                title=f"Take {len(addresses)} address(es) off the suppression list?",
                text=f"Mail to {shown} is attempted again from now on; if it still bounces,"
                " the address is suppressed again.",
                target=f"{PAGE}/remove",
                fields={"address": " ".join(addresses)},
                button="Take them off",
                danger=False,
                cancel=PAGE,
            )
        reply = await page.call(SUPPRESSION, "remove", {"address": " ".join(addresses)})
        if reply.status != 0:
            return page.redirect(PAGE, Notice("error", f"Nothing removed: {problems_of(reply)}"))
        removed = reply.payload["removed"]
        text = f"Off the list: {', '.join(removed)}." if removed else "None was on the list."
        return page.redirect(PAGE, Notice("ok", text))

    return [
        Route(PAGE, view(web, show), methods=["GET"]),
        Route(f"{PAGE}.csv", view(web, export), methods=["GET"]),
        Route(f"{PAGE}/add", action(web, add), methods=["POST"]),
        Route(f"{PAGE}/remove", action(web, remove), methods=["POST"]),
    ]
