"""Outbound Mail (`/nodeworx/mail/mta`, the page `listServicePage` names): the service with
start, stop and restart; the delivery settings, the SMTP routes, the bounce and the general
settings, each a form whose errors come back next to their fields from the API itself."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sendworx.shared.errors import ValidationFailed
from sendworx.web.forms import Form
from sendworx.web.page import Page, WebApp, action, view
from sendworx.web.pages.fields import Field, action_inputs, fields
from sendworx.web.pages.outcomes import change_notice
from sendworx.web.session import Notice

SEND = "/nodeworx/mail/send"
MTA = "/nodeworx/mail/mta"
QUEUE = "/nodeworx/mail/queue"
PAGE = "/nodeworx/mail/mta"
ROUTES = "smtp_routes"
CASCADE = "cascade_to_nodes"
_ROUTE_NUMBER = re.compile(r"route (\d+) ")


@dataclass(frozen=True)
class Section:
    """One settings form: which action saves it, and its fields' labels in order."""

    key: str
    title: str
    controller: str
    action: str
    labels: Mapping[str, str]
    done: str
    button: str
    checkboxes: tuple[str, ...] = ()


SECTIONS = (
    Section(
        "delivery",
        "Delivery",
        SEND,
        "update",
        {
            "concurrency_remote": "Simultaneous connections",
            "timeout_connect": "Connect timeout (seconds)",
            "timeout_remote": "Read and write timeout (seconds)",
            "queue_lifetime": "Queue lifetime (seconds)",
        },
        "Delivery settings saved",
        "Save delivery settings",
    ),
    Section(
        "bounce",
        "Bounces",
        MTA,
        "updateBounce",
        {
            "bounce_from": "Bounces come from (user)",
            "bounce_host": "Bounce sender's host",
            "double_bounce_messages": "Send double bounces",
            "double_bounce_to": "Double bounces go to",
            "double_bounce_host": "Double bounce host",
        },
        "Bounce settings saved",
        "Save bounce settings",
        checkboxes=("double_bounce_messages",),
    ),
    Section(
        "general",
        "Mail server",
        MTA,
        "updateGeneral",
        {"mailserver_hostname": "Host name", "default_domain": "Default domain"},
        "Mail server settings saved",
        "Save mail server settings",
    ),
)
SECTIONS_BY_KEY = {section.key: section for section in SECTIONS}
OPERATIONS = {
    "start": (
        "Start",
        "The engine starts delivering the queued mail.",
        "started",
    ),
    "stop": (
        "Stop",
        "The engine stops delivering. Mail accepted meanwhile waits in the queue (nothing is "
        "lost) and goes out when the service starts again.",
        "stopped",
    ),
    "restart": (
        "Restart",
        "Deliveries under way are interrupted and tried again; queued mail is kept.",
        "restarted",
    ),
}


@dataclass(frozen=True)
class RouteRow:
    domain: str
    relay: str
    error: bool = False


def split_route(text: str) -> RouteRow:
    domain, _, relay = text.partition(":")
    return RouteRow(domain, relay)


def edited_rows(form: Form) -> tuple[list[RouteRow], str]:
    """The table as submitted, with the row operation (`up-3`, `down-0`, `delete-2`) applied;
    and the operation's name. Rows with neither a domain nor a relay are dropped."""
    domains, relays = form.all("route_domain"), form.all("route_relay")
    rows = [
        RouteRow(domain.strip(), relay.strip())
        for domain, relay in zip(domains, relays, strict=False)
    ]
    operation, _, position = form.get("op", "save").partition("-")
    if position.isdigit() and int(position) < len(rows):
        row = int(position)
        if operation == "delete":
            del rows[row]
        elif operation == "up" and row > 0:
            rows[row - 1], rows[row] = rows[row], rows[row - 1]
        elif operation == "down" and row + 1 < len(rows):
            rows[row + 1], rows[row] = rows[row], rows[row + 1]
    return [row for row in rows if row.domain or row.relay], operation


