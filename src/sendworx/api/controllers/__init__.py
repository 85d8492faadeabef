"""The controllers sendworx serves; `build_registry` wires them to one instance.

Each module defines its controller's actions once; transports never add behaviour.
"""

from __future__ import annotations

from sendworx.api.auth import Authenticator
from sendworx.api.controllers.index import index_controller
from sendworx.api.controllers.mailsend import mail_send_controller
from sendworx.api.registry import Registry
from sendworx.backends import ServiceBackend
from sendworx.instance import Instance


def build_registry(
    instance: Instance, backend: ServiceBackend, authenticator: Authenticator, node_id: str
) -> Registry:
    registry = Registry()
    registry.register(index_controller(authenticator))
    registry.register(mail_send_controller(instance, backend, node_id))
    return registry
