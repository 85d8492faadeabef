"""/nodeworx/mail/queue: the mail queue for operators (InterWorx's MailQueue; permission EMAIL).

List and search (by sender, recipient, destination, state, age, last reply, kind, with pages),
a qshape-like summary, one message in full, and the actions an operator takes when mail is
stuck or a hacked site floods the queue: retry, hold, release, expire, delete, and purge
(everything matching, only with `confirm=1`). Each action works on a list of ids or on the
same filters as the list, whether the engine runs or not, and answers how many messages it
touched, which were in flight (changed after the attempt under way) and which ids were not
queued. Every action exists `OnNode`; the summary can cascade to every node.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from dataclasses import replace
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from sendworx.api.controllers.common import (
    ANY_STRUCT,
    add_common_actions,
    bounded_parser,
    on_node,
    parse_flag,
    text_parser,
)
from sendworx.api.controllers.service_actions import cascade_input, cascading
from sendworx.api.registry import Action, Caller, Controller, Handler, Input, InputKind
from sendworx.backends import QueueBackend, ServiceError
from sendworx.cluster.manager import ClusterManager
from sendworx.shared.errors import ActionFailed, ValidationFailed
from sendworx.shared.instance import Instance
from sendworx.shared.queue_actions import ActionOutcome, QueueAction
from sendworx.shared.queue_format import CorruptMessageError, decode_message, is_message_id
from sendworx.shared.queue_index import MESSAGE_STATES, QueueFilter, QueueIndex

QUEUE = "/nodeworx/mail/queue"
MAX_IDS = 1000
MAX_PAGE = 1000
DEFAULT_PAGE = 50
BODY_LIMIT = 64 * 1024
KINDS = ("normal", "bounce", "double-bounce")
_ID_SEPARATORS = re.compile(r"[\s,]+")
FILTER_HELP = {
    "sender": "an address, or a domain (example.com): messages from it",
    "recipient": "an address, or a domain: messages with such a recipient",
    "destination": "messages waiting to go to this MX domain or route relay (as the summary "
    "names it)",
    "state": "new, active (being delivered now), deferred or held",
    "older_than": "seconds: messages queued longer ago than this",
    "younger_than": "seconds: messages queued more recently than this",
    "reply": "a piece of the last remote reply (case-sensitive)",
    "kind": "normal, bounce or double-bounce",
}


def _choice(options: tuple[str, ...]) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = text_parser(40)(value)
        if text and text not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return text

    return parse


def _seconds(value: object) -> int | None:
    """Whole seconds; "" (what a form sends for an unused filter) means not set."""
    if isinstance(value, str) and not value.strip():
        return None
    if isinstance(value, bool) or not isinstance(value, int | str | float):
        raise ValueError("must be a number of seconds")
    try:
        number = int(str(value).strip()) if not isinstance(value, float) else int(value)
    except ValueError as error:
        raise ValueError("must be a number of seconds") from error
    if not 0 <= number <= 10 * 365 * 86400:
        raise ValueError("must be between 0 and 315360000 seconds")
    return number


def parse_ids(value: object) -> list[str]:
    """A list, a struct of strings, or one string of ids separated by commas or spaces."""
    if isinstance(value, str):
        items: list[object] = [item for item in _ID_SEPARATORS.split(value.strip()) if item]
    elif isinstance(value, dict):
        items = list(value.values())
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError("must be a list of message ids")
    if len(items) > MAX_IDS:
        raise ValueError(f"at most {MAX_IDS} ids at once; act on a filter for more")
    ids = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, str) or not is_message_id(item.strip()):
            shown = repr(item)[:40] if isinstance(item, str) else type(item).__name__
            raise ValueError(f"item {number} ({shown}) is not a message id")
        ids.append(item.strip())
    return list(dict.fromkeys(ids))


FILTER_INPUTS = (
    Input("sender", InputKind.STRING, text_parser(320), FILTER_HELP["sender"]),
    Input("recipient", InputKind.STRING, text_parser(320), FILTER_HELP["recipient"]),
    Input("destination", InputKind.STRING, text_parser(300), FILTER_HELP["destination"]),
    Input(
        "state",
        InputKind.STRING,
        _choice(MESSAGE_STATES),
        FILTER_HELP["state"],
        schema={"enum": ["", *MESSAGE_STATES]},
    ),
    Input("older_than", InputKind.INTEGER, _seconds, FILTER_HELP["older_than"]),
    Input("younger_than", InputKind.INTEGER, _seconds, FILTER_HELP["younger_than"]),
    Input("reply", InputKind.STRING, text_parser(200), FILTER_HELP["reply"]),
    Input(
        "kind", InputKind.STRING, _choice(KINDS), FILTER_HELP["kind"], schema={"enum": ["", *KINDS]}
    ),
)
IDS_INPUT = Input(
    "ids",
    InputKind.STRING_STRUCT,
    parse_ids,
    f"message ids (at most {MAX_IDS}); without them, the filters choose",
    schema={"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]},
)


def _filter(values: dict[str, Any]) -> QueueFilter:
    return QueueFilter(
        sender=values.get("sender", ""),
        recipient=values.get("recipient", ""),
        destination=values.get("destination", ""),
        state=values.get("state", ""),
        older_than=values.get("older_than"),
        younger_than=values.get("younger_than"),
        reply=values.get("reply", ""),
        kind=values.get("kind", ""),
    )


class Cursors:
    """Opaque page cursors that name the queue they belong to."""

    def __init__(self, instance: Instance) -> None:
        self._queue = hashlib.sha256(str(instance.queue_dir.resolve()).encode()).hexdigest()[:12]

    def make(self, last_id: str) -> str:
        return base64.urlsafe_b64encode(f"{self._queue}:{last_id}".encode()).decode()

    def read(self, cursor: str) -> str:
        try:
            queue, _, last_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError) as error:
            raise ValidationFailed({"cursor": "is not a cursor this API gave out"}) from error
        if queue != self._queue:
            raise ValidationFailed({"cursor": "belongs to another queue"})
        if not is_message_id(last_id):
            raise ValidationFailed({"cursor": "is not a cursor this API gave out"})
        return last_id


def queue_controller(
    instance: Instance, backend: QueueBackend, cluster: ClusterManager, index: QueueIndex
) -> Controller:
    controller = Controller(QUEUE, "MailQueue", ("EMAIL",))
    cursors = Cursors(instance)

    async def active() -> set[str]:
        return await asyncio.to_thread(backend.active_ids)

    async def ready_index() -> QueueIndex:
        await asyncio.to_thread(index.ensure_current)
        return index

    async def list_messages(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        after = cursors.read(values["cursor"]) if values.get("cursor") else ""
        limit = values.get("page_size", DEFAULT_PAGE)
        index = await ready_index()
        page, total = await asyncio.to_thread(
            index.search, _filter(values), await active(), limit, after
        )
        next_cursor = cursors.make(page[-1]["id"]) if len(page) == limit else ""
        return {
            "messages": page,
            "total": total,
            "next_cursor": next_cursor,
            "index": index.status().to_document(),
        }

    async def summary(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        index = await ready_index()
        summary = await asyncio.to_thread(
            index.summary, await active(), values.get("limit", 50), values.get("max_age", 0)
        )
        # How fast mail may go where it waits: the engine's paces (a copy: the summary is cached)
        return {
            **summary,
            "pacing": await asyncio.to_thread(backend.pacing),
            "index": index.status().to_document(),
        }

    async def query_message(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        message_id = values["id"]
        try:
            return await asyncio.to_thread(
                _message, instance, message_id, bool(values.get("body")), await active()
            )
        except FileNotFoundError as error:
            raise ValidationFailed({"id": f"no message {message_id} is queued"}) from error

    async def activity(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        report = await asyncio.to_thread(backend.activity, values.get("minutes", 60))
        if report is None:
            return {"running": False, "since": 0.0, "minutes": [], "latest": []}
        return {
            "running": True,
            "since": report.get("started_at", 0.0),
            "minutes": report.get("minutes", []),
            "latest": report.get("latest", []),
        }

    async def chosen_ids(values: dict[str, Any], *, everything_allowed: bool) -> list[str]:
        if values.get("ids"):
            return list(values["ids"])
        selection = _filter(values)
        if selection.is_empty() and not everything_allowed:
            raise ValidationFailed({"ids": "give message ids, or at least one filter"})
        index = await ready_index()
        return await asyncio.to_thread(index.matching_ids, selection, await active())

    async def act(action: QueueAction, ids: list[str], by: str) -> dict[str, object]:
        try:
            outcome: ActionOutcome = await asyncio.to_thread(backend.act_on_queue, action, ids, by)
        except ServiceError as error:
            raise ActionFailed(str(error)) from error
        payload = outcome.as_payload()
        if outcome.in_flight:
            payload["note"] = (
                f"{len(outcome.in_flight)} message(s) were being delivered: the {action} takes "
                "effect when that attempt ends"
            )
        return payload

    def acting(action: QueueAction) -> Handler:
        async def handler(caller: Caller, values: dict[str, Any]) -> dict[str, object]:
            ids = await chosen_ids(values, everything_allowed=False)
            return await act(action, ids, caller.email)

        return handler

    async def purge(caller: Caller, values: dict[str, Any]) -> dict[str, object]:
        if values.get("confirm") != 1:
            raise ValidationFailed(
                {
                    "confirm": "must be 1: purge deletes every message the filters match, "
                    "and with no filter, the whole queue"
                }
            )
        ids = await chosen_ids(values, everything_allowed=True)
        return await act(QueueAction.DELETE, ids, caller.email)

    page_inputs = (
        Input(
            "page_size",
            InputKind.INTEGER,
            bounded_parser(1, MAX_PAGE),
            f"messages per page (default {DEFAULT_PAGE}, at most {MAX_PAGE})",
            default=lambda: DEFAULT_PAGE,
        ),
        Input("cursor", InputKind.STRING, text_parser(200), "next_cursor of the page before"),
    )
    id_input = Input(
        "id",
        InputKind.STRING,
        lambda value: parse_ids([value])[0],
        "the message id",
        required=True,
    )
    confirm = Input(
        "confirm",
        InputKind.INTEGER,
        parse_flag,
        "must be 1: purge deletes everything the filters match",
        default=lambda: 0,
    )
    limit = Input(
        "limit",
        InputKind.INTEGER,
        bounded_parser(1, 500),
        "rows per table (default 50)",
        default=lambda: 50,
    )
    actions: list[tuple[str, str, Handler, tuple[Input, ...]]] = [
        (
            "listMessages",
            "Lists queued messages matching the filters, a page at a time.",
            list_messages,
            (*FILTER_INPUTS, *page_inputs),
        ),
        (
            "querySummary",
            "Totals by state, and where mail waits and who sent it (qshape).",
            summary,
            (
                limit,
                Input(
                    "max_age",
                    InputKind.INTEGER,
                    bounded_parser(0, 60),
                    "seconds: an answer this old will do (default 0: the queue as it is now)",
                    default=lambda: 0,
                ),
            ),
        ),
        (
            "queryMessage",
            "One message: envelope, headers, attempt history; body on request.",
            query_message,
            (
                id_input,
                Input(
                    "body",
                    InputKind.INTEGER,
                    parse_flag,
                    f"1: include the body (at most {BODY_LIMIT} bytes)",
                ),
            ),
        ),
        (
            "queryActivity",
            "Delivery results per minute and the latest attempts, while the engine runs.",
            activity,
            (
                Input(
                    "minutes",
                    InputKind.INTEGER,
                    bounded_parser(1, 360),
                    "how many of the last minutes (default 60, at most 360)",
                    default=lambda: 60,
                ),
            ),
        ),
        (
            "retry",
            "Tries the chosen messages now.",
            acting(QueueAction.RETRY),
            (IDS_INPUT, *FILTER_INPUTS),
        ),
        (
            "hold",
            "Holds the chosen messages: never attempted, never expired, until released.",
            acting(QueueAction.HOLD),
            (IDS_INPUT, *FILTER_INPUTS),
        ),
        (
            "release",
            "Releases held messages: they are tried now.",
            acting(QueueAction.RELEASE),
            (IDS_INPUT, *FILTER_INPUTS),
        ),
        (
            "expire",
            "Bounces what is left of the chosen messages to their senders, now.",
            acting(QueueAction.EXPIRE),
            (IDS_INPUT, *FILTER_INPUTS),
        ),
        (
            "delete",
            "Deletes the chosen messages, without a bounce.",
            acting(QueueAction.DELETE),
            (IDS_INPUT, *FILTER_INPUTS),
        ),
        (
            "purge",
            "Deletes every message the filters match (confirm=1), without a bounce.",
            purge,
            (*FILTER_INPUTS, confirm),
        ),
    ]
    for name, description, handler, inputs in actions:
        heavy = name in ("retry", "hold", "release", "expire", "delete", "purge")
        plain = Action(name, description, handler, inputs, ANY_STRUCT, validates_in_thread=heavy)
        if name == "querySummary":  # here, it may ask every node too
            cascaded = cascading(QUEUE, name, handler, cluster)
            controller.add(replace(plain, handler=cascaded, inputs=(*inputs, cascade_input())))
        else:
            controller.add(plain)
        controller.add(on_node(cluster, QUEUE, plain))

    async def nothing_to_update() -> dict[str, Any]:
        return {}

    add_common_actions(controller, nothing_to_update)
    return controller


def _message(
    instance: Instance, message_id: str, with_body: bool, active: set[str]
) -> dict[str, Any]:
    """Everything about one message, read from its files."""
    queue = instance.queue()
    data = queue.read_file(message_id)
    try:
        envelope, content = decode_message(data)
    except CorruptMessageError as error:
        raise ActionFailed(f"message {message_id} cannot be read: {error}") from error
    state = queue.read_state(message_id)
    end = content.find(b"\n\n")
    crlf_end = content.find(b"\r\n\r\n")
    if crlf_end != -1 and (end == -1 or crlf_end < end):
        header_bytes, body = content[:crlf_end], content[crlf_end + 4 :]
    elif end != -1:
        header_bytes, body = content[:end], content[end + 2 :]
    else:
        header_bytes, body = content, b""
    headers = BytesHeaderParser(policy=compat32).parsebytes(header_bytes + b"\n\n")
    finished = state.finished_recipients() if state else set()
    payload: dict[str, Any] = {
        "id": message_id,
        "sender": envelope.sender,
        "recipients": list(envelope.recipients),
        "pending": [r for r in envelope.recipients if r not in finished],
        "delivered": state.delivered if state else [],
        "failed": [
            {"recipient": f.recipient, "reply": f.reply, "status": f.status, "host": f.remote or ""}
            for f in (state.failed if state else [])
        ],
        "kind": envelope.kind.value,
        # Who handed it in: via sendmail (uid, account), smtpd (peer) or the engine; {} for
        # files from before it was recorded.
        "origin": envelope.origin.to_document() if envelope.origin else {},
        "birth": envelope.birth,
        "size": len(data),
        "state": (
            "active"
            if message_id in active
            else "held"
            if state and state.held
            else "deferred"
            if state and state.attempts
            else "new"
        ),
        "attempts": state.attempts if state else 0,
        "next_attempt_at": state.next_attempt_at if state else 0.0,
        "headers": [[name, str(value)] for name, value in headers.items()],
        "history": [
            {
                "at": entry.at,
                "results": [
                    {
                        "recipient": result.recipient,
                        "outcome": result.outcome,
                        "reply": result.reply,
                        "host": result.remote or "",
                    }
                    for result in entry.results
                ],
            }
            for entry in (state.history if state else [])
        ],
    }
    if with_body:
        payload["body"] = body[:BODY_LIMIT].decode("utf-8", "replace")
        payload["body_truncated"] = len(body) > BODY_LIMIT
    return payload
