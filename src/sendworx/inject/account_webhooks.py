"""What the submission daemon answers `sendworx webhooks` run by a local account: that
account's own endpoints, each for the account's own mail (scope `account`, the account the
kernel names: SO_PEERCRED, never the caller's word). A site on a shared host learns what
became of the mail its `mail()` calls sent, without a panel login. The answers are the JSON
`/nodeworx/mail/webhooks` gives, so the command prints them the same way.

    mailwebhooks list
    mailwebhooks add URL [--events E,E] [--description TEXT]
    mailwebhooks delete ID | secret ID | attempts ID [--page N]
    mailwebhooks rotate ID [--grace-hours N]
    mailwebhooks test ID          (the daemon probes it: shared/webhook_probe.py)

An account has at most MAX_ENDPOINTS endpoints, sees and changes no other endpoint, and its
URLs obey the same rules as the operator's (shared/network_guard.py; the daemon has no
network, so a name is judged by the sender at each request).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

from sendworx.shared.network_guard import AddressGuard, RefusedAddress
from sendworx.shared.webhook_signature import new_secret
from sendworx.shared.webhooks import EVENTS, Endpoint, WebhookStore

PROGRAM = "mailwebhooks"
MAX_ENDPOINTS = 10
PER_PAGE = 50


class WebhooksRefused(Exception):
    """A request the daemon does not answer; the text says why."""


@dataclass(frozen=True)
class WebhooksAccess:
    """What the daemon needs to answer: the store, the URL rules, where the sender hears of
    a test, this node's name, how long a test is waited for."""

    store: WebhookStore
    guard: AddressGuard
    trigger: Path
    node: str
    wait_seconds: float
    sender_pid_file: Path  # webhookd's: a test is not waited for while nobody sends


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, add_help=False, exit_on_error=False)
    parser.add_argument("action", choices=("list", "add", "delete", "secret", "attempts",
                                           "rotate", "test"))  # fmt: skip
    parser.add_argument("target", nargs="?", default="")
    parser.add_argument("--events", default="")
    parser.add_argument("--description", default="")
    parser.add_argument("--page", type=int, default=1)
    parser.add_argument("--grace-hours", type=int, default=24)
    return parser


def _events(text: str) -> tuple[str, ...]:
    events = tuple(dict.fromkeys(e for e in text.replace(",", " ").split() if e))
    if not events or events == ("all",):
        return EVENTS
    unknown = [event for event in events if event not in EVENTS]
    if unknown:
        raise WebhooksRefused(f"{PROGRAM}: --events: one or more of {', '.join(EVENTS)}")
    return events


def _is_of(endpoint: Endpoint, account: str) -> bool:
    return endpoint.scope == "account" and endpoint.scope_value == account


def own(store: WebhookStore, account: str, target: str) -> Endpoint:
    """The account's endpoint named `target`; WebhooksRefused for any other."""
    if not target.isdigit() or len(target) > 18:
        raise WebhooksRefused(f"{PROGRAM}: name an endpoint by its id")
    endpoint = store.endpoint(int(target))
    if endpoint is None or not _is_of(endpoint, account):
        raise WebhooksRefused(f"{PROGRAM}: no endpoint {target} of yours")
    return endpoint


def _mine(store: WebhookStore, account: str) -> list[Endpoint]:
    if not store.exists():
        return []
    return [e for e in store.endpoints() if _is_of(e, account)]


def parse(arguments: list[str]) -> argparse.Namespace:
    try:
        return _parser().parse_args(arguments)
    except (argparse.ArgumentError, SystemExit) as error:
        raise WebhooksRefused(f"{PROGRAM}: {error}") from None


def account_webhooks(
    store: WebhookStore, guard: AddressGuard, account: str, asked: argparse.Namespace
) -> str:
    """The JSON answer to everything but `test`; WebhooksRefused for a bad request,
    WebhookStoreError when the store cannot be used."""
    now = time.time()
    if asked.action == "list":
        return json.dumps({"endpoints": store.listed(lambda e: _is_of(e, account), now)})
    if asked.action == "add":
        try:
            guard.check_url(asked.target)
        except RefusedAddress as error:
            raise WebhooksRefused(f"{PROGRAM}: {asked.target[:100]!r}: {error}") from None
        if len(asked.description) > 200 or not asked.description.isprintable():
            raise WebhooksRefused(f"{PROGRAM}: --description: at most 200 printable characters")
        if len(_mine(store, account)) >= MAX_ENDPOINTS:
            raise WebhooksRefused(f"{PROGRAM}: at most {MAX_ENDPOINTS} endpoints per account")
        endpoint = store.add_endpoint(
            asked.target,
            _events(asked.events),
            "account",
            account,
            new_secret(),
            description=asked.description,
            owner=f"account {account}",
            now=now,
        )
        return json.dumps({**endpoint.to_document(now, reveal=True), "warning": ""})
    endpoint = own(store, account, asked.target)
    if asked.action == "delete":
        store.delete_endpoint(endpoint.id)
        return json.dumps({"deleted": endpoint.id})
    if asked.action == "secret":
        secrets = endpoint.secrets(now)
        return json.dumps({"id": endpoint.id, "secret": endpoint.secret, "secrets": secrets})
    if asked.action == "rotate":
        if not 0 <= asked.grace_hours <= 24 * 30:
            raise WebhooksRefused(f"{PROGRAM}: --grace-hours from 0 to 720")
        changes = endpoint.rotated(new_secret(), asked.grace_hours * 3600, now)
        rotated = store.edit_endpoint(endpoint.id, **changes)
        if rotated is None:
            raise WebhooksRefused(f"{PROGRAM}: no endpoint {asked.target} of yours")
        return json.dumps({**rotated.to_document(now, reveal=True), "warning": ""})
    if asked.action == "attempts":
        if not 1 <= asked.page <= 100_000:
            raise WebhooksRefused(f"{PROGRAM}: --page from 1")
        attempts, total = store.attempts(endpoint.id, asked.page, PER_PAGE)
        rows = [attempt.to_document() for attempt in attempts]
        more = int(asked.page * PER_PAGE < total)
        return json.dumps({"attempts": rows, "page": asked.page, "total": total, "more": more})
    raise WebhooksRefused(f"{PROGRAM}: {asked.action} is answered elsewhere")
