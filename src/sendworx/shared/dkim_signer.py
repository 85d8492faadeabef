"""Signing at the door: every message is signed once, as it enters the queue (sendmail and
submitd, smtpd, the engine's own bounces and notices), never again on a retry.

A message is signed when its From domain (RFC 5322: one From field, one address) has an
active key and the message's origin may use it (`dkim_keys.Origins`; the host itself, root
and the service's account and the engine, always may). Anything else goes out unsigned,
never refused: no From domain, a domain without keys, or an origin the key does not allow.
That last case is the one an operator wants to hear about (a site sending as a domain its
account does not own), so it is logged with the account and the domain.
"""

from __future__ import annotations

import email.utils
import logging
import os
import time
from dataclasses import replace

from sendworx.shared.addresses import domain_of
from sendworx.shared.dkim_keys import InputError, KeyStore, SignerCache, normalize_domain
from sendworx.shared.dkim_signature import SigningKey, sign, split_fields, transmitted
from sendworx.shared.queue_format import Envelope

log = logging.getLogger("sendworx.dkim")


def from_domain(content: bytes) -> str | None:
    """The domain of the message's single From address, as keys are filed; None without
    exactly one From field holding exactly one address with a host name."""
    head_end = content.find(b"\n\n")
    crlf_end = content.find(b"\r\n\r\n")
    ends = [end for end in (head_end, crlf_end) if end >= 0]
    head = content[: min(ends) + 2] if ends else content
    fields, _ = split_fields(transmitted(head))
    found = [text for name, text in fields if name == "from"]
    if len(found) != 1:
        return None
    value = found[0].split(b":", 1)[1].decode("utf-8", "surrogateescape")
    addresses = [address for _, address in email.utils.getaddresses([value]) if address]
    if len(addresses) != 1:
        return None
    try:
        return normalize_domain(domain_of(addresses[0]))
    except InputError:
        return None


class Signer:
    """`signer(envelope, content)` is what to queue: the content signed, or as it was; the
    envelope notes a refused signature (`dkim_refused`), which the engine counts."""

    def __init__(self, store: KeyStore, service_uid: int | None = None) -> None:
        self._cache = SignerCache(store)
        self._service_uid = os.getuid() if service_uid is None else service_uid

    def __call__(self, envelope: Envelope, content: bytes) -> tuple[Envelope, bytes]:
        try:
            domain, keys = self._keys(envelope, content)
            if keys:
                return envelope, sign(content, keys, int(time.time()))
            if domain is not None:
                return replace(envelope, dkim_refused=domain), content
        except Exception:  # a signature is never worth a message: it goes unsigned
            log.exception("not signed: signing failed")
        return envelope, content

    def _keys(self, envelope: Envelope, content: bytes) -> tuple[str | None, list[SigningKey]]:
        """The keys that sign this message: none without a From domain with active keys;
        none, a log line and the domain refused, when its origin may not use them."""
        if not self._cache.any():
            return None, []
        domain = from_domain(content)
        active = self._cache.active(domain) if domain is not None else []
        if not active:
            return None, []
        origin = envelope.origin
        trusted = origin is not None and (
            origin.via == "engine" or origin.uid in (0, self._service_uid)
        )
        account = origin.account if origin is not None else None
        peer = origin.peer if origin is not None else None
        allowed = [
            signing for key, signing in active if trusted or key.origins.allow(account, peer)
        ]
        if not allowed:
            log.warning("not signed: %s may not sign as %s", envelope.origin_name, domain)
            return domain, []
        return None, allowed
