"""/siteworx/email/domainkeys: InterWorx's SiteWorx controller for a site's DKIM keys, served
to SiteWorx-style logins ({domain, apikey}, {domain, email, password}) of NodeWorx users with
EMAIL. A login acts for its domain and that domain's subdomains, nothing else: every other
domain is refused as a bad `domain` input (status 11), as InterWorx refuses a domain that
is not among the account's.

    add(domain, testing_mode)     a key for the domain (RSA-2048, selector swYYYYMM), active
                                  at once; who may sign with it stays the operator's choice
    edit(domain, testing_mode)    t=y in the record, or not
    delete(domain: array)         every key of these domains
    listDomainKeys                the login's domains, a row each: zone_id, record_id, domain,
                                  type, target (the record), as InterWorx's sample shows
    queryDomainKeys(domain)       the DNS records to publish (name, 255-byte strings, zone line)
    queryEdit(domain)             the values `edit` starts from
    queryView(domain), view       the domain's keys, records and what DNS shows

What was inferred, and from where, is written down in docs/api.md.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sendworx.api.controllers.common import (
    ANY_STRUCT,
    STRING,
    add_common_actions,
    parse_flag,
    parse_string,
)
from sendworx.api.controllers.dkim import KEY_LIST, key_payload, parse_domain, record_payload
from sendworx.api.registry import Action, Caller, Controller, Handler, Input, InputKind
from sendworx.shared.dkim_dns import check_record
from sendworx.shared.dkim_keys import DkimKey, InputError, KeyStore
from sendworx.shared.errors import ValidationFailed
from sendworx.shared.instance import Instance

DOMAINKEYS = "/siteworx/email/domainkeys"
SIGNING_POLICIES = ("all_mail", "some_mail")
MAX_DOMAINS = 100


def _in_scope(caller: Caller, domain: str) -> str:
    """`domain` if the caller's login covers it, else the form error InterWorx gives."""
    scope = caller.domain or ""
    if domain != scope and not domain.endswith("." + scope):
        raise ValidationFailed({"domain": f"{domain} is not {scope} or one of its subdomains"})
    return domain


def _domains(value: object) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_DOMAINS:
        raise ValueError(f"at most {MAX_DOMAINS} domains")
    domains = [parse_domain(item) for item in items if str(item).strip()]
    if not domains:
        raise ValueError("is required")
    return domains


def _signing_policy(value: object) -> str:
    text = parse_string(value, max_length=20).lower()
    if text not in SIGNING_POLICIES:
        raise ValueError(f"one of {', '.join(SIGNING_POLICIES)}")
    return text


def _listed_row(domain: str, key: DkimKey | None) -> dict[str, Any]:
    """A row as InterWorx's listDomainKeys sample has it; sendworx serves no DNS zones, so
    zone_id and record_id are nil, and a domain without a key has nil type and target."""
    return {
        "zone_id": None,
        "record_id": None,
        "domain": domain,
        "type": "TXT" if key else None,
        "target": key.record_text if key else None,
        "selector": key.selector if key else None,
        "state": key.state if key else None,
    }


