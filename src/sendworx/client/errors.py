"""What a client call can raise: an API status (the server answered) or a ClientError (it did not).

API statuses are the server's own exception types, so `except ValidationFailed` reads the same
on both sides. Only the types live here (no HTTP library is loaded for them); `clients.py`
names each transport failure.
"""

from __future__ import annotations

from sendworx.shared.errors import (
    ActionFailed,
    ApiError,
    AuthenticationFailed,
    PartialFailure,
    PermissionDenied,
    UnknownAction,
    ValidationFailed,
)

__all__ = [
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
]


class ClientError(Exception):
    """No API reply: the server could not be reached, was too slow, or did not speak the API."""


class Unreachable(ClientError):
    pass


class TimedOut(ClientError):
    pass


class CertificateRejected(ClientError):
    """TLS verification failed: for a pinned node, it presents another certificate."""


class BadResponse(ClientError):
    """An HTTP error page, an XML-RPC fault, or something that is not a route reply."""
