"""/nodeworx/cluster/nodes: the manager's registry of nodes (permission `CLUSTER`).

`add` checks that the node answers with the given key and pins the certificate it presents;
`listNodeStatus` asks every node for its Outbound Mail state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sendworx.api.controllers.common import (
    ANY_STRUCT,
    NODE_ID,
    STRING,
    add_common_actions,
    parse_node_id,
    parse_string,
)
from sendworx.api.registry import Action, Caller, Controller, Input, InputKind
from sendworx.cluster.errors import KeyNotAccepted, RegistrationRefused
from sendworx.cluster.manager import ClusterManager
from sendworx.shared.errors import ValidationFailed

NODE_LIST: dict[str, Any] = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "node_id": STRING,
            "id": {"type": "integer"},
            "url": STRING,
            "fingerprint": STRING,
            "added": {"type": "integer"},
        },
        "required": ["node_id", "id", "url", "fingerprint", "added"],
    },
}
NODE_STATUS: dict[str, Any] = {"type": "array", "items": ANY_STRUCT}


def parse_api_key(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 16_384:
        raise ValueError("must be the node's API key")
    return value


def cluster_nodes_controller(
    cluster: ClusterManager, local_status: Callable[[], Awaitable[dict[str, Any]]]
) -> Controller:
    controller = Controller("/nodeworx/cluster/nodes", "ClusterNodes", ("CLUSTER",))

    async def add(caller: Caller, values: dict[str, Any]) -> str:
        try:
            node = await cluster.register(values["hostname"], values["apikey"])
        except KeyNotAccepted as error:
            raise ValidationFailed({"apikey": str(error)}) from error
        except RegistrationRefused as error:
            raise ValidationFailed({"hostname": str(error)}) from error
        return f"node {node.node_id} added as node {node.number} (certificate {node.fingerprint})"

    async def delete(caller: Caller, values: dict[str, Any]) -> str:
        if cluster.is_local(values["node_id"]):
            raise ValidationFailed({"node_id": "is this server (node 1), which is not registered"})
        removed = await cluster.forget(values["node_id"])
        if removed is None:
            raise ValidationFailed({"node_id": f"no node {values['node_id']!r} is registered"})
        return f"node {removed.node_id} deleted"

    async def list_nodes(caller: Caller, values: dict[str, Any]) -> list[dict[str, object]]:
        return [node.public() for node in cluster.store.nodes()]

    async def node_status(caller: Caller, values: dict[str, Any]) -> list[dict[str, Any]]:
        return await cluster.status(await local_status())

    async def nothing_to_update() -> dict[str, Any]:
        return {}

    for action in (
        Action(
            "add",
            "Registers a node: it must answer with this key; its certificate is pinned.",
            add,
            (
                Input(
                    "hostname",
                    InputKind.STRING,
                    lambda value: parse_string(value, max_length=300),
                    "host, host:port or https:// URL of the node's panel",
                    required=True,
                ),
                Input(
                    "apikey",
                    InputKind.STRING,
                    parse_api_key,
                    "the node's API key (stored readable only by the instance owner)",
                    required=True,
                ),
            ),
            STRING,
        ),
        Action(
            "delete",
            "Forgets a node.",
            delete,
            (
                Input(
                    "node_id",
                    InputKind.STRING,
                    parse_node_id,
                    "the node: its number or its name as registered",
                    required=True,
                    schema=NODE_ID,
                ),
            ),
            STRING,
        ),
        Action("listClusterNodes", "Lists the registered nodes.", list_nodes, returns=NODE_LIST),
        Action(
            "listNodeStatus",
            "This manager and every node: reachable, running, and why not.",
            node_status,
            returns=NODE_STATUS,
        ),
    ):
        controller.add(action)
    add_common_actions(controller, nothing_to_update)
    return controller
