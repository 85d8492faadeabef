"""The signature of a webhook request, as Stripe's receivers already check it:

    Sendworx-Signature: t=1765161600,v1=5257a869e7ec...e108d8bd  (64 hex digits)

`v1` is the lowercase hex HMAC-SHA256, keyed with the endpoint's secret, of the timestamp, a
full stop and the request's body exactly as sent: `f"{t}.{body}"`. While a rotated secret is
in its grace period the header carries a `v1` for each secret, the new one first; a receiver
accepts the request if any `v1` matches the secret it knows. A receiver that rejects a `t`
older than five minutes (TOLERANCE_SECONDS) cannot be fed a recorded request again later.

Pure: `sign` for the sender, `verify` for receivers written in Python (docs/api.md shows the
same check in PHP).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

HEADER = "Sendworx-Signature"
TOLERANCE_SECONDS = 300
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A secret for a new endpoint: 32 random bytes, URL-safe."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode(), hashlib.sha256)
    mac.update(body)
    return mac.hexdigest()


def sign(secrets_in_force: list[str], timestamp: int, body: bytes) -> str:
    """The header's value: the timestamp and one `v1` per secret."""
    parts = [f"t={timestamp}"]
    parts += [f"v1={digest(secret, timestamp, body)}" for secret in secrets_in_force]
    return ",".join(parts)


class SignatureError(ValueError):
    """A request whose signature does not hold."""


def verify(
    header: str, secret: str, body: bytes, now: float, tolerance: float = TOLERANCE_SECONDS
) -> int:
    """The request's timestamp if `header` signs `body` with `secret` within `tolerance`
    seconds of `now`; SignatureError otherwise."""
    timestamp: int | None = None
    signatures = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise SignatureError("no timestamp or no v1 signature")
    if abs(now - timestamp) > tolerance:
        raise SignatureError(f"timestamp {timestamp} is outside the tolerance")
    expected = digest(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, signature) for signature in signatures):
        raise SignatureError("no signature matches the secret")
    return timestamp
