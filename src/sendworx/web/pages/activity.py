"""Activity (`/nodeworx/mail/activity`): the queue's size and the delivery results per minute
as charts, and the latest attempts with their remote replies, from the engine's own counts
(`queryActivity`). The charts are drawn by uPlot; the tables are there without JavaScript."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sendworx.web.page import Page, WebApp, view

QUEUE = "/nodeworx/mail/queue"
PAGE = "/nodeworx/mail/activity"
SPANS = {"1": "1 hour", "3": "3 hours", "6": "6 hours"}
# Totals shown: delivery results, and messages refused a DKIM signature (`unsigned`).
RESULTS = ("delivered", "deferred", "failed", "bounced", "unsigned")


def activity_routes(web: WebApp) -> list[BaseRoute]:
    async def show(page: Page) -> Response:
        hours = page.request.query_params.get("hours", "1")
        if hours not in SPANS:
            hours = "1"
        activity = await page.payload(QUEUE, "queryActivity", {"minutes": int(hours) * 60})
        minutes = activity["minutes"]
        totals = {
            result: sum(int(minute.get(result, 0)) for minute in minutes) for result in RESULTS
        }
        return page.render(
            "activity.html",
            activity=activity,
            totals=totals,
            results=RESULTS,
            hours=hours,
            spans=SPANS,
        )

    return [Route(PAGE, view(web, show), methods=["GET"])]
