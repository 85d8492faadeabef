"""What a client call can raise: an API status (the server answered) or a ClientError (it did not).

API statuses are the server's own exception types, so `except ValidationFailed` reads the same
on both sides.
"""

from __future__ import annotations

import ssl

import aiohttp
import httpx

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


def client_error(error: httpx.HTTPError) -> ClientError:
    """Names the transport failure the way an operator would describe it."""
    if isinstance(error, httpx.TimeoutException):
        return TimedOut(f"no answer in time ({type(error).__name__})")
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return CertificateRejected(f"certificate rejected: {cause.verify_message}")
        cause = cause.__cause__ or cause.__context__
    if isinstance(error, httpx.TransportError):
        return Unreachable(f"cannot connect: {error}")
    return BadResponse(str(error))


def aiohttp_error(error: aiohttp.ClientError | TimeoutError) -> ClientError:
    """The same names for the asyncio client's failures."""
    if isinstance(error, TimeoutError):  # aiohttp's timeouts are TimeoutErrors too
        return TimedOut(f"no answer in time ({type(error).__name__})")
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return CertificateRejected(f"certificate rejected: {error.certificate_error}")
    if isinstance(error, aiohttp.ClientConnectorError | aiohttp.ServerDisconnectedError):
        return Unreachable(f"cannot connect: {error}")
    return BadResponse(str(error))
