"""Where each recipient's mail goes: literal, route relay or MX domain."""

from __future__ import annotations

import pytest

from sendworx.shared.addresses import AddressError
from sendworx.shared.destinations import AddressLiteral, MxDomain, RelayHost, destination_for
from sendworx.shared.routes import Relay, RouteTable

ROUTES = RouteTable.from_lines([".relayed.test:smtp.example.net:2525", "direct.relayed.test:"])


@pytest.mark.parametrize(
    ("recipient", "destination"),
    [
        ("u@[192.0.2.7]", AddressLiteral("192.0.2.7")),
        ("u@[IPv6:2001:DB8::1]", AddressLiteral("2001:db8::1")),
        ("u@a.relayed.test", RelayHost(Relay("smtp.example.net", 2525, is_address=False))),
        ("u@direct.relayed.test", MxDomain("direct.relayed.test")),  # empty relay: MX
        ("u@Elsewhere.TEST", MxDomain("elsewhere.test")),
    ],
)
def test_each_recipient_has_one_destination(recipient: str, destination: object) -> None:
    assert destination_for(recipient, ROUTES) == destination


def test_recipients_of_one_domain_share_a_destination() -> None:
    assert destination_for("a@x.test", ROUTES) == destination_for("b@X.test", ROUTES)


@pytest.mark.parametrize("recipient", ["nodomain", "@x.test", "u@", "u@[a..b]", "u@a..b"])
def test_a_recipient_naming_nowhere_has_no_destination(recipient: str) -> None:
    with pytest.raises(AddressError):
        destination_for(recipient, ROUTES)
