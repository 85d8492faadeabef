"""InterWorx's `/siteworx/email/domainkeys` against a real panel, as a site owner's tools call
it: SiteWorx-style logins over XML-RPC (xmlrpc.client), SOAP (PHP's SoapClient) and JSON
(httpx); a login acts for its domain alone; each panel refuses the other's logins."""

from __future__ import annotations

import ssl
from typing import Any

import httpx
import pytest
from support.dns_server import DNSServer
from support.panel import SEND, Panel
from support.php import php_route

from sendworx.shared.dkim_keys import KeyStore

DOMAINKEYS = "/siteworx/email/domainkeys"
PASSWORD = "correct horse 1"


@pytest.fixture
def site_key(panel: Panel) -> str:
    """A NodeWorx user with EMAIL, whose key the site's tools use SiteWorx-style."""
    return panel.add_user("site@example.test", "EMAIL", password=PASSWORD)


def _route(panel: Panel, auth: Any, action: str, data: Any = None) -> dict[str, Any]:
    return dict(panel.call(action, data, auth=auth, controller=DOMAINKEYS))


def _json(panel: Panel, key: str, domain: str, action: str, body: Any = None) -> Any:
    with httpx.Client(
        base_url=f"https://127.0.0.1:{panel.https_port}/api/v1",
        verify=ssl.create_default_context(cafile=panel.ca),
        headers={"Authorization": "Bearer " + " ".join(key.split()), "X-SiteWorx-Domain": domain},
        timeout=30,
    ) as api:
        return api.post(f"{DOMAINKEYS}/{action}", json=body).json()


def _keys(panel: Panel, domain: str) -> list[Any]:
    return KeyStore(panel.home.instance.dkim_dir).of_domain(domain)


def test_a_site_adds_lists_publishes_edits_views_and_deletes_its_keys_over_every_transport(
    panel: Panel, site_key: str, dns_server: DNSServer
) -> None:
    login = {"domain": "Shop.Example", "apikey": site_key}
    added = _route(panel, login, "add", {"domain": "shop.example", "testing_mode": 0})
    assert added["status"] == 0, added
    [key] = _keys(panel, "shop.example")
    assert (key.state, key.algorithm, key.bits, key.testing) == ("active", "rsa", 2048, False)
    assert key.record_name in added["payload"]

    listed = _route(panel, login, "listDomainKeys")["payload"]
    assert listed == [
        {
            "zone_id": None,
            "record_id": None,
            "domain": "shop.example",
            "type": "TXT",
            "target": key.record_text,
            "selector": key.selector,
            "state": "active",
        }
    ]
    [record] = _route(panel, login, "queryDomainKeys", {"domain": "shop.example"})["payload"]
    assert record["name"] == key.record_name and "".join(record["strings"]) == key.record_text
    assert all(len(piece.encode()) <= 255 for piece in record["strings"])

    # PHP's SoapClient, with the password form of the login.
    wsdl = f"https://127.0.0.1:{panel.https_port}/soap?wsdl"
    php_login = {"domain": "shop.example", "email": "site@example.test", "password": PASSWORD}
    request = {"auth": php_login, "controller": DOMAINKEYS, "action": "edit"}
    edited = php_route(wsdl, "1.1", panel.ca, {**request, "input": {"domain": "shop.example"}})
    assert edited["raw"]["status"] == 0, edited
    assert _keys(panel, "shop.example")[0].testing  # testing_mode defaults to 1, as InterWorx's
    query = {**request, "action": "queryEdit", "input": {"domain": "shop.example"}}
    assert php_route(wsdl, "1.2", panel.ca, query)["raw"]["payload"] == {
        "domain": "shop.example",
        "testing_mode": 1,
    }

    dns_server.publish_dkim(_keys(panel, "shop.example")[0])
    viewed = _json(panel, site_key, "shop.example", "view")
    assert viewed["status"] == 0, viewed
    assert [check["status"] for check in viewed["payload"]["dns"]] == ["ok"]
    assert viewed["payload"]["records"][0]["value"].startswith("v=DKIM1; k=rsa; t=y; p=")

    deleted = _json(panel, site_key, "shop.example", "delete", {"domain": ["shop.example"]})
    assert deleted["status"] == 0, deleted
    assert _keys(panel, "shop.example") == []


