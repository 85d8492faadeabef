"""`/nodeworx/live`: what an open page polls every few seconds to keep its figures current (the
service's state, the queue's totals and summary, the activity), as JSON for the page's script.

Read-only and cookie-authenticated; another site cannot read it (no CORS headers, and the
session cookie is SameSite=Strict)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sendworx.transports.http_body import peer_of
from sendworx.web.page import NO_STORE, Denied, Page, PageFailed, SessionEnded, WebApp
from sendworx.web.pages.queue import SUMMARY_MAX_AGE, SUMMARY_ROWS
from sendworx.web.session import SESSION_COOKIE

SEND = "/nodeworx/mail/send"
QUEUE = "/nodeworx/mail/queue"
PARTS = ("status", "queue", "activity")


async def _status(page: Page) -> dict[str, Any]:
    info = await page.payload(SEND, "listServiceInfo")
    running = bool(info["is_running"])
    since = 0.0
    if running:
        since = float((await page.payload(QUEUE, "queryActivity", {"minutes": 1}))["since"])
    return {"running": running, "since": since}


async def _queue(page: Page) -> dict[str, Any]:
    summary = await page.payload(
        QUEUE, "querySummary", {"limit": SUMMARY_ROWS, "max_age": SUMMARY_MAX_AGE}
    )
    return dict(summary)


async def _activity(page: Page) -> dict[str, Any]:
    hours = page.request.query_params.get("hours", "1")
    minutes = int(hours) * 60 if hours in ("1", "3", "6") else 60
    return dict(await page.payload(QUEUE, "queryActivity", {"minutes": minutes}))


def live_routes(web: WebApp) -> list[BaseRoute]:
    readers = {"status": _status, "queue": _queue, "activity": _activity}

    async def live(request: Request) -> Response:
        session_id = request.cookies.get(SESSION_COOKIE, "")
        caller = web.dispatcher.authenticator.session_caller(session_id, peer_of(request.scope))
        if not session_id or caller is None:
            return JSONResponse({"error": "your session has ended"}, 401, headers=NO_STORE)
        page = Page(web, request, session_id, caller)
        wanted = [part for part in request.query_params.get("parts", "").split(",") if part]
        answer: dict[str, Any] = {}
        try:
            for part in wanted:
                if part in readers:
                    answer[part] = await readers[part](page)
        except Denied as error:
            return JSONResponse({"error": str(error)}, 403, headers=NO_STORE)
        except SessionEnded:
            return JSONResponse({"error": "your session has ended"}, 401, headers=NO_STORE)
        except PageFailed as error:
            return JSONResponse({"error": str(error.reply.payload)}, 502, headers=NO_STORE)
        return JSONResponse(answer, headers=NO_STORE)

    return [Route("/nodeworx/live", live, methods=["GET"])]
