"""Is a key's record published? One TXT lookup of `<selector>._domainkey.<domain>` through the
instance's resolver settings (the engine's nameservers, port and timeout), compared with the
record the key needs: `ok`, `missing` (no such record), `mismatch` (a record whose key is
another: what was found is reported), or `error` (the lookup itself failed: timeout,
SERVFAIL). A rotation's pending key is used only once this says `ok`.
"""

from __future__ import annotations

from dataclasses import dataclass

import dns.exception
import dns.resolver

from sendworx.shared.config import ResolverConfig
from sendworx.shared.dkim_keys import DkimKey


@dataclass(frozen=True)
class RecordCheck:
    domain: str
    selector: str
    status: str  # ok, missing, mismatch, error
    found: str = ""  # the published text, when there is one
    detail: str = ""

    def to_document(self) -> dict[str, str]:
        return {
            "domain": self.domain,
            "selector": self.selector,
            "status": self.status,
            "found": self.found,
            "detail": self.detail,
        }


def _tags(text: str) -> dict[str, str]:
    tags = {}
    for part in text.split(";"):
        name, equals, value = part.partition("=")
        if equals:
            tags[name.strip().lower()] = "".join(value.split())
    return tags


def _resolver(config: ResolverConfig) -> dns.resolver.Resolver:
    resolver = dns.resolver.Resolver(configure=not config.nameservers)
    if config.nameservers:
        resolver.nameservers = list(config.nameservers)
    resolver.port = config.port
    resolver.lifetime = config.timeout_seconds
    return resolver


def check_record(key: DkimKey, config: ResolverConfig) -> RecordCheck:
    def result(status: str, found: str = "", detail: str = "") -> RecordCheck:
        return RecordCheck(key.domain, key.selector, status, found, detail)

    try:
        answer = _resolver(config).resolve(key.record_name, "TXT", raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return result("missing", detail=f"{key.record_name} does not exist")
    except (dns.exception.DNSException, OSError) as error:
        return result("error", detail=f"{type(error).__name__}: {error}"[:300])
    texts = [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer.rrset or ()]
    dkim = [
        text for text in texts if _tags(text).get("v", "DKIM1") == "DKIM1" and "p" in _tags(text)
    ]
    if not dkim:
        return result("missing", detail=f"{key.record_name} has no DKIM record")
    for text in dkim:
        tags = _tags(text)
        kind = tags.get("k", "rsa")
        if tags.get("p") == key.public_key and kind == (
            "ed25519" if key.algorithm == "ed25519" else "rsa"
        ):
            return result("ok", text)
    return result("mismatch", dkim[0], "the published key is not this key")