def test_a_login_acts_for_its_domain_and_subdomains_only(panel: Panel, site_key: str) -> None:
    shop = {"domain": "shop.example", "apikey": site_key}
    other = {"domain": "other.example", "apikey": site_key}
    assert _route(panel, other, "add", {"domain": "other.example"})["status"] == 0
    assert _route(panel, shop, "add", {"domain": "mail.shop.example"})["status"] == 0

    for action, data in [
        ("add", {"domain": "third.example"}),
        ("edit", {"domain": "other.example", "testing_mode": 0}),
        ("queryDomainKeys", {"domain": "other.example"}),
        ("view", {"domain": "other.example"}),
        ("delete", {"domain": ["mail.shop.example", "other.example"]}),  # all or nothing
        ("add", {"domain": "evilshop.example"}),  # a suffix, not a subdomain
    ]:
        reply = _route(panel, shop, action, data)
        assert reply["status"] == 11, (action, reply)
        assert "is not shop.example or one of its subdomains" in reply["payload"]
    assert [row["domain"] for row in _route(panel, shop, "listDomainKeys")["payload"]] == [
        "mail.shop.example",
        "shop.example",
    ]
    store = KeyStore(panel.home.instance.dkim_dir)
    assert {key.domain for key in store.all_keys()} >= {"other.example", "mail.shop.example"}
    assert store.of_domain("third.example") == [] and store.of_domain("evilshop.example") == []
    assert store.of_domain("other.example")[0].testing  # not edited


def test_each_panel_refuses_the_other_panels_logins(panel: Panel, site_key: str) -> None:
    siteworx = {"domain": "shop.example", "apikey": site_key}
    on_nodeworx = dict(panel.call("isRunning", auth=siteworx))
    assert on_nodeworx["status"] == 401
    assert "SiteWorx credentials" in on_nodeworx["payload"]
    on_siteworx = _route(panel, panel.key, "listDomainKeys")
    assert on_siteworx["status"] == 401
    assert "acts for one domain" in on_siteworx["payload"]

    no_email = panel.add_user("ops@example.test", "SERVICES")
    refused = _route(panel, {"domain": "shop.example", "apikey": no_email}, "add",
                     {"domain": "shop.example"})  # fmt: skip
    assert refused["status"] == 403
    for login in (
        {"domain": "shop.example", "apikey": "wrong"},
        {"domain": "shop.example", "email": "site@example.test", "password": "wrong guess"},
        {"domain": "../etc", "apikey": site_key},
        {"domain": "shop\r\n.example", "apikey": site_key},
    ):
        assert _route(panel, login, "listDomainKeys")["status"] == 401, login
    assert _keys(panel, "shop.example") == []
    assert dict(panel.call("isRunning", controller=SEND))["status"] == 0


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"domain": "shop.example/../x"}, "domain"),
        ({"domain": "shop\t.example"}, "domain"),
        ({"domain": "x" * 300 + ".example"}, "domain"),
        ({"domain": "x" * 100_000}, "domain"),  # a 100 kB value
        ({"domain": "shop.example", "testing_mode": 7}, "testing_mode"),
        ({"domain": "shop.example", "signing_policy": "most_mail"}, "signing_policy"),
    ],
)
def test_hostile_input_gets_status_11_and_changes_nothing(
    panel: Panel, site_key: str, data: dict[str, Any], field: str
) -> None:
    reply = _route(panel, {"domain": "shop.example", "apikey": site_key}, "add", data)
    assert reply["status"] == 11, reply
    assert f"\n{field}: " in reply["payload"]
    assert _keys(panel, "shop.example") == []


def test_a_second_add_is_refused_and_edit_of_nothing_too(panel: Panel, site_key: str) -> None:
    login = {"domain": "shop.example", "apikey": site_key}
    assert _route(panel, login, "add", {"domain": "shop.example"})["status"] == 0
    again = _route(panel, login, "add", {"domain": "shop.example"})
    assert again["status"] == 11 and "use edit" in again["payload"]
    missing = _route(panel, login, "edit", {"domain": "mail.shop.example"})
    assert missing["status"] == 11 and "no DomainKeys configuration" in missing["payload"]
    assert len(_keys(panel, "shop.example")) == 1
