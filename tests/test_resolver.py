"""MX and address resolution against a real DNS server on loopback."""

from __future__ import annotations

import asyncio
import random

import pytest
from support.dns_server import DNSServer
from support.net import free_port

from sendworx.engine.resolver import DestinationResolver, ResolutionError
from sendworx.shared.config import ResolverConfig
from sendworx.shared.routes import Relay


def _resolver(port: int, seed: int = 0, timeout: float = 2.0) -> DestinationResolver:
    config = ResolverConfig(nameservers=["127.0.0.1"], port=port, timeout_seconds=timeout)
    return DestinationResolver(config, remote_port=25, rng=random.Random(seed))


def test_mx_hosts_come_in_preference_order_with_ties_shuffled(dns_server: DNSServer) -> None:
    dns_server.add("tie.test", "MX", "20 c.tie.test.", "10 a.tie.test.", "10 b.tie.test.")
    for name, address in (("a", "192.0.2.1"), ("b", "192.0.2.2"), ("c", "192.0.2.3")):
        dns_server.add(f"{name}.tie.test", "A", address)
    orders = set()
    for seed in range(12):
        hosts = asyncio.run(_resolver(dns_server.port, seed).hosts_for_domain("tie.test"))
        names = [host.name for host in hosts]
        assert names[-1] == "c.tie.test"
        orders.add(tuple(names[:2]))
    assert orders == {("a.tie.test", "b.tie.test"), ("b.tie.test", "a.tie.test")}


def test_every_address_of_an_mx_host_is_tried(dns_server: DNSServer) -> None:
    dns_server.add("multi.test", "MX", "10 mx.multi.test.")
    dns_server.add("mx.multi.test", "A", "192.0.2.10", "192.0.2.11")
    hosts = asyncio.run(_resolver(dns_server.port).hosts_for_domain("multi.test"))
    assert sorted(host.address for host in hosts) == ["192.0.2.10", "192.0.2.11"]


def test_null_mx_and_missing_domain_are_permanent(dns_server: DNSServer) -> None:
    dns_server.add("null.test", "MX", "0 .")
    resolver = _resolver(dns_server.port)
    with pytest.raises(ResolutionError) as null:
        asyncio.run(resolver.hosts_for_domain("null.test"))
    assert (null.value.permanent, null.value.status) == (True, "5.1.10")
    with pytest.raises(ResolutionError) as missing:
        asyncio.run(resolver.hosts_for_domain("missing.test"))
    assert (missing.value.permanent, missing.value.status) == (True, "5.1.2")


def test_unanswering_nameserver_is_a_temporary_failure() -> None:
    resolver = _resolver(free_port(), timeout=0.5)
    with pytest.raises(ResolutionError) as failure:
        asyncio.run(resolver.hosts_for_domain("anything.test"))
    assert failure.value.permanent is False


def test_relay_uses_address_records_and_its_own_port(dns_server: DNSServer) -> None:
    dns_server.add("relay.test", "A", "192.0.2.20")
    dns_server.add("relay.test", "MX", "10 elsewhere.test.")
    hosts = asyncio.run(
        _resolver(dns_server.port).hosts_for_relay(Relay("relay.test", 2525, False))
    )
    assert [(host.address, host.port) for host in hosts] == [("192.0.2.20", 2525)]


def test_relay_outside_dns_falls_back_to_the_hosts_file(dns_server: DNSServer) -> None:
    hosts = asyncio.run(_resolver(dns_server.port).hosts_for_relay(Relay("localhost", None, False)))
    assert "127.0.0.1" in [host.address for host in hosts]
