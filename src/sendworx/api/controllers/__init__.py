"""The controllers sendworx serves; `build_registry` wires them to one instance.

Each module defines its controller's actions once; transports never add behaviour.
"""

from __future__ import annotations

from sendworx.api.auth import Authenticator, FailureTracker
from sendworx.api.controllers.index import index_controller
from sendworx.api.controllers.mailsend import mail_send_controller
from sendworx.api.registry import Registry
from sendworx.api.users import UserStore
from sendworx.backends import ServiceBackend
from sendworx.backends.builtin import BuiltinBackend
from sendworx.instance import Instance


def build_registry(
    instance: Instance, backend: ServiceBackend, authenticator: Authenticator, node_id: str
) -> Registry:
    registry = Registry()
    registry.register(index_controller(authenticator))
    registry.register(mail_send_controller(instance, backend, node_id))
    return registry


def registry_for(instance: Instance) -> tuple[Registry, Authenticator]:
    """The registry and authenticator the panel serves, built the same for the local CLI."""
    panel = instance.config.panel
    authenticator = Authenticator(
        UserStore(instance.panel_dir / "users.json"),
        session_seconds=panel.session_seconds,
        failures=FailureTracker(
            panel.max_failures, panel.failure_window_seconds, panel.lockout_seconds
        ),
    )
    node_id = panel.node_id or instance.config.helo_name
    registry = build_registry(instance, BuiltinBackend(instance), authenticator, node_id)
    return registry, authenticator
