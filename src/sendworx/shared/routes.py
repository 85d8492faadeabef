"""Artificial SMTP routes (qmail's `smtproutes`): parsing and the lookup walk.

Pure: no DNS, no sockets. `RouteTable.lookup` says where mail for a domain goes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")
# An IPv6 zone is an interface name (Linux: at most 15 of these characters).
_ZONE = re.compile(r"[A-Za-z0-9_.-]{1,15}\Z")
MAX_ROUTE_LENGTH = 600


class RouteError(ValueError):
    """A route line that does not follow `domain:relay[:port]`."""


def is_hostname(text: str) -> bool:
    if not text or len(text) > 253:
        return False
    return all(_LABEL.match(label) for label in text.split("."))


@dataclass(frozen=True, slots=True)
class Relay:
    """Where to connect instead of looking up MX: a host name or an address, and a port."""

    host: str
    port: int | None
    is_address: bool

    def __str__(self) -> str:
        host = f"[{self.host}]" if self.is_address else self.host
        return host if self.port is None else f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Route:
    """One `smtproutes` line. `domain` is "" (catch-all), a host name or `.suffix`; `text` is
    the line as it was written, which is how it is stored and shown again."""

    domain: str
    relay: Relay | None
    text: str = field(default="", compare=False)

    def __str__(self) -> str:
        return self.text or f"{self.domain}:{self.relay or ''}"


def _parse_port(text: str) -> int:
    # ASCII digits only: "²".isdigit() is true, and int() refuses it.
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise RouteError(f"port must be a number from 1 to 65535, not {text!r}")
    return int(text)


def parse_relay(text: str) -> Relay | None:
    """Parse the part after the first colon: empty, host, IPv4, `[address]`, each with `:port`."""
    if text == "":
        return None
    if text.startswith("["):
        end = text.find("]")
        if end == -1:
            raise RouteError(f"unclosed '[' in relay {text!r}")
        literal, rest = text[1:end], text[end + 1 :]
        _, percent, zone = literal.partition("%")
        if percent and not _ZONE.match(zone):
            raise RouteError("an IPv6 zone must be an interface name (letters, digits, _ . -)")
        try:
            address = ipaddress.ip_address(literal)
        except ValueError as error:
            raise RouteError(f"{literal!r} in brackets is not an IP address") from error
        if rest and not rest.startswith(":"):
            raise RouteError(f"unexpected {rest!r} after ']' in relay")
        port = _parse_port(rest[1:]) if rest else None
        return Relay(str(address), port, is_address=True)
    host, colon, port_text = text.partition(":")
    port = _parse_port(port_text) if colon else None
    try:
        return Relay(str(ipaddress.IPv4Address(host)), port, is_address=True)
    except ValueError:
        pass
    if not is_hostname(host):
        raise RouteError(f"relay {host!r} is not a host name or an IP address")
    return Relay(host.lower(), port, is_address=False)


def parse_route(line: str) -> Route:
    """Parse one route; raise RouteError with a message fit to show to the person who typed it."""
    if line == "":
        raise RouteError("empty route")
    if len(line) > MAX_ROUTE_LENGTH:
        raise RouteError(f"is longer than {MAX_ROUTE_LENGTH} characters")
    if any(character.isspace() for character in line):
        raise RouteError("must not contain spaces")
    if not line.isprintable():
        raise RouteError("must not contain control characters")
    domain, colon, relay_text = line.partition(":")
    if not colon:
        raise RouteError("must be domain:relay[:port] (no ':' found)")
    suffix = domain[1:] if domain.startswith(".") else domain
    if domain and not is_hostname(suffix):
        raise RouteError(f"domain {domain!r} is not empty, a host name or a .suffix")
    return Route(domain.lower(), parse_relay(relay_text), line)


class RouteTable:
    """The parsed `smtproutes` file, indexed once for the walk."""

    def __init__(self, routes: Iterable[Route] = ()) -> None:
        self.routes = tuple(routes)
        # Later lines with the same key override earlier ones, as in qmail's cdb build.
        self._by_key = {route.domain: route for route in self.routes}

    @classmethod
    def from_lines(cls, lines: Iterable[str]) -> RouteTable:
        return cls(parse_route(line) for line in lines)

    def lookup(self, domain: str) -> Route | None:
        """The route for `domain`: exact, then `.b.c`, `.c`, then the catch-all; None means MX.

        The first hit is the most specific one and wins, even when its relay is empty
        (which means "use MX").
        """
        name = domain.lower().rstrip(".")
        labels = name.split(".")
        candidates = [name]
        candidates += ["." + ".".join(labels[index:]) for index in range(1, len(labels))]
        candidates.append("")
        for key in candidates:
            route = self._by_key.get(key)
            if route is not None:
                return route
        return None
