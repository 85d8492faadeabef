"""Where a recipient's mail goes: an MX domain, a relay from `smtproutes`, or an address literal.

Mail for equal destinations shares connections. Pure: the route table decides, DNS comes later.
"""

from __future__ import annotations

from dataclasses import dataclass

from sendworx.shared.addresses import (
    AddressError,
    check_domain,
    has_control_characters,
    literal_address,
)
from sendworx.shared.routes import Relay, RouteTable


@dataclass(frozen=True, slots=True)
class MxDomain:
    """A domain without a route: its MX hosts, or its own address records without MX."""

    domain: str

    def __str__(self) -> str:
        return self.domain


@dataclass(frozen=True, slots=True)
class RelayHost:
    """The relay a route names, resolved by address records only."""

    relay: Relay

    def __str__(self) -> str:
        return str(self.relay)


@dataclass(frozen=True, slots=True)
class AddressLiteral:
    """`user@[192.0.2.1]` or `user@[IPv6:2001:db8::1]`: that address, on the remote port."""

    address: str

    def __str__(self) -> str:
        return f"[{self.address}]"


Destination = MxDomain | RelayHost | AddressLiteral


def destination_for(recipient: str, routes: RouteTable) -> Destination:
    """Where a recipient's mail goes; AddressError when its domain names nowhere."""
    if has_control_characters(recipient):
        raise AddressError("address contains control characters")
    local, at, domain = recipient.rpartition("@")
    if not at or not local or not domain:
        raise AddressError("address has no domain")
    domain = domain.lower()
    literal = literal_address(domain)
    if literal is not None:
        return AddressLiteral(literal)
    check_domain(domain)
    route = routes.lookup(domain)
    if route is not None and route.relay is not None:
        return RelayHost(route.relay)
    return MxDomain(domain)
