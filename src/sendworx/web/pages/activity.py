"""Activity (`/nodeworx/mail/activity`): the queue's size and the delivery results per minute
as charts, and the latest attempts with their remote replies, from the engine's own counts
(`queryActivity`). The charts are drawn by uPlot; the tables are there without JavaScript.
Deferrals and failures by bounce class and by destination come from the delivery history
(`MailHistory` `querySummary`)."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sendworx.web.page import Page, WebApp, view

QUEUE = "/nodeworx/mail/queue"
HISTORY = "/nodeworx/mail/history"
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
        # Why and where mail waited or failed, from the delivery history (none when it is
        # off or unreadable: the card says so).
        reply = await page.call(HISTORY, "querySummary", {"hours": int(hours)})
        reasons = reply.payload if reply.status == 0 else None
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
            reasons=reasons,
        )

    return [Route(PAGE, view(web, show), methods=["GET"])]