def domainkeys_controller(instance: Instance) -> Controller:
    controller = Controller(DOMAINKEYS, "EmailDomainkeys", ("EMAIL",), siteworx=True)
    store: KeyStore = instance.dkim_keys()

    async def in_thread(work: Any, *arguments: Any) -> Any:
        try:
            return await asyncio.to_thread(work, *arguments)
        except InputError as error:
            raise ValidationFailed({error.field: str(error)}) from error

    def keys_of(domain: str) -> list[DkimKey]:
        keys = store.of_domain(domain)
        if not keys:
            raise InputError(f"{domain} has no DomainKeys configuration")
        return keys

    def signing(keys: list[DkimKey]) -> DkimKey:
        return next((key for key in keys if key.state == "active"), keys[-1])

    async def add(caller: Caller, values: dict[str, Any]) -> str:
        domain = _in_scope(caller, values["domain"])

        def work() -> DkimKey:
            with store.changing():
                if store.of_domain(domain):
                    raise InputError(f"{domain} has a DomainKeys configuration already; use edit")
                return store.add(domain, testing=bool(values["testing_mode"]))

        key = await in_thread(work)
        return f"DomainKeys configured for {domain}: publish {key.record_name}"

    async def edit(caller: Caller, values: dict[str, Any]) -> str:
        domain = _in_scope(caller, values["domain"])

        def work() -> list[DkimKey]:
            keys_of(domain)
            return store.update(domain, testing=bool(values["testing_mode"]))

        await in_thread(work)
        return f"DomainKeys configuration of {domain} saved"

    async def delete(caller: Caller, values: dict[str, Any]) -> str:
        domains = [_in_scope(caller, domain) for domain in values["domain"]]

        def work() -> int:
            with store.changing():  # all or nothing: every domain is checked first
                for domain in domains:
                    keys_of(domain)
                return sum(len(store.delete(domain)) for domain in domains)

        gone = await in_thread(work)
        return f"DomainKeys configuration deleted ({gone} key(s) of {', '.join(domains)})"

    async def list_domain_keys(caller: Caller, values: dict[str, Any]) -> list[dict[str, Any]]:
        scope = caller.domain or ""

        def work() -> list[dict[str, Any]]:
            by_domain: dict[str, list[DkimKey]] = {scope: []}
            for key in store.all_keys():
                if key.domain == scope or key.domain.endswith("." + scope):
                    by_domain.setdefault(key.domain, []).append(key)
            return [
                _listed_row(domain, signing(keys) if keys else None)
                for domain, keys in sorted(by_domain.items())
            ]

        rows: list[dict[str, Any]] = await in_thread(work)
        return rows

    async def query_domain_keys(caller: Caller, values: dict[str, Any]) -> list[dict[str, Any]]:
        domain = _in_scope(caller, values["domain"])
        keys = await in_thread(keys_of, domain)
        return [record_payload(key) for key in keys if key.state != "retired"]

    async def query_edit(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        domain = _in_scope(caller, values["domain"])
        key = signing(await in_thread(keys_of, domain))
        return {"domain": domain, "testing_mode": int(key.testing)}

    async def view(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        domain = _in_scope(caller, values.get("domain") or caller.domain or "")

        def work() -> dict[str, Any]:
            keys = [key for key in keys_of(domain) if key.state != "retired"]
            resolver = instance.config.resolver
            return {
                "domain": domain,
                "testing_mode": int(signing(keys).testing),
                "keys": [key_payload(key) for key in keys],
                "records": [record_payload(key) for key in keys],
                "dns": [check_record(key, resolver).to_document() for key in keys],
            }

        shown: dict[str, Any] = await in_thread(work)
        return shown

    domain = Input(
        "domain", InputKind.STRING, parse_domain, "example.com, pointer.com", required=True
    )
    view_domain = Input("domain", InputKind.STRING, parse_domain, "default: the login's domain")
    domains = Input(
        "domain", InputKind.STRING_STRUCT, _domains, "example.com, pointer.com", required=True
    )
    testing_mode = Input(
        "testing_mode",
        InputKind.INTEGER,
        parse_flag,
        "1: t=y, receivers treat signed mail as unsigned (InterWorx's default)",
        default=lambda: 1,
    )
    signing_policy = Input(
        "signing_policy",
        InputKind.STRING,
        _signing_policy,
        "all_mail or some_mail: accepted, no effect (DMARC publishes a signing policy today)",
    )
    actions: list[tuple[str, str, Handler, tuple[Input, ...], Any]] = [
        ("add", "Add DomainKeys configuration.", add, (domain, testing_mode, signing_policy),
         STRING),
        ("edit", "Edit DomainKeys configuration.", edit, (domain, testing_mode, signing_policy),
         STRING),
        ("delete", "Delete DomainKeys configuration.", delete, (domains,), STRING),
        ("listDomainKeys", "Lists the domain keys.", list_domain_keys, (), KEY_LIST),
        ("queryDomainKeys", "List the domain key DNS records for a given domain.",
         query_domain_keys, (domain,), KEY_LIST),
        ("queryEdit", "Current values of every input of edit.", query_edit, (domain,),
         ANY_STRUCT),
        ("queryView", "What view shows, for a given domain.", view, (view_domain,), ANY_STRUCT),
        ("view", "View a set of domainkeys for a given domain.", view, (view_domain,),
         ANY_STRUCT),
    ]  # fmt: skip
    for name, description, handler, inputs, returns in actions:
        controller.add(Action(name, description, handler, inputs, returns))

    add_common_actions(controller, None)
    return controller
