"""Where webhooks may be sent: the addresses a request may connect to, and the URLs an
endpoint may have. Pure (no sockets): the sender resolves, this judges.

A webhook URL is chosen by whoever registers it, a site's owner included, and the request
leaves from inside the operator's network: pointed at 127.0.0.1, 10.0.0.5 or the cloud's
metadata service (169.254.169.254, fd00:ec2::254), it would make sendworx reach what only the
server may reach (server-side request forgery). So an address that is not globally routable
(loopback, private, link-local, shared, reserved, multicast, unspecified, documentation;
IPv4 inside IPv6 judged as the IPv4) is refused, unless it lies in a network the operator
allows explicitly (`webhooks.allow_networks`). Every address a name resolves to is judged,
and the request then connects to those judged addresses only, so a name that changes its
answer between the check and the connection (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_URL_CHARS = 2000


class RefusedAddress(ValueError):
    """A URL or an address webhooks may not be sent to."""


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL's parts."""

    scheme: str  # http or https
    host: str  # a name, or an address (IPv6 without brackets)
    port: int
    literal: IPAddress | None  # the host, when it is an address


class AddressGuard:
    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self.allowed: tuple[Network, ...] = tuple(
            ipaddress.ip_network(network, strict=False) for network in allowed
        )

    def refusal(self, address: IPAddress) -> str | None:
        """Why a request may not go to `address`, or None."""
        judged: IPAddress = address
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            judged = address.ipv4_mapped
        if any(judged in network for network in self.allowed if judged.version == network.version):
            return None
        if judged.is_loopback:
            return f"{address} is a loopback address"
        if judged.is_link_local:
            return f"{address} is link-local (cloud metadata services live there)"
        if judged.is_multicast or judged.is_unspecified:
            return f"{address} is not a host's address"
        if not judged.is_global:
            return f"{address} is a private or reserved address"
        return None

    def name_refusal(self, host: str, addresses: Iterable[str]) -> str | None:
        """Why `host` may not be reached when it resolves to `addresses` (one address not
        allowed refuses the name), or None."""
        for address in addresses:
            why = self.refusal(ipaddress.ip_address(address.split("%", 1)[0]))
            if why is not None:
                return f"{host} resolves to {why}; webhooks.allow_networks can allow it"
        return None

    def check_address(self, address: str) -> IPAddress:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
        why = self.refusal(parsed)
        if why is not None:
            raise RefusedAddress(f"{why}; webhooks.allow_networks can allow it")
        return parsed

    def check_url(self, url: str) -> Target:
        """The URL's parts if it may be an endpoint's: http(s), a host, no user or password,
        and, when the host is an address, an allowed one. A name is judged when resolved."""
        if len(url) > MAX_URL_CHARS:
            raise RefusedAddress(f"a URL of at most {MAX_URL_CHARS} characters")
        if any(char.isspace() or ord(char) < 32 for char in url):
            raise RefusedAddress("a URL without spaces or control characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as error:
            raise RefusedAddress(f"not a URL: {error}") from error
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise RefusedAddress("an http:// or https:// URL")
        if parts.username is not None or parts.password is not None:
            raise RefusedAddress("a URL without a user name or password in it")
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise RefusedAddress("a URL with a host")
        if parts.fragment:
            raise RefusedAddress("a URL without a #fragment")
        literal: IPAddress | None = None
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            if not all(label and len(label) <= 63 for label in host.split(".")):
                raise RefusedAddress(f"{host!r} is not a host name") from None
        if literal is not None:
            self.check_address(str(literal))
        return Target(scheme, host, port or (443 if scheme == "https" else 80), literal)
