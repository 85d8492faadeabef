"""The fifteen actions every InterWorx service controller has (isRunning ... stopOnNode).

A new service controller is a `ServiceDescription` and a backend, not a copy of these.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sendworx.api.controllers.common import (
    BOOLEAN,
    STRING,
    STRING_LIST,
    node_action,
    node_input,
    parse_flag,
)
from sendworx.api.registry import Action, Caller, Controller, Handler, Input, InputKind
from sendworx.backends import ServiceBackend, ServiceError
from sendworx.cluster.manager import ClusterManager
from sendworx.shared.errors import ActionFailed, PartialFailure
from sendworx.shared.wire import Call

NOT_APPLICABLE = "##LG_NOT_APPLICABLE##"
CASCADE_HELP = (
    "Selecting this option causes the action to be replayed on all nodes of the cluster "
    "automatically, as if you had logged in to each node manually"
)


@dataclass(frozen=True)
class ServiceDescription:
    service_id: str  # "send"
    general_name: str  # "##LG_OUTBOUND_MAIL##"
    ports: tuple[str, ...]  # ("##LG_NOT_APPLICABLE##",) or ("25", "465-587")
    page: str
    ctrl: str
    permissions: tuple[str, ...]


def cascade_input() -> Input:
    return Input(
        "cascade_to_nodes",
        InputKind.INTEGER,
        parse_flag,
        CASCADE_HELP,
        default=lambda: 0,
        schema={"enum": [0, 1, False, True]},
    )


# With cascade_to_nodes=1 the payload is {node_id: {status, payload}}, this node first.
CASCADE_RESULTS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": {
        "type": "object",
        "properties": {"status": {"type": "integer"}, "payload": {}},
        "required": ["status", "payload"],
    },
}
CHANGE_RESULT: dict[str, Any] = {"anyOf": [STRING, CASCADE_RESULTS]}
SERVICE_INFO: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": STRING,
        "name": STRING,
        "ports": STRING,
        "page": STRING,
        "ctrl": STRING,
        "is_running": {"type": "integer", "enum": [0, 1]},
    },
    "required": ["id", "name", "ports", "page", "ctrl", "is_running"],
}


def cascading(
    controller_path: str, action_name: str, handler: Handler, cluster: ClusterManager
) -> Handler:
    """Runs the action here; with cascade_to_nodes=1, then replays it on every node. Status 207
    (PartialFailure, the same per-node payload) unless every node succeeded too. A server with
    no nodes answers exactly as without cascade_to_nodes (clients compare the payload)."""

    async def run(caller: Caller, values: dict[str, Any]) -> Any:
        result = await handler(caller, values)
        if not values.get("cascade_to_nodes") or not cluster.store.nodes():
            return result
        replay = {name: value for name, value in values.items() if name != "cascade_to_nodes"}
        results = await cluster.cascade(result, Call(controller_path, action_name, replay))
        if any(outcome["status"] != 0 for outcome in results.values()):
            raise PartialFailure(results)
        return results

    return run


def service_controller(
    description: ServiceDescription,
    backend: ServiceBackend,
    cluster: ClusterManager,
    cli_name: str,
) -> Controller:
    controller = Controller(description.ctrl, cli_name, description.permissions)
    ports_text = ",".join(description.ports) if description.ports else NOT_APPLICABLE

    def constant(value: Any) -> Callable[[Caller, dict[str, Any]], Any]:
        async def handler(caller: Caller, values: dict[str, Any]) -> Any:
            return value

        return handler

    async def running() -> bool:
        known = backend.is_running_now()
        return known if known is not None else await asyncio.to_thread(backend.is_running)

    async def is_running(caller: Caller, values: dict[str, Any]) -> bool:
        return await running()

    async def service_info(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        is_up = await running()
        return {
            "id": description.service_id,
            "name": description.general_name,
            "ports": ports_text,
            "page": description.page,
            "ctrl": description.ctrl,
            "is_running": int(is_up),
        }

    def control(operation: Callable[[], None], done: str) -> Callable[..., Any]:
        async def handler(caller: Caller, values: dict[str, Any]) -> str:
            try:
                await asyncio.to_thread(operation)
            except ServiceError as error:
                raise ActionFailed(str(error)) from error
            return done

        return handler

    def on_node(action_name: str, local: Handler) -> Handler:
        return node_action(cluster, description.ctrl, action_name, local)

    def changing(action_name: str, operation: Callable[[], None], done: str) -> Handler:
        return cascading(description.ctrl, action_name, control(operation, done), cluster)

    service = description.service_id
    start = changing("start", backend.start, f"{service} started")
    stop = changing("stop", backend.stop, f"{service} stopped")
    restart = changing("restart", backend.restart, f"{service} restarted")
    node = (node_input(cluster.local_node),)
    cascade = (cascade_input(),)
    for action in (
        Action(
            "isRunning", "Checks if the service is running or not.", is_running, returns=BOOLEAN
        ),
        Action(
            "isRunningOnNode",
            "Checks if the service is running on a specific node (Clustering only).",
            on_node("isRunning", is_running),
            node,
            BOOLEAN,
        ),
        Action(
            "listGeneralName",
            'Lists the "normal" name - ie "web server" instead of "httpd".',
            constant(description.general_name),
            returns=STRING,
        ),
        Action(
            "listPortNumbers",
            "Lists a string of the port numbers that this service uses, comma-seperated.",
            constant(ports_text),
            returns=STRING,
        ),
        Action(
            "listPortNumbersArray",
            "Lists array of port numbers and ranges that this service uses.",
            constant(list(description.ports) or [NOT_APPLICABLE]),
            returns=STRING_LIST,
        ),
        Action(
            "listRequiredPermissions",
            "Lists an array of permissions required to control the service.",
            constant(list(description.permissions)),
            returns=STRING_LIST,
        ),
        Action(
            "listServiceInfo",
            "Lists the service name, ports, page, and status.",
            service_info,
            returns=SERVICE_INFO,
        ),
        Action(
            "listServiceName",
            'Lists the service name - ie "httpd" instead of "web server".',
            constant(description.service_id),
            returns=STRING,
        ),
        Action(
            "listServicePage",
            "Lists the page that controls the service.",
            constant(description.page),
            returns=STRING,
        ),
        Action("restart", "Restarts the service.", restart, cascade, CHANGE_RESULT),
        Action(
            "restartOnNode",
            "Restarts the service on a specific node (Clustering only).",
            on_node("restart", restart),
            node,
            STRING,
        ),
        Action("start", "Starts the service.", start, cascade, CHANGE_RESULT),
        Action(
            "startOnNode",
            "Starts the service on a specific node (Clustering only).",
            on_node("start", start),
            node,
            STRING,
        ),
        Action("stop", "Stops the service.", stop, cascade, CHANGE_RESULT),
        Action(
            "stopOnNode",
            "Stops the service on a specific node (Clustering only).",
            on_node("stop", stop),
            node,
            STRING,
        ),
    ):
        controller.add(action)
    return controller
