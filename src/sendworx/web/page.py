"""One page request for a logged-in person, and the wrappers every page endpoint goes through.

A view (GET) needs a live session; an action (POST) also needs the session's CSRF token and a
request from this panel's own origin. Both act only through `Dispatcher.run`, so a page does
exactly what the same call over XML-RPC would do, and the audit log says `api web`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from sendworx.api.dispatcher import Dispatcher
from sendworx.api.registry import Caller
from sendworx.shared.errors import AuthenticationFailed, PermissionDenied
from sendworx.shared.wire import Call, Reply
from sendworx.transports.http_body import GONE, TooLarge, peer_of
from sendworx.web.forms import Form, FormRefused, read_form
from sendworx.web.security import CsrfTokens, same_origin
from sendworx.web.session import SESSION_COOKIE, Notice, Notices

log = logging.getLogger("sendworx.panel")
NO_STORE = {"cache-control": "no-store"}


@dataclass(frozen=True)
class NavEntry:
    path: str
    label: str
    permission: str


NAVIGATION = (
    NavEntry("/nodeworx/mail/mta", "Outbound Mail", "EMAIL"),
    NavEntry("/nodeworx/mail/queue", "Mail Queue", "EMAIL"),
    NavEntry("/nodeworx/mail/activity", "Activity", "EMAIL"),
    NavEntry("/nodeworx/mail/history", "History", "EMAIL"),
    NavEntry("/nodeworx/mail/suppression", "Suppression", "EMAIL"),
    NavEntry("/nodeworx/mail/webhooks", "Webhooks", "EMAIL"),
    NavEntry("/nodeworx/mail/policy", "Sending Policy", "EMAIL"),
    NavEntry("/nodeworx/mail/dkim", "DKIM", "EMAIL"),
    NavEntry("/nodeworx/cluster", "Cluster", "CLUSTER"),
)


@dataclass
class WebApp:
    """What every page shares."""

    dispatcher: Dispatcher
    templates: Environment
    csrf: CsrfTokens
    notices: Notices
    node_id: str  # this server's name in the cluster

    def render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        html = self.templates.get_template(template).render(
            request_path=request.url.path, node_id=self.node_id, **context
        )
        return HTMLResponse(html, status_code=status, headers=NO_STORE)

    def problem(self, request: Request, status: int, title: str, text: str) -> HTMLResponse:
        """A page for a request we refuse, for someone who may not be logged in."""
        return self.render(request, "problem.html", status, title=title, text=text, page=None)


class Denied(Exception):
    """The caller lacks a permission the action needs (status 403)."""


class SessionEnded(Exception):
    """The session ended between the page's check and its call (status 401)."""


class PageFailed(Exception):
    """A call the page cannot do without failed; the page shows the API's message."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply.payload))
        self.reply = reply


class Page:
    """One request by a logged-in person."""

    def __init__(self, web: WebApp, request: Request, session_id: str, caller: Caller) -> None:
        self.web = web
        self.request = request
        self.session_id = session_id
        self.caller = caller

    @property
    def csrf_token(self) -> str:
        return self.web.csrf.token(self.session_id)

    def may(self, permission: str) -> bool:
        return self.caller.may((permission,))

    async def call(
        self, controller: str, action: str, inputs: dict[str, Any] | None = None
    ) -> Reply:
        """The reply to one call; a missing permission or an ended session ends the page."""
        reply = await self.web.dispatcher.run(self.caller, Call(controller, action, inputs), "web")
        if reply.status == PermissionDenied.status:
            raise Denied(str(reply.payload))
        if reply.status == AuthenticationFailed.status:
            raise SessionEnded
        return reply

    async def payload(
        self, controller: str, action: str, inputs: dict[str, Any] | None = None
    ) -> Any:
        reply = await self.call(controller, action, inputs)
        if reply.status != 0:
            raise PageFailed(reply)
        return reply.payload

    def notify(self, notice: Notice) -> None:
        self.web.notices.add(self.session_id, notice)

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        navigation = [entry for entry in NAVIGATION if self.may(entry.permission)]
        return self.web.render(
            self.request,
            template,
            status,
            page=self,
            navigation=navigation,
            notices=self.web.notices.take(self.session_id),
            **context,
        )

    def confirm(
        self,
        *,
        title: str,
        text: str,
        target: str,
        fields: Mapping[str, str],
        button: str,
        cancel: str,
        danger: bool = False,
        ids: Sequence[str] = (),
    ) -> HTMLResponse:
        """The page that asks before a change: what will happen, a button that posts
        `fields` (and `ids`) back to `target` with `confirmed=1`, and a way back to `cancel`."""
        return self.render(
            "confirm.html",
            title=title,
            text=text,
            target=target,
            fields=fields,
            ids=ids,
            button=button,
            danger=danger,
            cancel=cancel,
        )

    def redirect(self, url: str, *notices: Notice) -> RedirectResponse:
        for notice in notices:
            self.notify(notice)
        return RedirectResponse(url, status_code=303, headers=NO_STORE)


View = Callable[[Page], Awaitable[Response]]
Action = Callable[[Page, Form], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def _logged_in(web: WebApp, request: Request) -> Page | None:
    session_id = request.cookies.get(SESSION_COOKIE, "")
    if not session_id:
        return None
    caller = web.dispatcher.authenticator.session_caller(session_id, peer_of(request.scope))
    return None if caller is None else Page(web, request, session_id, caller)


def _to_login(request: Request, *, expired: bool) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    query = {"next": target} if request.method == "GET" else {}
    if expired:
        query["expired"] = "1"
    return RedirectResponse("/login?" + urlencode(query), status_code=303, headers=NO_STORE)


async def _answer(page: Page, run: Callable[[], Awaitable[Response]]) -> Response:
    try:
        return await run()
    except Denied as error:
        return page.render("denied.html", 403, reason=str(error))
    except SessionEnded:
        return _to_login(page.request, expired=True)
    except PageFailed as error:
        return page.render(
            "problem.html",
            500,
            title="The action failed",
            text=str(error.reply.payload),
        )
    except Exception:
        # A bug must still answer with a page of ours (and its headers), never a bare 500.
        log.exception("page %s failed", page.request.url.path[:200])
        return page.web.problem(
            page.request, 500, "Internal error", "The page failed; the panel log says why."
        )


def view(web: WebApp, handler: View) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        page = _logged_in(web, request)
        if page is None:
            return _to_login(request, expired=SESSION_COOKIE in request.cookies)
        return await _answer(page, lambda: handler(page))

    return endpoint


def action(web: WebApp, handler: Action) -> Endpoint:
    limit = web.dispatcher.max_request_bytes

    async def endpoint(request: Request) -> Response:
        if not same_origin(request):
            return web.problem(
                request,
                403,
                "Refused",
                "This request came from another site, not from this panel's own pages; nothing "
                "was changed.",
            )
        page = _logged_in(web, request)
        if page is None:
            return _to_login(request, expired=SESSION_COOKIE in request.cookies)
        try:
            form = await read_form(request, limit)
        except ClientDisconnect:
            return GONE
        except TooLarge:
            return web.problem(request, 413, "Too large", f"A form is at most {limit} bytes.")
        except FormRefused as error:
            return web.problem(request, 400, "Refused", str(error))
        if not web.csrf.valid(page.session_id, form.get("csrf")):
            return web.problem(
                request,
                403,
                "Refused",
                "This form is out of date or did not come from this panel (its security token "
                "does not match your session); nothing was changed. Go back, reload the page "
                "and try again.",
            )
        return await _answer(page, lambda: handler(page, form))

    return endpoint
