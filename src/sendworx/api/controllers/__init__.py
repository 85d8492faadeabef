"""The controllers sendworx serves; `api_for` wires them to one instance.

Each module defines its controller's actions once; transports never add behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sendworx.api.auth import Authenticator, FailureTracker
from sendworx.api.controllers.cluster_nodes import cluster_nodes_controller
from sendworx.api.controllers.dkim import dkim_controller
from sendworx.api.controllers.domainkeys import domainkeys_controller
from sendworx.api.controllers.history import history_controller
from sendworx.api.controllers.index import index_controller
from sendworx.api.controllers.mailsend import mail_send_controller
from sendworx.api.controllers.mta import mta_controller
from sendworx.api.controllers.policy import policy_controller
from sendworx.api.controllers.queue import queue_controller
from sendworx.api.controllers.suppression import suppression_controller
from sendworx.api.controllers.users import users_controller
from sendworx.api.controllers.webhooks import webhooks_controller
from sendworx.api.registry import Caller, Registry
from sendworx.api.users import UserStore
from sendworx.backends import MailBackend
from sendworx.backends.builtin import BuiltinBackend
from sendworx.cluster.manager import ClusterManager
from sendworx.cluster.store import NodeStore
from sendworx.shared.instance import Instance
from sendworx.shared.queue_index import QueueIndex
from sendworx.shared.settings import read_settings

# Who asks when sendworx asks itself (the cluster status view reads the local service).
_SYSTEM = Caller("sendworx", frozenset(), True, "local")


@dataclass(frozen=True)
class InstanceApi:
    """What one instance serves. `cluster` keeps connections to nodes open: whoever runs the
    event loop closes them with `cluster.aclose()` before the loop ends."""

    registry: Registry
    authenticator: Authenticator
    cluster: ClusterManager
    queue_index: QueueIndex  # a long-running panel keeps it current with a QueueWatcher


def build_registry(
    instance: Instance,
    backend: MailBackend,
    authenticator: Authenticator,
    cluster: ClusterManager,
    queue_index: QueueIndex,
) -> Registry:
    mail_send = mail_send_controller(instance, backend, cluster)

    async def local_status() -> dict[str, Any]:
        info = await mail_send.actions["listServiceInfo"].handler(_SYSTEM, {})
        return {"reachable": True, "running": bool(info["is_running"]), "error": ""}

    registry = Registry()
    registry.register(index_controller(authenticator))
    registry.register(mail_send)
    registry.register(mta_controller(instance, backend, cluster))
    registry.register(queue_controller(instance, backend, cluster, queue_index))
    registry.register(policy_controller(instance, backend, cluster))
    registry.register(dkim_controller(instance, cluster))
    registry.register(domainkeys_controller(instance))
    registry.register(history_controller(instance, cluster))
    registry.register(suppression_controller(instance, cluster))
    registry.register(webhooks_controller(instance, cluster))
    registry.register(webhooks_controller(instance, None, siteworx=True))
    registry.register(users_controller(authenticator.users))
    registry.register(cluster_nodes_controller(cluster, local_status))
    return registry


def api_for(instance: Instance) -> InstanceApi:
    """What the panel serves, built the same for the local CLI."""
    panel = instance.config.panel
    authenticator = Authenticator(
        UserStore(instance.users_file),
        session_seconds=panel.session_seconds,
        failures=FailureTracker(
            panel.max_failures, panel.failure_window_seconds, panel.lockout_seconds
        ),
    )
    cluster = ClusterManager(
        NodeStore(instance.nodes_file),
        instance.node_id,
        instance.config.cluster.timeout_seconds,
    )
    queue_index = QueueIndex(
        instance.queue(),
        lambda: read_settings(instance.control_dir).route_table,
        instance.queue_index_path,
    )
    backend = BuiltinBackend(instance)
    registry = build_registry(instance, backend, authenticator, cluster, queue_index)
    return InstanceApi(registry, authenticator, cluster, queue_index)
