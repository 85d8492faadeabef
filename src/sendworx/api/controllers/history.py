"""/nodeworx/mail/history: what happened to the mail (shared/history.py), in InterWorx's
conventions; every action exists `OnNode`.

    listEvents(filters, page, per_page)   events newest first: sender or recipient (an
                                          address, or a domain), account, queue_id,
                                          message_id (the header), event, since, until
    queryMessage(queue_id)                one message's whole story, oldest first
    querySummary(hours)                   deferrals and failures of the last hours, per
                                          class and for the destinations with the most
    listEventsOnAllNodes(filters, page, per_page)
                                          listEvents on this server and every registered
                                          node at once, merged newest first, each event
                                          naming its `node` (the newest 500 at most)
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sendworx.api.controllers.common import (
    ANY_STRUCT,
    add_common_actions,
    bounded_parser,
    choice_input,
    on_node,
    page_inputs,
    text_parser,
)
from sendworx.api.registry import Action, Caller, Controller, Handler, Input, InputKind
from sendworx.cluster.manager import ClusterManager
from sendworx.shared.bounce_classes import CLASSES
from sendworx.shared.errors import ActionFailed, ValidationFailed
from sendworx.shared.history import (
    EVENTS,
    MAX_PER_PAGE,
    HistoryError,
    HistoryFilter,
    HistoryReader,
)
from sendworx.shared.instance import Instance
from sendworx.shared.queue_format import is_message_id
from sendworx.shared.wire import Call

HISTORY = "/nodeworx/mail/history"
DEFAULT_PER_PAGE = 50
SUMMARY_DESTINATIONS = 10
FILTER_NAMES = (
    "sender", "recipient", "account", "queue_id", "message_id", "event", "class", "since", "until",
)  # fmt: skip
LATEST_TIME = 32503680000  # the year 3000: any later `since`/`until` is a mistake


def _queue_id(value: object) -> str:
    text = text_parser(64)(value)
    if not is_message_id(text):
        raise ValueError("is not a queue id")
    return text


def _time(value: object) -> float:
    return float(bounded_parser(0, LATEST_TIME)(value))


def history_controller(instance: Instance, cluster: ClusterManager) -> Controller:
    controller = Controller(HISTORY, "MailHistory", ("EMAIL",))
    reader = HistoryReader(instance.history_path)

    async def read(work: Any, *arguments: Any) -> Any:
        try:
            return await asyncio.to_thread(work, *arguments)
        except HistoryError as error:
            raise ActionFailed(str(error)) from error

    async def list_events(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        selection = HistoryFilter(
            sender=values.get("sender", ""),
            recipient=values.get("recipient", ""),
            account=values.get("account", ""),
            queue_id=values.get("queue_id", ""),
            message_id=values.get("message_id", ""),
            event=values.get("event", ""),
            bounce_class=values.get("class", ""),
            since=values.get("since"),
            until=values.get("until"),
        )
        page, per_page = values["page"], values["per_page"]
        events, more = await read(reader.search, selection, page, per_page)
        return {
            "events": [event.to_document() for event in events],
            "page": page,
            "more": int(more),
        }

    async def list_everywhere(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        """Every node's newest `page * per_page` events, merged: a page of the whole."""
        page, per_page = values["page"], values["per_page"]
        depth = page * per_page
        if depth > MAX_PER_PAGE:
            raise ValidationFailed(
                {"page": f"across nodes, only the newest {MAX_PER_PAGE} events: narrow the search"}
            )
        local = await list_events(caller, {**values, "page": 1, "per_page": depth})
        wire: dict[str, Any] = {"page": 1, "per_page": depth}
        for name in FILTER_NAMES:
            value = values.get(name)
            if value not in (None, ""):
                wire[name] = int(value) if name in ("since", "until") else value
        replies = await cluster.cascade(local, Call(HISTORY, "listEvents", wire))
        merged: list[dict[str, Any]] = []
        nodes: dict[str, str] = {}
        more = False
        for node_id, reply in replies.items():
            if reply["status"] != 0:
                nodes[node_id] = f"status {reply['status']}: {reply['payload']}"
                continue
            nodes[node_id] = "ok"
            merged += [{**event, "node": node_id} for event in reply["payload"]["events"]]
            more = more or bool(reply["payload"]["more"])
        merged.sort(key=lambda event: -float(event["at"]))  # stable: each node's order kept
        return {
            "events": merged[depth - per_page : depth],
            "page": page,
            "more": int(more or len(merged) > depth),
            "nodes": nodes,
        }

    async def query_message(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        events = await read(reader.timeline, values["queue_id"])
        if not events:
            raise ValidationFailed({"queue_id": "no event of this message in the history"})
        return {"queue_id": values["queue_id"], "events": [e.to_document() for e in events]}

    async def query_summary(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        hours = values["hours"]
        since = time.time() - hours * 3600
        summary: dict[str, Any] = await read(reader.summarise, since, SUMMARY_DESTINATIONS)
        return {"hours": hours, **summary}

    text = text_parser(320)
    inputs = (
        Input("sender", InputKind.STRING, text, "an address, or a domain"),
        Input("recipient", InputKind.STRING, text, "an address, or a domain"),
        Input("account", InputKind.STRING, text_parser(64), "the Unix account that sent it"),
        Input("queue_id", InputKind.STRING, _queue_id, "the message's id in the queue"),
        Input("message_id", InputKind.STRING, text_parser(250), "its Message-ID header"),
        choice_input("event", EVENTS, ", ".join(EVENTS)),
        choice_input("class", CLASSES, "why it was deferred or failed: " + ", ".join(CLASSES)),
        Input("since", InputKind.INTEGER, _time, "from this time (seconds since 1970)"),
        Input("until", InputKind.INTEGER, _time, "before this time (seconds since 1970)"),
        *page_inputs("events", DEFAULT_PER_PAGE, MAX_PER_PAGE),
    )
    queue_id = Input(
        "queue_id", InputKind.STRING, _queue_id, "the message's id in the queue", required=True
    )
    actions: list[tuple[str, str, Handler, tuple[Input, ...]]] = [
        ("listEvents", "Events newest first, matching the filters.", list_events, inputs),
        ("queryMessage", "One message's events, oldest first.", query_message, (queue_id,)),
        (
            "querySummary",
            "Deferrals and failures of the last hours, per class and destination.",
            query_summary,
            (
                Input(
                    "hours",
                    InputKind.INTEGER,
                    bounded_parser(1, 24 * 90),
                    "how far back (default 6)",
                    default=lambda: 6,
                ),
            ),
        ),
    ]
    controller.add(
        Action(
            "listEventsOnAllNodes",
            "Events newest first on this server and every node of the cluster, merged.",
            list_everywhere,
            inputs,
            ANY_STRUCT,
        )
    )
    for name, description, handler, action_inputs in actions:
        action = Action(name, description, handler, action_inputs, ANY_STRUCT)
        controller.add(action)
        controller.add(on_node(cluster, HISTORY, action))
    add_common_actions(controller, None)
    return controller
