"""Typed calls, independent of I/O: `Client.run(is_running())` returns a bool,
`await AsyncClient.run(is_running())` too. Each call is a controller, an action, the input and
a conversion of the payload."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sendworx.shared.wire import Call

__all__ = ["Call"]  # and the builders below
MAIL_SEND = "/nodeworx/mail/send"


def _cascade(cascade_to_nodes: bool) -> dict[str, Any]:
    return {"cascade_to_nodes": 1} if cascade_to_nodes else {}


def route(controller: str, action: str, input: Mapping[str, Any] | None = None) -> Call[Any]:
    return Call(controller, action, dict(input or {}))


def get_session() -> Call[str]:
    return Call("/nodeworx/index", "getSession", convert=str)


def is_running(controller: str = MAIL_SEND) -> Call[bool]:
    return Call(controller, "isRunning", convert=bool)


def service_info(controller: str = MAIL_SEND) -> Call[dict[str, Any]]:
    return Call(controller, "listServiceInfo", convert=dict)


def query_update(controller: str = MAIL_SEND) -> Call[dict[str, Any]]:
    return Call(controller, "queryUpdate", convert=dict)


def update(
    settings: Mapping[str, Any], *, cascade_to_nodes: bool = False, controller: str = MAIL_SEND
) -> Call[Any]:
    return Call(controller, "update", {**settings, **_cascade(cascade_to_nodes)})


def start(*, cascade_to_nodes: bool = False, controller: str = MAIL_SEND) -> Call[Any]:
    return Call(controller, "start", _cascade(cascade_to_nodes))


def stop(*, cascade_to_nodes: bool = False, controller: str = MAIL_SEND) -> Call[Any]:
    return Call(controller, "stop", _cascade(cascade_to_nodes))


def restart(*, cascade_to_nodes: bool = False, controller: str = MAIL_SEND) -> Call[Any]:
    return Call(controller, "restart", _cascade(cascade_to_nodes))


def on_node(action: str, node_id: str, controller: str = MAIL_SEND) -> Call[Any]:
    """`isRunningOnNode`, `startOnNode`, `stopOnNode` or `restartOnNode` for one node."""
    return Call(controller, f"{action}OnNode", {"node_id": node_id})
