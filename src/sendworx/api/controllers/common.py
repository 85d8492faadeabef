"""Building blocks every controller shares: input parsers and the three actions newer
InterWorx versions add everywhere (`queryUpdate`, `fail`, `reroute`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sendworx.api.registry import (
    Action,
    Caller,
    Controller,
    Handler,
    Input,
    InputKind,
    validated,
)
from sendworx.cluster.errors import ClusterError, UnknownNode
from sendworx.cluster.manager import ClusterManager
from sendworx.shared.errors import ActionFailed, ValidationFailed
from sendworx.shared.wire import Call

# JSON Schemas of payloads, for the JSON API's OpenAPI document.
STRING: dict[str, Any] = {"type": "string"}
BOOLEAN: dict[str, Any] = {"type": "boolean"}
STRING_LIST: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
ANY_STRUCT: dict[str, Any] = {"type": "object"}
NODE_ID: dict[str, Any] = {"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string"}]}


def parse_flag(value: object) -> int:
    """0 or 1, as an int, a numeric string or a boolean (PHP clients send all three)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    if isinstance(value, str) and value.strip() in ("0", "1", ""):
        return int(value.strip() or 0)
    raise ValueError("must be 0 or 1")


def parse_string(value: object, *, max_length: int = 255) -> str:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ValueError("must be a string")
    text = str(value).strip()
    if len(text) > max_length or any(ord(character) < 32 for character in text):
        raise ValueError(f"must be at most {max_length} printable characters")
    return text


def text_parser(limit: int) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise ValueError("must be a string")
        text = str(value).strip()
        if len(text) > limit:
            raise ValueError(f"must be at most {limit} characters")
        if not text.isprintable():
            raise ValueError("must not contain control characters")
        return text

    return parse


def choice_parser(options: tuple[str, ...], limit: int) -> Callable[[object], str]:
    """A filter's word: one of `options` in any case, or empty for none."""

    def parse(value: object) -> str:
        text = text_parser(limit)(value).lower()
        if text and text not in options:
            raise ValueError(f"one of {', '.join(options)}")
        return text

    return parse


CHOICE_CHARS = 100  # longer is refused as too long; shorter but unknown, naming the options


def choice_input(
    name: str,
    options: tuple[str, ...],
    help_text: str,
    default: Callable[[], object] | None = None,
) -> Input:
    """An input that is one word of `options` (or empty), with its JSON Schema enum."""
    return Input(
        name,
        InputKind.STRING,
        choice_parser(options, CHOICE_CHARS),
        help_text,
        default=default,
        schema={"enum": ["", *options]},
    )


def bounded_parser(low: int, high: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, bool):
            raise ValueError("must be an integer")
        try:
            number = int(str(value).strip())
        except ValueError as error:
            raise ValueError("must be an integer") from error
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return number

    return parse


def parse_node_id(value: object) -> str:
    """A node as its number (an int or a numeric string, as InterWorx clients send it) or
    its registered name."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError("must be a node's number (1 is this server) or its name")
        return str(value)
    return parse_string(value, max_length=300)


def node_action(
    cluster: ClusterManager, controller_path: str, action_name: str, local: Handler
) -> Handler:
    """`xxxOnNode`: `xxx` here for this node's id, else `xxx` with the same inputs through that
    node's own API, answering what the node answered."""

    async def handler(caller: Caller, values: dict[str, Any]) -> Any:
        node_id = values["node_id"]
        if cluster.is_local(node_id):
            return await local(caller, values)
        inputs = {name: value for name, value in values.items() if name != "node_id"}
        call: Call[Any] = Call(controller_path, action_name, inputs)
        try:
            reply = await cluster.run_on(node_id, call)
        except UnknownNode as error:
            raise ValidationFailed({"node_id": str(error)}) from error
        except ClusterError as error:
            raise ActionFailed(str(error)) from error
        return reply.payload_for(call)  # the node's own error for its status, if not 0

    return handler


def page_inputs(what: str, default: int, most: int) -> tuple[Input, Input]:
    """`page` (from 1) and `per_page` of a listing, newest first."""
    return (
        Input(
            "page", InputKind.INTEGER, bounded_parser(1, 100_000), "default 1", default=lambda: 1
        ),
        Input(
            "per_page",
            InputKind.INTEGER,
            bounded_parser(1, most),
            f"{what} per page (default {default}, at most {most})",
            default=lambda: default,
        ),
    )


def page_of(name: str, rows: list[Any], page: int, per_page: int, total: int) -> dict[str, Any]:
    """A listing's reply: its rows under `name`, the page, the total and whether more follow."""
    return {name: rows, "page": page, "total": total, "more": int(page * per_page < total)}


def node_input(local_node: str) -> Input:
    return Input(
        "node_id",
        InputKind.STRING,
        parse_node_id,
        "the node: its number (1 is this server) or its name as registered",
        default=lambda: local_node,
        schema=NODE_ID,
    )


def on_node(cluster: ClusterManager, controller_path: str, action: Action) -> Action:
    """`xxxOnNode` of a local action `xxx`: the same inputs and a `node_id`."""
    return Action(
        f"{action.name}OnNode",
        f"{action.description} On one node of the cluster.",
        node_action(cluster, controller_path, action.name, action.handler),
        (*action.inputs, node_input(cluster.local_node)),
        action.returns,
        validates_in_thread=action.validates_in_thread,
    )


def add_common_actions(
    controller: Controller, query_update: Callable[[], Awaitable[dict[str, Any]]] | None
) -> None:
    """`fail` and `reroute`, and `queryUpdate` for a controller with an `update` to query."""

    async def query(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        assert query_update is not None
        return await query_update()

    async def fail(caller: Caller, values: dict[str, Any]) -> Any:
        raise ActionFailed("this action always fails, so clients can test their error handling")

    async def reroute(caller: Caller, values: dict[str, Any]) -> Any:
        target = controller.actions.get(values["action"])
        if target is None or target.name == "reroute":
            raise ValidationFailed({"action": f"no action {values['action']!r} to reroute to"})
        return await target.handler(caller, await validated(target, values["input"]))

    if query_update is not None:
        controller.add(
            Action(
                "queryUpdate", "Current values of every input of update.", query, returns=ANY_STRUCT
            )
        )
    controller.add(Action("fail", "Always fails (for testing error handling).", fail))
    controller.add(
        Action(
            "reroute",
            "Runs another action of this controller with the given input.",
            reroute,
            (
                Input(
                    "action",
                    InputKind.STRING,
                    parse_string,
                    "the action to run",
                    required=True,
                    schema={"enum": sorted(controller.actions)},
                ),
                Input("input", InputKind.STRUCT, lambda value: value, "its input", default=dict),
            ),
        )
    )
