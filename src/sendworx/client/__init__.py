"""A typed Python client for the NodeWorx API (XML-RPC underneath, every auth form).

    from sendworx.client import Client, ca_context, calls
    with Client("https://127.0.0.1:2443", key, verify=ca_context("var/panel/tls/ca.pem")) as api:
        api.run(calls.update({"concurrency_remote": 100}))

Statuses other than 0 raise their ApiError subclass; no reply at all raises a ClientError.
The clients (and the HTTP libraries under them) load on first use, so code that only needs
the calls and the exceptions (the panel, until it talks to a node) starts without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sendworx.client import calls, errors
from sendworx.client.calls import Call
from sendworx.client.errors import (
    ActionFailed,
    ApiError,
    AuthenticationFailed,
    BadResponse,
    CertificateRejected,
    ClientError,
    PartialFailure,
    PermissionDenied,
    TimedOut,
    UnknownAction,
    Unreachable,
    ValidationFailed,
)

if TYPE_CHECKING:
    from sendworx.client.clients import AsyncClient as AsyncClient
    from sendworx.client.clients import Auth as Auth
    from sendworx.client.clients import Client as Client
    from sendworx.client.clients import ca_context as ca_context
    from sendworx.client.clients import pinned_context as pinned_context

_IN_CLIENTS = ("AsyncClient", "Auth", "Client", "ca_context", "pinned_context")
__all__ = [  # noqa: RUF022 - the exceptions, then the rest
    "ActionFailed",
    "ApiError",
    "AuthenticationFailed",
    "BadResponse",
    "CertificateRejected",
    "ClientError",
    "PartialFailure",
    "PermissionDenied",
    "TimedOut",
    "UnknownAction",
    "Unreachable",
    "ValidationFailed",
    "AsyncClient",
    "Auth",
    "Client",
    "ca_context",
    "pinned_context",
    "Call",
    "calls",
    "errors",
]


def __getattr__(name: str) -> Any:
    if name in _IN_CLIENTS:
        from sendworx.client import clients

        return getattr(clients, name)
    raise AttributeError(f"module 'sendworx.client' has no attribute {name!r}")
