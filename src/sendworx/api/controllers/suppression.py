"""/nodeworx/mail/suppression: the addresses mail is not attempted to (shared/suppression.py),
in InterWorx's conventions; every action exists `OnNode`. The engine takes a change into
account within a second.

    listAddresses(search, reason, page, per_page)  entries in force, newest first: `search`
                                                   is an address, a domain or a part of one
    add(address, days, note)                       one or more addresses (commas, spaces or
                                                   lines between), for `days` (default
                                                   `suppression.days`)
    remove(address)                                one or more addresses off the list
    exportCsv()                                    every entry in force, as CSV
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

from sendworx.api.controllers.common import (
    ANY_STRUCT,
    STRING,
    add_common_actions,
    bounded_parser,
    choice_input,
    on_node,
    page_inputs,
    page_of,
    text_parser,
)
from sendworx.api.registry import Action, Caller, Controller, Handler, Input, InputKind
from sendworx.cluster.manager import ClusterManager
from sendworx.shared.config import ConfigError
from sendworx.shared.errors import ActionFailed
from sendworx.shared.instance import Instance
from sendworx.shared.policy import load_policy
from sendworx.shared.suppression import (
    MAX_PER_PAGE,
    REASONS,
    ListChooser,
    Suppression,
    SuppressionError,
    SuppressionList,
    normal_address,
)

SUPPRESSION = "/nodeworx/mail/suppression"
DEFAULT_PER_PAGE = 50
MAX_ADDRESSES = 1000  # in one add or remove
_SEPARATORS = re.compile(r"[\s,;]+")


def _addresses(value: object) -> list[str]:
    if isinstance(value, dict):  # PHP's arrays: a struct of strings
        value = list(value.values())
    if isinstance(value, list):
        items = [text_parser(320)(item) for item in value]
    else:
        if not isinstance(value, str) or len(value) > MAX_ADDRESSES * 256:
            raise ValueError("must be addresses, commas, spaces or lines between")
        items = [text_parser(320)(item) for item in _SEPARATORS.split(value)]
    items = [item for item in items if item]
    if not items:
        raise ValueError("name at least one address")
    if len(items) > MAX_ADDRESSES:
        raise ValueError(f"at most {MAX_ADDRESSES} addresses at once")
    addresses = []
    for item in items:
        try:
            addresses.append(normal_address(item))
        except ValueError as error:
            raise ValueError(f"{item[:80]!r} {error}") from error
    return list(dict.fromkeys(addresses))


def _redis_url(instance: Instance) -> str | None:
    """The sending policy's Redis, where a cluster keeps one list (read at each call)."""
    return load_policy(instance.policy_path).redis_url


def suppression_controller(instance: Instance, cluster: ClusterManager) -> Controller:
    controller = Controller(SUPPRESSION, "MailSuppression", ("EMAIL",))
    lists = ListChooser(instance.suppression_path, lambda: _redis_url(instance))
    default_days = int(instance.config.suppression.days)

    async def use(work: Callable[[SuppressionList], Any]) -> Any:
        """`work(the list in force)` in a worker thread."""
        try:
            return await asyncio.to_thread(lambda: work(lists()))
        except (SuppressionError, ConfigError) as error:
            raise ActionFailed(str(error)) from error

    async def list_addresses(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        page, per_page = values["page"], values["per_page"]
        search, reason, now = values["search"], values["reason"], time.time()
        entries, total = await use(lambda store: store.search(search, reason, now, page, per_page))
        rows = [entry.to_document() for entry in entries]
        return page_of("addresses", rows, page, per_page, total)

    async def add(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        until = now + values["days"] * 86400
        note, who = values["note"], caller.email or "operator"

        entries = [Suppression(a, now, until, "operator", note, who) for a in values["address"]]
        await use(lambda store: store.add(*entries))
        return {"added": values["address"], "until": until}

    async def remove(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        removed = await use(lambda store: store.remove(values["address"]))
        return {"removed": removed}

    async def export_csv(caller: Caller, values: dict[str, Any]) -> str:
        now = time.time()
        text: str = await use(lambda store: store.export_csv(now))
        return text

    address = Input(
        "address",
        InputKind.STRING_STRUCT,
        _addresses,
        f"one or more addresses, commas, spaces or lines between (at most {MAX_ADDRESSES})",
        required=True,
    )
    listing = (
        Input(
            "search",
            InputKind.STRING,
            text_parser(320),
            "an address, a domain (example.com or @example.com), or a part of an address",
            default=lambda: "",
        ),
        choice_input("reason", REASONS, "why it is suppressed: " + ", ".join(REASONS), str),
        *page_inputs("entries", DEFAULT_PER_PAGE, MAX_PER_PAGE),
    )
    adding = (
        address,
        Input(
            "days",
            InputKind.INTEGER,
            bounded_parser(1, 3650),
            f"how long it lasts (default {default_days})",
            default=lambda: default_days,
        ),
        Input("note", InputKind.STRING, text_parser(200), "why, for the record", default=str),
    )
    actions: list[tuple[str, str, Handler, tuple[Input, ...], dict[str, Any]]] = [
        (
            "listAddresses",
            "Suppressed addresses, newest first.",
            list_addresses,
            listing,
            ANY_STRUCT,
        ),
        ("add", "Suppress addresses (by hand).", add, adding, ANY_STRUCT),
        ("remove", "Take addresses off the list.", remove, (address,), ANY_STRUCT),
        ("exportCsv", "Every suppressed address, as CSV.", export_csv, (), STRING),
    ]
    for name, description, handler, action_inputs, returns in actions:
        action = Action(name, description, handler, action_inputs, returns)
        controller.add(action)
        controller.add(on_node(cluster, SUPPRESSION, action))
    add_common_actions(controller, None)
    return controller
