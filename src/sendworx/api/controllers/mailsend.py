"""/nodeworx/mail/send: the Outbound Mail service controller.

The generic service actions plus `update`, whose inputs come from the settings table.
"""

from __future__ import annotations

from typing import Any

from sendworx.api.controllers.common import add_common_actions
from sendworx.api.controllers.control_settings import (
    change_settings,
    current_settings,
    setting_input,
)
from sendworx.api.controllers.service_actions import (
    CHANGE_RESULT,
    ServiceDescription,
    cascade_input,
    cascading,
    service_controller,
)
from sendworx.api.registry import Action, Caller, Controller, Input, InputKind
from sendworx.backends import ServiceBackend
from sendworx.cluster.manager import ClusterManager
from sendworx.shared.instance import Instance
from sendworx.shared.settings import (
    INTEGER_SETTINGS,
    ROUTES_INPUT,
    validate_routes,
)

OUTBOUND_MAIL = ServiceDescription(
    service_id="send",
    general_name="##LG_OUTBOUND_MAIL##",
    ports=("##LG_NOT_APPLICABLE##",),
    page="/nodeworx/mail/mta",
    ctrl="/nodeworx/mail/send",
    permissions=("EMAIL",),
)
ROUTES_HELP = (
    "Artificial SMTP routes. If the domain matches the host, qmail-remote will connect to relay, "
    "as if host had relay as its only MX Record. The syntax for this field is "
    "[domain]:[destination server] and [domain] may be blank if you want all mail to be routed "
    "to [destination server]"
)


def mail_send_controller(
    instance: Instance, backend: ServiceBackend, cluster: ClusterManager
) -> Controller:
    controller = service_controller(OUTBOUND_MAIL, backend, cluster, "MailSend")

    async def current() -> dict[str, Any]:
        settings = await current_settings(instance)
        return {**settings.as_inputs(), "cascade_to_nodes": 0}

    async def update(caller: Caller, values: dict[str, Any]) -> str:
        changes = {name: value for name, value in values.items() if name != "cascade_to_nodes"}
        await change_settings(instance, backend, changes)
        return "Outbound mail settings updated"

    inputs = (
        *(setting_input(setting) for setting in INTEGER_SETTINGS),
        Input(
            ROUTES_INPUT,
            InputKind.STRING_STRUCT,
            lambda value: [str(route) for route in validate_routes(value)],
            ROUTES_HELP,
        ),
        cascade_input(),
    )
    controller.add(
        Action(
            "update",
            "Update misc outbound mail server settings.",
            cascading(OUTBOUND_MAIL.ctrl, "update", update, cluster),
            inputs,
            CHANGE_RESULT,
            validates_in_thread=True,  # up to 10,000 routes
        )
    )
    add_common_actions(controller, current)
    return controller
