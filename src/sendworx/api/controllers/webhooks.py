"""/nodeworx/mail/webhooks: the endpoints this node's events are posted to, signed
(shared/webhooks.py, webhooks/sender.py), and what became of each request. Every action
exists `OnNode`: each node sends its own events.

    listEndpoints                          every endpoint, its state and queue
    add(url, events, scope, scope_value,   a new endpoint; its secret is in the reply (and
        description, secret)               from querySecret), generated unless given
    edit(id, ..., enabled, rotate_secret,  changes; rotating keeps the old secret valid for
         grace_hours)                      `grace_hours` (both signatures are sent)
    delete(id)                             the endpoint and what waits for it
    test(id)                               a sample event posted now; the attempt's result
    listAttempts(id, failed_only, page,    the requests made, newest first
                 per_page)
    listDeliveries(id, state, page,        what waits (pending) or was given up (dead)
                   per_page)
    redeliver(id, delivery)                dead deliveries due again (one, or all)
    querySecret(id)                        the secret, to configure the receiver

/siteworx/mail/webhooks offers the same actions (no `OnNode`) to a site's SiteWorx-style
login: its endpoints have the scope `domain` and its domain (or a subdomain of it), and it
sees and changes no other endpoint.

A URL must be http(s), and its host must not be (or resolve to) a loopback, private,
link-local or other non-public address unless `webhooks.allow_networks` allows it
(shared/network_guard.py); the sender checks again at each request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from sendworx.api.controllers.common import (
    ANY_STRUCT,
    add_common_actions,
    bounded_parser,
    choice_input,
    on_node,
    page_inputs,
    page_of,
    parse_flag,
    text_parser,
)
from sendworx.api.controllers.dkim import parse_domain
from sendworx.api.registry import Action, Caller, Controller, Handler, Input, InputKind
from sendworx.cluster.manager import ClusterManager
from sendworx.shared.errors import ActionFailed, ValidationFailed
from sendworx.shared.instance import Instance
from sendworx.shared.network_guard import AddressGuard
from sendworx.shared.unix_sockets import send_datagram
from sendworx.shared.webhook_probe import probe
from sendworx.shared.webhook_signature import new_secret
from sendworx.shared.webhooks import (
    EVENTS,
    MAX_PER_PAGE,
    SCOPES,
    STATES,
    Endpoint,
    WebhookStore,
    WebhookStoreError,
)
from sendworx.webhooks.poster import resolve_refusal

WEBHOOKS = "/nodeworx/mail/webhooks"
SITE_WEBHOOKS = "/siteworx/mail/webhooks"
DEFAULT_PER_PAGE = 50
MAX_ENDPOINTS = 100
TEST_WAIT_MARGIN_SECONDS = 5.0
_ACCOUNT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")


def _events(value: object) -> tuple[str, ...]:
    if isinstance(value, dict):
        value = list(value.values())
    items = value if isinstance(value, list) else str(value).replace(",", " ").split()
    events = [text_parser(20)(item).lower() for item in items]
    events = [event for event in events if event]
    if events == ["all"]:
        return EVENTS
    unknown = [event for event in events if event not in EVENTS]
    if unknown or not events:
        raise ValueError(f"one or more of {', '.join(EVENTS)} (or all)")
    return tuple(dict.fromkeys(events))


def _secret(value: object) -> str:
    text = text_parser(200)(value)
    if text and (len(text) < 16 or any(char.isspace() for char in text)):
        raise ValueError("at least 16 characters, no spaces (empty: one is generated)")
    return text


def _scope_value(scope: str, value: str) -> str:
    if scope == "all":
        if value:
            raise ValidationFailed({"scope_value": "must be empty for the scope all"})
        return ""
    if scope == "account":
        if not value or not set(value) <= _ACCOUNT_CHARS or len(value) > 32:
            raise ValidationFailed({"scope_value": "the scope account needs a Unix account name"})
        return value
    try:
        return parse_domain(value)
    except ValueError as error:
        raise ValidationFailed(
            {"scope_value": f"the scope domain needs a domain: {error}"}
        ) from error


def webhooks_controller(
    instance: Instance, cluster: ClusterManager | None, *, siteworx: bool = False
) -> Controller:
    path = SITE_WEBHOOKS if siteworx else WEBHOOKS
    cli_name = "SiteWebhooks" if siteworx else "MailWebhooks"
    controller = Controller(path, cli_name, ("EMAIL",), siteworx=siteworx)
    store = WebhookStore(instance.webhooks_path)
    config = instance.config.webhooks
    guard = AddressGuard(config.allow_networks)

    async def use(work: Callable[[], Any]) -> Any:
        try:
            return await asyncio.to_thread(work)
        except WebhookStoreError as error:
            raise ActionFailed(str(error)) from error

    def mine(caller: Caller, endpoint: Endpoint) -> bool:
        if not siteworx:
            return True
        scope = caller.domain or ""
        value = endpoint.scope_value
        return endpoint.scope == "domain" and (value == scope or value.endswith("." + scope))

    async def endpoint_of(caller: Caller, endpoint_id: int) -> Endpoint:
        endpoint: Endpoint | None = await use(lambda: store.endpoint(endpoint_id))
        if endpoint is None or not mine(caller, endpoint):
            raise ValidationFailed({"id": f"no endpoint {endpoint_id}"})
        return endpoint

    def scope_of(
        caller: Caller, values: dict[str, Any], current: Endpoint | None
    ) -> tuple[str, str]:
        scope = values.get("scope") or (current.scope if current else "all")
        value = values.get("scope_value")
        if value is None:
            value = current.scope_value if current and scope == current.scope else ""
        if siteworx:
            domain = caller.domain or ""
            value = value or domain
            if scope != "domain" or not (value == domain or value.endswith("." + domain)):
                raise ValidationFailed(
                    {"scope_value": f"a site's endpoints are for {domain} or its subdomains"}
                )
        return scope, _scope_value(scope, value)

    async def checked_url(url: str) -> tuple[str, str]:
        refusal, resolved = await resolve_refusal(guard, url)
        if refusal is not None:
            raise ValidationFailed({"url": refusal})
        return url, "" if resolved else "the host does not resolve now; it is tried at each event"

    async def list_endpoints(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        rows = await use(lambda: store.listed(lambda e: mine(caller, e), time.time()))
        return {"endpoints": rows}

    async def add(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        url, warning = await checked_url(values["url"])
        scope, scope_value = scope_of(caller, values, None)
        secret = values["secret"] or new_secret()
        existing = await use(store.endpoints)
        if len(existing) >= MAX_ENDPOINTS:
            raise ActionFailed(f"at most {MAX_ENDPOINTS} endpoints")
        endpoint = await use(
            lambda: store.add_endpoint(
                url,
                values["events"],
                scope,
                scope_value,
                secret,
                description=values["description"],
                owner=caller.email or "operator",
            )
        )
        reply = endpoint.to_document(time.time(), reveal=True)
        if not config.enabled:
            warning = "webhooks.enabled is false on this node: no event is queued for it"
        return {**reply, "warning": warning}

    async def edit(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        current = await endpoint_of(caller, values["id"])
        changes: dict[str, Any] = {}
        warning = ""
        if values.get("url") is not None and values["url"] != current.url:
            changes["url"], warning = await checked_url(values["url"])
        if values.get("events") is not None:
            changes["events"] = values["events"]
        if values.get("scope") is not None or values.get("scope_value") is not None:
            changes["scope"], changes["scope_value"] = scope_of(caller, values, current)
        if values.get("description") is not None:
            changes["description"] = values["description"]
        if values.get("enabled") is not None:
            changes["enabled"] = values["enabled"]
        now = time.time()
        if values.get("rotate_secret"):
            secret = values.get("secret") or new_secret()
            changes.update(current.rotated(secret, values["grace_hours"] * 3600, now))
        endpoint = await use(lambda: store.edit_endpoint(current.id, **changes))
        if endpoint is None:
            raise ValidationFailed({"id": f"no endpoint {current.id}"})
        reply = endpoint.to_document(now, reveal="secret" in changes)
        return {**reply, "warning": warning}

    async def delete(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        endpoint = await endpoint_of(caller, values["id"])
        await use(lambda: store.delete_endpoint(endpoint.id))
        return {"deleted": endpoint.id}

    async def query_secret(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        endpoint = await endpoint_of(caller, values["id"])
        now = time.time()
        return {"id": endpoint.id, "secret": endpoint.secret, "secrets": endpoint.secrets(now)}

    async def test(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        endpoint = await endpoint_of(caller, values["id"])
        try:
            answer: dict[str, Any] = await probe(
                store,
                endpoint,
                instance.node_id,
                trigger=instance.webhooks_trigger_socket,
                sender_pid_file=instance.webhookd_pid_file,
                wait_seconds=config.timeout_seconds + TEST_WAIT_MARGIN_SECONDS,
            )
        except WebhookStoreError as error:
            raise ActionFailed(str(error)) from error
        return answer

    async def list_attempts(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        endpoint = await endpoint_of(caller, values["id"])
        page, per_page = values["page"], values["per_page"]
        attempts, total = await use(
            lambda: store.attempts(
                endpoint.id, page, per_page, failed_only=bool(values["failed_only"])
            )
        )
        rows = [attempt.to_document() for attempt in attempts]
        return page_of("attempts", rows, page, per_page, total)

    async def list_deliveries(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        endpoint = await endpoint_of(caller, values["id"])
        page, per_page = values["page"], values["per_page"]
        state = values["state"] or "pending"
        found, total = await use(lambda: store.queued(endpoint.id, state, page, per_page))
        rows = [item.to_document() for item in found]
        return page_of("deliveries", rows, page, per_page, total)

    async def redeliver(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        endpoint = await endpoint_of(caller, values["id"])
        wanted = [values["delivery"]] if values["delivery"] else []
        count = await use(lambda: store.redeliver(endpoint.id, wanted, time.time()))
        await asyncio.to_thread(send_datagram, b"r", instance.webhooks_trigger_socket)
        return {"redelivered": count}

    endpoint_id = Input(
        "id", InputKind.INTEGER, bounded_parser(1, 1 << 62), "the endpoint's id", required=True
    )
    url_help = "where to post: an http:// or https:// URL"
    events_help = f"the events wanted: {', '.join(EVENTS)}, or all"
    scope_help = (
        "whose mail: all, account (an origin account) or domain (a sender domain and its"
        " subdomains)"
    )
    describing = Input(
        "description", InputKind.STRING, text_parser(200), "a note for people", default=str
    )
    adding = (
        Input("url", InputKind.STRING, text_parser(2000), url_help, required=True),
        Input(
            "events",
            InputKind.STRING_STRUCT,
            _events,
            events_help,
            default=lambda: EVENTS,
        ),
        choice_input("scope", SCOPES, scope_help, lambda: "domain" if siteworx else "all"),
        Input(
            "scope_value",
            InputKind.STRING,
            text_parser(253),
            "the account or the domain",
            default=str,
        ),
        describing,
        Input(
            "secret",
            InputKind.STRING,
            _secret,
            "the signing secret (at least 16 characters); empty: one is generated",
            default=str,
        ),
    )
    editing = (
        endpoint_id,
        Input("url", InputKind.STRING, text_parser(2000), url_help),
        Input("events", InputKind.STRING_STRUCT, _events, events_help),
        choice_input("scope", SCOPES, scope_help),
        Input("scope_value", InputKind.STRING, text_parser(253), "the account or the domain"),
        Input("description", InputKind.STRING, text_parser(200), "a note for people"),
        Input("enabled", InputKind.INTEGER, parse_flag, "1: send to it (clears its breaker)"),
        Input(
            "rotate_secret",
            InputKind.INTEGER,
            parse_flag,
            "1: a new secret (given in `secret`, or generated)",
            default=lambda: 0,
        ),
        Input("secret", InputKind.STRING, _secret, "the new secret, when rotating", default=str),
        Input(
            "grace_hours",
            InputKind.INTEGER,
            bounded_parser(0, 24 * 30),
            "how long the old secret stays valid after a rotation (default 24)",
            default=lambda: 24,
        ),
    )
    attempts_inputs = (
        endpoint_id,
        Input(
            "failed_only",
            InputKind.INTEGER,
            parse_flag,
            "1: only the attempts that did not succeed",
            default=lambda: 0,
        ),
        *page_inputs("attempts", DEFAULT_PER_PAGE, MAX_PER_PAGE),
    )
    deliveries_inputs = (
        endpoint_id,
        choice_input(
            "state", STATES, "pending (waiting, the default) or dead (given up)", lambda: "pending"
        ),
        *page_inputs("deliveries", DEFAULT_PER_PAGE, MAX_PER_PAGE),
    )
    redeliver_inputs = (
        endpoint_id,
        Input(
            "delivery",
            InputKind.INTEGER,
            bounded_parser(0, 1 << 62),
            "one dead delivery's id; 0 or none: every dead one",
            default=lambda: 0,
        ),
    )
    actions: list[tuple[str, str, Handler, tuple[Input, ...]]] = [
        ("listEndpoints", "Webhook endpoints, their state and queue.", list_endpoints, ()),
        ("add", "Add a webhook endpoint.", add, adding),
        ("edit", "Change, enable, disable an endpoint or rotate its secret.", edit, editing),
        ("delete", "Delete an endpoint and what waits for it.", delete, (endpoint_id,)),
        ("test", "Post a sample event to an endpoint now.", test, (endpoint_id,)),
        ("listAttempts", "The requests made to an endpoint.", list_attempts, attempts_inputs),
        (
            "listDeliveries",
            "An endpoint's waiting or dead events.",
            list_deliveries,
            deliveries_inputs,
        ),
        ("redeliver", "Dead deliveries due again.", redeliver, redeliver_inputs),
        ("querySecret", "An endpoint's signing secret.", query_secret, (endpoint_id,)),
    ]
    for name, description, handler, action_inputs in actions:
        action = Action(name, description, handler, action_inputs, ANY_STRUCT)
        controller.add(action)
        if cluster is not None:
            controller.add(on_node(cluster, path, action))
    add_common_actions(controller, None)
    return controller
