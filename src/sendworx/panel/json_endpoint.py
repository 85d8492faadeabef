"""/api/v1: one POST endpoint per controller action, and the OpenAPI document describing them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from sendworx.api.dispatcher import Dispatcher
from sendworx.shared import wire
from sendworx.shared.errors import ApiError, ValidationFailed
from sendworx.transports import jsonapi
from sendworx.transports.http_body import GONE, TooLarge, peer_of, read_capped
from sendworx.transports.openapi import openapi_document

Endpoint = Callable[[Request], Awaitable[Response]]


def json_endpoints(dispatcher: Dispatcher) -> tuple[Endpoint, Endpoint]:
    """The action endpoint (path `/api/v1/{target:path}`) and the OpenAPI endpoint."""
    limit = dispatcher.max_request_bytes
    document = openapi_document(dispatcher.registry)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    async def action(request: Request) -> Response:
        controller, _, action_name = request.path_params["target"].rpartition("/")
        try:
            auth = jsonapi.auth_from_header(
                request.headers.get("authorization", ""),
                dispatcher.authenticator.has_session,
                request.headers.get("x-siteworx-domain", ""),
            )
            try:
                body = await read_capped(request, limit)
            except ClientDisconnect:
                return GONE
            except TooLarge:
                error = ValidationFailed({"body": f"is larger than {limit} bytes"})
                return JSONResponse(jsonapi.error_body(error)[1], status_code=413)
            call: wire.Call[Any] = wire.Call(
                "/" + controller, action_name, jsonapi.parse_input(body)
            )
            routed = wire.Request(auth, call)
        except ApiError as error:
            status, body_json = jsonapi.error_body(error)
            return JSONResponse(body_json, status_code=status)
        reply = await dispatcher.dispatch(routed, peer_of(request.scope), "json")
        return JSONResponse(jsonapi.reply_body(reply), status_code=jsonapi.http_status(reply))

    return action, openapi
