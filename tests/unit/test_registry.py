"""The controller registry: names, permissions, validation, and a second service in a few lines."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sendworx.api.controllers.common import add_common_actions
from sendworx.api.controllers.service_actions import ServiceDescription, service_controller
from sendworx.api.registry import Caller, Registry
from sendworx.cluster.manager import ClusterManager
from sendworx.cluster.store import NodeStore
from sendworx.shared.errors import VALIDATION_HEADER
from sendworx.shared.wire import Call


class InMemoryService:
    """The test's own service: a flag, so the generic actions can be exercised without I/O."""

    def __init__(self) -> None:
        self.running = False

    def is_running(self) -> bool:
        return self.running

    def is_running_now(self) -> bool | None:
        return self.running

    def start(self) -> None:
        self.running = True

    def stop(self) -> None:
        self.running = False

    def restart(self) -> None:
        self.running = True

    def apply_settings(self) -> None:
        pass


SMTP = ServiceDescription(
    service_id="smtp",
    general_name="##LG_SMTP_SERVER##",
    ports=("25", "465", "587"),
    page="/nodeworx/mail/smtp",
    ctrl="/nodeworx/mail/smtp",
    permissions=("EMAIL",),
)


def _registry(service: InMemoryService, tmp_path: Path) -> Registry:
    async def nothing_to_update() -> dict[str, Any]:
        return {}

    cluster = ClusterManager(NodeStore(tmp_path / "nodes.json"), "node1.test", timeout=1.0)
    controller = service_controller(SMTP, service, cluster, "MailSmtp")
    add_common_actions(controller, nothing_to_update)
    registry = Registry()
    registry.register(controller)
    return registry


MASTER = Caller("admin@test", frozenset(), True, "127.0.0.1")
NOBODY = Caller("user@test", frozenset({"SERVICES"}), False, "127.0.0.1")


def _run(registry: Registry, action: str, data: object = None, caller: Caller = MASTER) -> Any:
    return asyncio.run(registry.run(caller, Call("MailSmtp", action, data))).as_struct()


def test_a_second_service_controller_is_a_description_and_a_backend(tmp_path: Path) -> None:
    service = InMemoryService()
    registry = _registry(service, tmp_path)
    assert _run(registry, "listPortNumbers")["payload"] == "25,465,587"
    assert _run(registry, "listPortNumbersArray")["payload"] == ["25", "465", "587"]
    assert _run(registry, "start")["payload"] == "smtp started" and service.running
    assert _run(registry, "listServiceInfo")["payload"]["is_running"] == 1
    assert _run(registry, "isRunningOnNode", {"node_id": "node1.test"})["payload"] is True
    assert _run(registry, "queryUpdate")["payload"] == {}
    assert len(registry.find("/nodeworx/mail/smtp").actions) == 18


def test_permission_is_checked_before_inputs_are_validated(tmp_path: Path) -> None:
    reply = _run(
        _registry(InMemoryService(), tmp_path), "startOnNode", {"node_id": 5.5}, caller=NOBODY
    )
    assert reply["status"] == 403


def test_validation_reply_has_the_interworx_shape(tmp_path: Path) -> None:
    reply = _run(_registry(InMemoryService(), tmp_path), "restart", {"cascade_to_nodes": "yes"})
    assert reply == {
        "status": 11,
        "payload": f"{VALIDATION_HEADER}\ncascade_to_nodes: must be 0 or 1",
        "reply_code": 400,
    }
