"""Envelope addresses: the domain part the engine can deliver to, and the address a literal names.

The injectors (smtpd, sendmail) refuse here what the engine could not route; the engine reads
literals here too, so a queue file written before these rules were enforced fails cleanly.
"""

from __future__ import annotations

import ipaddress
import re

MAX_DOMAIN_LENGTH = 253
MAX_LABEL_LENGTH = 63


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class AddressError(ValueError):
    """An address whose domain part names nowhere mail can go; the message says why."""


def has_control_characters(text: str) -> bool:
    """CR, LF, NUL and the rest: never in an address (on the wire they would end a command
    or smuggle another)."""
    return _CONTROL.search(text) is not None


def client_address(peer: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A client's address as rules compare it: an IPv6 zone (`%eth0`) dropped, an
    IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, a dual-stack listener's view of an IPv4
    client) as the IPv4 address; None for what is not an address."""
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def domain_of(address: str) -> str:
    """The part after the last `@` ("" when there is none)."""
    _, at, domain = address.rpartition("@")
    return domain if at else ""


def literal_address(domain: str) -> str | None:
    """The IP address a domain literal names (`[192.0.2.1]`, `[IPv6:2001:db8::1]`), None when
    `domain` is not a literal; AddressError for a literal that names no address (RFC 5321 4.1.3:
    IPv4 bare, IPv6 after the `IPv6:` tag; general address literals cannot be delivered)."""
    if not domain.startswith("["):
        return None
    if not domain.endswith("]"):
        raise AddressError(f"unclosed address literal {domain[:80]!r}")
    inner = domain[1:-1]
    tagged = inner[:5].lower() == "ipv6:"
    text = inner[5:] if tagged else inner
    try:
        address = ipaddress.ip_address(text) if "%" not in text else None
    except ValueError:
        address = None
    if address is None or address.version != (6 if tagged else 4):
        raise AddressError(
            f"address literal {domain[:80]!r} is neither [IPv4 address] nor [IPv6:address]"
        )
    return str(address)


def check_domain(domain: str) -> None:
    """AddressError unless `domain` is a literal naming an address, or a name with no empty
    label (`a..b`, `.a`) and no label or total length DNS cannot carry."""
    if literal_address(domain) is not None:
        return
    name = domain[:-1] if domain.endswith(".") else domain
    labels = name.split(".")
    if not name or len(name) > MAX_DOMAIN_LENGTH or not all(labels):
        raise AddressError(f"domain {domain[:80]!r} is not a host name")
    if any(len(label) > MAX_LABEL_LENGTH and label.isascii() for label in labels):
        raise AddressError(f"domain {domain[:80]!r} has a label longer than 63 characters")
