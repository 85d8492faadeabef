"""Building blocks every controller shares: input parsers and the three actions newer
InterWorx versions add everywhere (`queryUpdate`, `fail`, `reroute`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sendworx.api.registry import Action, Caller, Controller, Input, InputKind, validated
from sendworx.shared.errors import ActionFailed, ValidationFailed

# JSON Schemas of payloads, for the JSON API's OpenAPI document.
STRING: dict[str, Any] = {"type": "string"}
BOOLEAN: dict[str, Any] = {"type": "boolean"}
STRING_LIST: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
ANY_STRUCT: dict[str, Any] = {"type": "object"}


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


def add_common_actions(
    controller: Controller, query_update: Callable[[], Awaitable[dict[str, Any]]]
) -> None:
    async def query(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        return await query_update()

    async def fail(caller: Caller, values: dict[str, Any]) -> Any:
        raise ActionFailed("this action always fails, so clients can test their error handling")

    async def reroute(caller: Caller, values: dict[str, Any]) -> Any:
        target = controller.actions.get(values["action"])
        if target is None or target.name == "reroute":
            raise ValidationFailed({"action": f"no action {values['action']!r} to reroute to"})
        return await target.handler(caller, await validated(target, values["input"]))

    controller.add(
        Action("queryUpdate", "Current values of every input of update.", query, returns=ANY_STRUCT)
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
