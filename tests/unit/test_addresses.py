"""Domain parts the engine can route, and the address a domain literal names."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sendworx.shared.addresses import AddressError, check_domain, domain_of, literal_address


@pytest.mark.parametrize(
    ("domain", "address"),
    [
        ("[192.0.2.1]", "192.0.2.1"),
        ("[IPv6:2001:db8::1]", "2001:db8::1"),
        ("[ipv6:::1]", "::1"),
        ("[IPv6:::ffff:192.0.2.1]", "::ffff:c000:201"),
        ("example.test", None),
    ],
)
def test_a_literal_names_its_address(domain: str, address: str | None) -> None:
    assert literal_address(domain) == address


@pytest.mark.parametrize(
    "domain",
    [
        "[a..b]",
        "[999.1.1.1]",
        "[01.2.3.4]",  # leading zeros: octal to some resolvers
        "[2001:db8::1]",  # IPv6 needs its tag
        "[IPv6:192.0.2.1]",
        "[IPv6:fe80::1%eth0]",
        "[tag:content]",
        "[192.0.2.1",
        "[]",
    ],
)
def test_a_literal_naming_no_address_is_refused(domain: str) -> None:
    with pytest.raises(AddressError):
        literal_address(domain)
    with pytest.raises(AddressError):
        check_domain(domain)


@pytest.mark.parametrize("domain", ["a..b", ".a", "", ".", "x" * 64 + ".test", "a." * 127 + "b"])
def test_names_dns_cannot_carry_are_refused(domain: str) -> None:
    with pytest.raises(AddressError):
        check_domain(domain)


@pytest.mark.parametrize("domain", ["example.test", "example.test.", "b\u00fccher.test", "a-b.c"])
def test_host_names_pass(domain: str) -> None:
    check_domain(domain)


@given(st.ip_addresses())
def test_every_address_written_as_a_literal_reads_back(address: object) -> None:
    assert isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address)
    literal = f"[{address}]" if address.version == 4 else f"[IPv6:{address}]"
    assert literal_address(literal) == str(address)


def test_the_domain_is_after_the_last_at() -> None:
    assert domain_of('"a@b"@example.test') == "example.test"
    assert domain_of("postmaster") == ""
