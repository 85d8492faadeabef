"""The panel's HTTP surface: XML-RPC at /xmlrpc, SOAP at /soap, the JSON API under /api/v1.

Every endpoint only translates; the same Dispatcher authenticates and runs each call.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Route

from sendworx.api.auth import Authenticator
from sendworx.api.dispatcher import Dispatcher
from sendworx.api.registry import Registry
from sendworx.panel.json_endpoint import json_endpoints
from sendworx.panel.soap_endpoint import soap_endpoint
from sendworx.panel.xmlrpc_endpoint import XmlRpcEndpoint
from sendworx.transports.jsonapi import PREFIX


def create_app(
    registry: Registry, authenticator: Authenticator, max_request_bytes: int
) -> Starlette:
    dispatcher = Dispatcher(registry, authenticator, max_request_bytes)
    soap = soap_endpoint(dispatcher)
    json_action, openapi = json_endpoints(dispatcher)
    return Starlette(
        routes=[
            Route("/xmlrpc", XmlRpcEndpoint(dispatcher), methods=["POST"]),
            Route("/soap", soap, methods=["GET", "POST"]),
            Route("/nodeworx/soap", soap, methods=["GET", "POST"]),
            Route(f"{PREFIX}/openapi.json", openapi, methods=["GET"]),
            Route(PREFIX + "/{target:path}", json_action, methods=["POST"]),
        ]
    )
