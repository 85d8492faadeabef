"""Logging in and out: the panel's users, through `getSession`, with the API's lockout.

The login form carries its own CSRF token (a cookie and a field that must match), so no other
site can log a browser in under someone else's account.
"""

from __future__ import annotations

import hmac

from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from sendworx.shared.wire import Call
from sendworx.shared.wire import Request as ApiRequest
from sendworx.transports.http_body import GONE, TooLarge, peer_of
from sendworx.web.forms import FormRefused, read_form
from sendworx.web.page import NAVIGATION, NO_STORE, Page, WebApp, action, view
from sendworx.web.security import same_origin
from sendworx.web.session import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    clear_cookie,
    local_path,
    new_login_token,
    set_cookie,
)

HOME = "/"
WRONG = "The e-mail address or the password is wrong."


def login_routes(web: WebApp) -> list[BaseRoute]:
    def login_page(
        request: Request, *, status: int = 200, error: str = "", email: str = ""
    ) -> Response:
        token = new_login_token()
        notice = ""
        if request.query_params.get("expired"):
            notice = "Your session has ended. Log in again to continue."
        elif request.query_params.get("logged_out"):
            notice = "You have logged out."
        response = web.render(
            request,
            "login.html",
            status,
            page=None,
            token=token,
            error=error,
            notice=notice,
            email=email,
            next=local_path(request.query_params.get("next", ""), HOME),
        )
        set_cookie(response, request, LOGIN_COOKIE, token)
        return response

    async def show(request: Request) -> Response:
        session_id = request.cookies.get(SESSION_COOKIE, "")
        caller = web.dispatcher.authenticator.session_caller(session_id, peer_of(request.scope))
        if session_id and caller is not None:
            target = local_path(request.query_params.get("next", ""), HOME)
            return RedirectResponse(target, status_code=303, headers=NO_STORE)
        return login_page(request)

    async def log_in(request: Request) -> Response:
        try:
            form = await read_form(request, web.dispatcher.max_request_bytes)
        except ClientDisconnect:
            return GONE
        except (TooLarge, FormRefused):
            return web.problem(request, 400, "Refused", "That is not the login form.")
        cookie = request.cookies.get(LOGIN_COOKIE, "")
        token = form.get("token")
        if (
            not same_origin(request)
            or not cookie
            or not hmac.compare_digest(cookie.encode(), token.encode())
        ):
            return login_page(
                request,
                status=403,
                error="The login form had expired or came from another site. Try again.",
            )
        email = form.get("email").strip()
        credentials = {"email": email, "password": form.get("password")}
        reply = await web.dispatcher.dispatch(
            ApiRequest(credentials, Call("/nodeworx/index", "getSession")),
            peer_of(request.scope),
            "web",
        )
        if reply.status != 0:
            # The lockout's own message says how long to wait; a wrong password says no more.
            text = str(reply.payload)
            error = text if text.startswith("too many") else WRONG
            return login_page(request, status=401, error=error, email=email)
        target = local_path(form.get("next"), HOME)
        response = RedirectResponse(target, status_code=303, headers=NO_STORE)
        set_cookie(response, request, SESSION_COOKIE, str(reply.payload))
        clear_cookie(response, request, LOGIN_COOKIE)
        return response

    async def log_out(page: Page, form: object) -> Response:
        web.dispatcher.authenticator.end_session(page.session_id)
        response = RedirectResponse("/login?logged_out=1", status_code=303, headers=NO_STORE)
        clear_cookie(response, page.request, SESSION_COOKIE)
        return response

    async def home(page: Page) -> Response:
        for entry in NAVIGATION:
            if page.may(entry.permission):
                return RedirectResponse(entry.path, status_code=303, headers=NO_STORE)
        return page.render(
            "denied.html",
            403,
            reason="Your account has none of the permissions these pages need "
            "(EMAIL for Outbound Mail and the Mail Queue, CLUSTER for the cluster).",
        )

    return [
        Route("/login", show, methods=["GET"]),
        Route("/login", log_in, methods=["POST"]),
        Route("/logout", action(web, log_out), methods=["POST"]),
        Route("/", view(web, home), methods=["GET"]),
    ]
