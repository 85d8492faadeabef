"""Where to connect for a destination: MX hosts in preference order, or a relay's addresses.

MX ties are shuffled, no MX falls back to the domain's own A/AAAA, a null MX (RFC 7505)
is permanent. Relays are resolved by address records only, never MX.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
from dataclasses import dataclass
from itertools import groupby

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from sendworx.shared.config import ResolverConfig
from sendworx.shared.routes import Relay


@dataclass(frozen=True, slots=True)
class Host:
    """One address to try; `name` is the MX or relay name for logs and TLS SNI."""

    name: str | None
    address: str
    port: int

    def __str__(self) -> str:
        return f"{self.name or self.address}[{self.address}]:{self.port}"


class ResolutionError(Exception):
    def __init__(self, reason: str, *, permanent: bool, status: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.status = status


def _temporary(reason: str) -> ResolutionError:
    return ResolutionError(reason, permanent=False, status="4.4.3")


class DestinationResolver:
    def __init__(
        self, config: ResolverConfig, remote_port: int, rng: random.Random | None = None
    ) -> None:
        resolver = dns.asyncresolver.Resolver(configure=not config.nameservers)
        if config.nameservers:
            resolver.nameservers = list(config.nameservers)
        resolver.port = config.port
        resolver.lifetime = config.timeout_seconds
        resolver.cache = dns.resolver.LRUCache(50_000)
        self._resolver = resolver
        self._remote_port = remote_port
        self._rng = rng or random.Random()

    async def hosts_for_literal(self, address: str) -> list[Host]:
        return [Host(None, address, self._remote_port)]

    async def hosts_for_relay(self, relay: Relay) -> list[Host]:
        port = relay.port or self._remote_port
        if relay.is_address:
            return [Host(None, relay.host, port)]
        addresses = await self._addresses(relay.host)
        if not addresses:
            addresses = await self._system_addresses(relay.host)
        if not addresses:
            raise _temporary(f"relay {relay.host} has no address records")
        return [Host(relay.host, address, port) for address in addresses]

    async def hosts_for_domain(self, domain: str) -> list[Host]:
        exchanges = await self._exchanges(domain)
        hosts = []
        for exchange in exchanges:
            for address in await self._addresses(exchange):
                hosts.append(Host(exchange, address, self._remote_port))
        if not hosts:
            raise _temporary(f"no address for any mail server of {domain}")
        return hosts

    async def _exchanges(self, domain: str) -> list[str]:
        """MX names best first, ties shuffled; the domain itself when it has no MX."""
        try:
            answer = await self._resolver.resolve(domain, "MX", search=False)
        except dns.resolver.NXDOMAIN as error:
            raise ResolutionError(
                f"domain {domain} does not exist", permanent=True, status="5.1.2"
            ) from error
        except dns.resolver.NoAnswer:
            return [domain]
        except (
            dns.resolver.NoNameservers,
            dns.exception.Timeout,
            dns.resolver.NoMetaqueries,
        ) as error:
            raise _temporary(f"MX lookup for {domain} failed: {error}") from error
        except dns.exception.DNSException as error:
            raise _temporary(f"MX lookup for {domain} failed: {error}") from error
        records = sorted(answer, key=lambda record: record.preference)
        real = [record for record in records if record.exchange != dns.name.root]
        if not real:
            raise ResolutionError(
                f"{domain} accepts no mail (null MX)", permanent=True, status="5.1.10"
            )
        ordered: list[str] = []
        for _, tied in groupby(real, key=lambda record: record.preference):
            names = [record.exchange.to_text(omit_final_dot=True) for record in tied]
            self._rng.shuffle(names)
            ordered.extend(names)
        return ordered

    async def _addresses(self, name: str) -> list[str]:
        try:
            ipaddress.ip_address(name)
            return [name]
        except ValueError:
            pass
        addresses: list[str] = []
        failures = []
        for record_type in ("A", "AAAA"):
            try:
                answer = await self._resolver.resolve(name, record_type, search=False)
                addresses.extend(record.to_text() for record in answer)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except dns.exception.DNSException as error:
                failures.append(error)
        if not addresses and failures:
            raise _temporary(f"address lookup for {name} failed: {failures[0]}")
        return addresses

    async def _system_addresses(self, name: str) -> list[str]:
        """/etc/hosts and NSS, for relay names an operator keeps outside DNS."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                name, None, type=socket.SOCK_STREAM
            )
        except OSError:
            return []
        return list(dict.fromkeys(str(info[4][0]) for info in infos))
