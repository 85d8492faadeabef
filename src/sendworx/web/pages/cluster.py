"""Cluster (`/nodeworx/cluster`, permission CLUSTER): every node, whether it answers and whether
its Outbound Mail runs, with start, stop and restart per node (`*OnNode`)."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sendworx.web.forms import Form
from sendworx.web.page import Page, WebApp, action, view
from sendworx.web.pages.mta import OPERATIONS
from sendworx.web.pages.outcomes import change_notice
from sendworx.web.session import Notice

SEND = "/nodeworx/mail/send"
NODES = "/nodeworx/cluster/nodes"
PAGE = "/nodeworx/cluster"


def cluster_routes(web: WebApp) -> list[BaseRoute]:
    async def show(page: Page) -> Response:
        nodes = await page.payload(NODES, "listNodeStatus")
        return page.render(
            "cluster.html", nodes=nodes, operations=OPERATIONS, may_email=page.may("EMAIL")
        )

    async def service(page: Page, form: Form) -> Response:
        operation, node = form.get("operation"), form.get("node_id")
        if operation not in OPERATIONS or not node:
            return page.redirect(PAGE, Notice("error", "Choose a node and an action."))
        label, meaning, done = OPERATIONS[operation]
        if form.get("confirmed") != "1":
            return page.confirm(
                title=f"{label} Outbound Mail on {node}?",
                text=meaning,
                target=f"{PAGE}/service",
                fields={"operation": operation, "node_id": node},
                button=f"{label} on {node}",
                danger=operation != "start",
                cancel=PAGE,
            )
        reply = await page.call(SEND, f"{operation}OnNode", {"node_id": node})
        return page.redirect(PAGE, change_notice(reply, f"Outbound Mail {done} on {node}"))

    return [
        Route(PAGE, view(web, show), methods=["GET"]),
        Route(f"{PAGE}/service", action(web, service), methods=["POST"]),
    ]
