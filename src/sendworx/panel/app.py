"""The panel's HTTP surface: XML-RPC at /xmlrpc, SOAP at /soap, the JSON API under /api/v1, and
the web pages everywhere else.

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
from sendworx.web.app import web_app


def create_app(
    registry: Registry, authenticator: Authenticator, max_request_bytes: int, node_id: str
) -> Starlette:
    dispatcher = Dispatcher(registry, authenticator, max_request_bytes)
    soap = soap_endpoint(dispatcher)
    json_action, openapi = json_endpoints(dispatcher)
    app = Starlette(
        routes=[
            Route("/xmlrpc", XmlRpcEndpoint(dispatcher), methods=["POST"]),
            Route("/soap", soap, methods=["GET", "POST"]),
            Route("/nodeworx/soap", soap, methods=["GET", "POST"]),
            Route(f"{PREFIX}/openapi.json", openapi, methods=["GET"]),
            Route(PREFIX + "/{target:path}", json_action, methods=["POST"]),
        ]
    )
    # Whatever no API route takes goes to the pages (which answer 404 with a page of their
    # own); an API path with the wrong method still answers 405, as it always did.
    app.router.default = web_app(dispatcher, node_id)
    return app
