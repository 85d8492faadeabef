"""The JSON API's wire format: `Authorization` to an auth value, JSON bodies to input, and a
Reply to an HTTP status plus `{status, reply_code, payload, errors?, tokens?}`."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from sendworx.api.language import tokens_in
from sendworx.api.users import KEY_FOOTER, KEY_HEADER
from sendworx.shared.errors import ApiError, AuthenticationFailed, ValidationFailed
from sendworx.shared.wire import Reply

PREFIX = "/api/v1"
# Status 1 is a valid request whose action did not succeed (409); a bug of ours is 500;
# a cascade that failed on some nodes is 502, as a gateway whose upstreams failed.
HTTP_STATUS = {0: 200, 11: 400, 401: 401, 403: 403, 404: 404, 1: 409, 207: 502}


def auth_from_header(header: str, is_session: Any, siteworx_domain: str = "") -> object:
    """`Bearer <API key or session id>` or `Basic <email:password>`, as `iworx.route`'s auth;
    with `siteworx_domain` (the `X-SiteWorx-Domain` header), SiteWorx's form of it.

    A bearer key may be the armored key on one line or only its base64 body.
    """
    auth = _nodeworx_auth(header, is_session)
    if not siteworx_domain.strip():
        return auth
    if isinstance(auth, str):
        return {"domain": siteworx_domain, "apikey": auth}
    assert isinstance(auth, dict)
    return {**auth, "domain": siteworx_domain}


def _nodeworx_auth(header: str, is_session: Any) -> object:
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        if is_session(credentials):
            return {"sessionid": credentials}
        if KEY_HEADER not in credentials:
            return f"{KEY_HEADER}\n{credentials}\n{KEY_FOOTER}"
        return credentials
    if scheme.lower() == "basic" and credentials:
        try:
            email, separator, password = (
                base64.b64decode(credentials, validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError) as error:
            raise AuthenticationFailed("malformed Basic credentials") from error
        if separator:
            return {"email": email, "password": password}
    raise AuthenticationFailed(
        "send Authorization: Bearer <API key or session id>, or Basic <email:password>"
    )


def parse_input(body: bytes) -> object:
    """An empty body is no input; otherwise a JSON object (or an empty array) of inputs."""
    if not body.strip():
        return None
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise ValidationFailed({"body": f"is not valid JSON: {str(error)[:200]}"}) from error


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def http_status(reply: Reply) -> int:
    return 500 if reply.internal else HTTP_STATUS.get(reply.status, 409)


def reply_body(reply: Reply) -> dict[str, Any]:
    body: dict[str, Any] = reply.as_struct()
    if reply.problems:
        body["errors"] = [
            {"field": field, "message": message} for field, message in reply.problems.items()
        ]
    tokens = tokens_in(reply.payload)
    if tokens:
        body["tokens"] = tokens
    return body


def error_body(error: ApiError) -> tuple[int, dict[str, Any]]:
    reply = Reply.from_error(error)
    return http_status(reply), reply_body(reply)
