"""The browser's side of a session: its cookie, and the messages shown after a redirect.

Sessions themselves are the API's (`getSession`'s): the same users, expiry and lockout.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response

SESSION_COOKIE = "sendworx_session"
LOGIN_COOKIE = "sendworx_login"  # a login form's own CSRF token, before there is a session
MAX_SESSIONS_WITH_MESSAGES = 1_000
MAX_MESSAGES = 10


@dataclass(frozen=True)
class Notice:
    """What happened, shown once on the next page: `kind` is "ok" or "error"; `details` lists
    per-node or per-message results."""

    kind: str
    text: str
    details: tuple[str, ...] = field(default=())


class Notices:
    """Notices waiting for each session's next page (Post/Redirect/Get), bounded in memory."""

    def __init__(self) -> None:
        self._waiting: OrderedDict[str, list[Notice]] = OrderedDict()

    def add(self, session_id: str, notice: Notice) -> None:
        waiting = self._waiting.setdefault(session_id, [])
        self._waiting.move_to_end(session_id)
        waiting.append(notice)
        del waiting[:-MAX_MESSAGES]
        while len(self._waiting) > MAX_SESSIONS_WITH_MESSAGES:
            self._waiting.popitem(last=False)

    def take(self, session_id: str) -> list[Notice]:
        return self._waiting.pop(session_id, [])


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def set_cookie(response: Response, request: Request, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        path="/",
        httponly=True,
        samesite="strict",
        secure=is_https(request),
    )


def clear_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(
        name, path="/", httponly=True, samesite="strict", secure=is_https(request)
    )


def new_login_token() -> str:
    return secrets.token_urlsafe(24)


def local_path(target: str, default: str) -> str:
    """Where to go after logging in: a path on this panel, never another site."""
    local = target.startswith("/") and not target.startswith("//") and "\\" not in target
    if local and target.isprintable() and len(target) <= 2_000:
        return target
    return default
