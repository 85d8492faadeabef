"""A typed Python client for the NodeWorx API (XML-RPC underneath, every auth form).

    from sendworx.client import Client, ca_context, calls
    with Client("https://127.0.0.1:2443", key, verify=ca_context("var/panel/tls/ca.pem")) as api:
        api.run(calls.update({"concurrency_remote": 100}))

Statuses other than 0 raise their ApiError subclass; no reply at all raises a ClientError.
"""

from sendworx.client import calls, errors
from sendworx.client.calls import Call
from sendworx.client.clients import AsyncClient, Auth, Client, ca_context, pinned_context
from sendworx.client.errors import *  # noqa: F403 - every exception, as listed in errors.__all__

__all__ = [
    *errors.__all__,
    "AsyncClient",
    "Auth",
    "Call",
    "Client",
    "ca_context",
    "calls",
    "pinned_context",
]
