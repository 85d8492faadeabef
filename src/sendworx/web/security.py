"""What keeps the pages safe to open: security headers, CSRF tokens and the origin check.

A state-changing request needs the session's CSRF token (an HMAC of the session id under a
secret that lives as long as the panel process, like the sessions) and, when the browser says
where the request came from (Origin, else Referer), it must be this panel's own origin.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    # Same-origin requests keep their Referer and Origin (the CSRF check reads them); nothing
    # about the panel's pages reaches another site.
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
HSTS = "max-age=31536000"


class SecurityHeaders:
    """Adds the headers to every response of the pages (static files and errors included);
    a page that must not be stored says so itself (`Cache-Control: no-store`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
                if https:
                    headers.setdefault("strict-transport-security", HSTS)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class CsrfTokens:
    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)

    def token(self, session_id: str) -> str:
        return hmac.new(self._secret, session_id.encode(), hashlib.sha256).hexdigest()

    def valid(self, session_id: str, token: str) -> bool:
        return hmac.compare_digest(self.token(session_id).encode(), token.encode())


def own_origin(request: Request) -> str:
    host = request.headers.get("host", "")
    return f"{request.url.scheme}://{host}".lower()


def same_origin(request: Request) -> bool:
    """False when the browser says the request came from another origin (or from an opaque
    one: a sandboxed frame, a data: URL). A client that sends neither header (curl) is judged
    by its CSRF token alone."""
    origin = request.headers.get("origin")
    if origin is not None:
        return origin.lower() == own_origin(request)
    referer = request.headers.get("referer")
    if referer is not None:
        parts = urlsplit(referer)
        return f"{parts.scheme}://{parts.netloc}".lower() == own_origin(request)
    return True
