"""The pages' application: their routes, the static files, and the security headers on every
response. The panel mounts it beside the APIs (`panel/app.py`)."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.routing import Mount, Router
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from sendworx.api.dispatcher import Dispatcher
from sendworx.web.page import WebApp
from sendworx.web.pages.activity import activity_routes
from sendworx.web.pages.cluster import cluster_routes
from sendworx.web.pages.dkim import dkim_routes
from sendworx.web.pages.history import history_routes
from sendworx.web.pages.live import live_routes
from sendworx.web.pages.login import login_routes
from sendworx.web.pages.mta import mta_routes
from sendworx.web.pages.policy import policy_routes
from sendworx.web.pages.queue import queue_routes
from sendworx.web.pages.suppression import suppression_routes
from sendworx.web.pages.webhooks import webhooks_routes
from sendworx.web.rendering import environment
from sendworx.web.security import CsrfTokens, SecurityHeaders
from sendworx.web.session import Notices

STATIC = Path(__file__).parent / "static"


def web_app(dispatcher: Dispatcher, node_id: str) -> ASGIApp:
    web = WebApp(dispatcher, environment(), CsrfTokens(), Notices(), node_id)

    async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        text = f"There is no page at {request.url.path[:200]}."
        await web.problem(request, 404, "Not found", text)(scope, receive, send)

    router = Router(
        routes=[
            *login_routes(web),
            *mta_routes(web),
            *queue_routes(web),
            *activity_routes(web),
            *policy_routes(web),
            *dkim_routes(web),
            *history_routes(web),
            *suppression_routes(web),
            *webhooks_routes(web),
            *cluster_routes(web),
            *live_routes(web),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        default=not_found,
    )
    return SecurityHeaders(router)