def mta_routes(web: WebApp) -> list[BaseRoute]:
    registry = web.dispatcher.registry

    async def render(
        page: Page,
        *,
        status: int = 200,
        section: str = "",
        submitted: Mapping[str, Any] | None = None,
        problems: Mapping[str, str] | None = None,
        rows: list[RouteRow] | None = None,
        routes_error: str = "",
    ) -> Response:
        info = await page.payload(SEND, "listServiceInfo")
        running = bool(info["is_running"])
        since = 0.0
        if running:
            activity = await page.payload(QUEUE, "queryActivity", {"minutes": 1})
            since = float(activity.get("since") or 0.0)
        values = {
            **await page.payload(SEND, "queryUpdate"),
            **await page.payload(MTA, "queryUpdate"),
        }
        forms: dict[str, list[Field]] = {}
        for each in SECTIONS:
            mine = each.key == section
            forms[each.key] = fields(
                action_inputs(registry, each.controller, each.action),
                each.labels,
                {**values, **(submitted or {})} if mine else values,
                (problems or {}) if mine else {},
                each.checkboxes,
            )
        if rows is None:
            rows = [split_route(text) for text in values.get(ROUTES, [])]
        return page.render(
            "mta.html",
            status,
            info=info,
            running=running,
            since=since,
            sections=SECTIONS,
            forms=forms,
            rows=rows,
            routes_error=routes_error,
            operations=OPERATIONS,
        )

    async def show(page: Page) -> Response:
        return await render(page)

    async def service(page: Page, form: Form) -> Response:
        operation = form.get("operation")
        if operation not in OPERATIONS:
            return page.redirect(PAGE, Notice("error", "Choose start, stop or restart."))
        label, meaning, done = OPERATIONS[operation]
        cascade = form.get(CASCADE) == "1"
        if form.get("confirmed") != "1":
            return page.confirm(
                title=f"{label} Outbound Mail?",
                text=meaning
                + (" The same is done on every node of the cluster." if cascade else ""),
                target="/nodeworx/mail/mta/service",
                fields={"operation": operation, CASCADE: "1" if cascade else "0"},
                button=label,
                danger=operation != "start",
                cancel=PAGE,
            )
        reply = await page.call(SEND, operation, {CASCADE: int(cascade)})
        return page.redirect(PAGE, change_notice(reply, f"Outbound Mail {done}"))

    async def settings(page: Page, form: Form) -> Response:
        section = SECTIONS_BY_KEY.get(form.get("section"))
        if section is None:
            return page.redirect(PAGE, Notice("error", "That form is not on this page."))
        inputs = form.subset(tuple(section.labels))
        for name in section.checkboxes:
            inputs[name] = "1" if form.get(name) == "1" else "0"
        inputs[CASCADE] = "1" if form.get(CASCADE) == "1" else "0"
        reply = await page.call(section.controller, section.action, inputs)
        if reply.status == ValidationFailed.status:
            return await render(
                page, status=400, section=section.key, submitted=inputs, problems=reply.problems
            )
        return page.redirect(f"{PAGE}#{section.key}", change_notice(reply, section.done))

    async def routes(page: Page, form: Form) -> Response:
        rows, operation = edited_rows(form)
        cascade = "1" if form.get(CASCADE) == "1" else "0"
        reply = await page.call(
            SEND,
            "update",
            {ROUTES: [f"{row.domain}:{row.relay}" for row in rows], CASCADE: cascade},
        )
        if reply.status == ValidationFailed.status:
            error = reply.problems.get(ROUTES) or str(reply.payload)
            found = _ROUTE_NUMBER.match(error)
            bad = int(found.group(1)) - 1 if found else -1
            marked = [
                RouteRow(row.domain, row.relay, number == bad) for number, row in enumerate(rows)
            ]
            return await render(page, status=400, rows=marked, routes_error=error)
        done = "Route deleted" if operation == "delete" else "Routes saved"
        return page.redirect(f"{PAGE}#routes", change_notice(reply, done))

    return [
        Route(PAGE, view(web, show), methods=["GET"]),
        Route(f"{PAGE}/service", action(web, service), methods=["POST"]),
        Route(f"{PAGE}/settings", action(web, settings), methods=["POST"]),
        Route(f"{PAGE}/routes", action(web, routes), methods=["POST"]),
    ]
