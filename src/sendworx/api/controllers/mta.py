"""/nodeworx/mail/mta: the bounce and general mail server settings (InterWorx's MailMta).

`updateBounce` and `updateGeneral` write qmail's control files (`bouncefrom`, `bouncehost`,
`doublebounceto`, `doublebouncehost`, `me`, `defaultdomain`), all or nothing, and the engine
and the listener use them at once. Their `queryUpdate*` answer strings, as InterWorx's
published samples do. The inbound-mail actions of this controller answer status 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sendworx.api.controllers.common import ANY_STRUCT, add_common_actions, parse_flag
from sendworx.api.controllers.control_settings import (
    change_settings,
    current_settings,
    setting_input,
)
from sendworx.api.controllers.service_actions import CHANGE_RESULT, cascade_input, cascading
from sendworx.api.registry import Action, Caller, Controller, Handler, Input, InputKind
from sendworx.backends import ServiceBackend
from sendworx.cluster.manager import ClusterManager
from sendworx.shared.errors import ActionFailed
from sendworx.shared.instance import Instance
from sendworx.shared.settings import (
    DOUBLE_BOUNCE_MESSAGES,
    NAMES_BY_INPUT,
    MailNames,
)

MTA = "/nodeworx/mail/mta"
BOUNCE_INPUTS = ("bounce_from", "bounce_host", "double_bounce_to", "double_bounce_host")
GENERAL_INPUTS = ("mailserver_hostname", "default_domain")
NOT_SUPPORTED = {
    "enableLocalDelivery": "local (inbound) delivery is not part of sendworx, an outbound MTA",
    "disableLocalDelivery": "local (inbound) delivery is not part of sendworx, an outbound MTA",
    "updateRrd": "sendworx keeps no RRD graphs; its Prometheus metrics serve that purpose",
}


def bounce_values(names: MailNames) -> dict[str, str]:
    """`queryUpdateBounce`'s payload: every input of updateBounce, as strings."""
    return {
        "bounce_from": names.bounce_from,
        "bounce_host": names.bounce_host,
        DOUBLE_BOUNCE_MESSAGES: "1" if names.double_bounce_to else "0",
        "double_bounce_to": names.double_bounce_to,
        "double_bounce_host": names.double_bounce_host,
        "cascade_to_nodes": "0",
    }


def general_values(names: MailNames) -> dict[str, str]:
    return {
        "mailserver_hostname": names.me,
        "default_domain": names.default_domain,
        "cascade_to_nodes": "0",
    }


def mta_controller(
    instance: Instance, backend: ServiceBackend, cluster: ClusterManager
) -> Controller:
    controller = Controller(MTA, "MailMta", ("EMAIL",))
    config = instance.config

    async def names() -> MailNames:
        settings = await current_settings(instance)
        return settings.mail_names(config.helo_name, config.delivery.double_bounce_to)

    def query(values: Callable[[MailNames], dict[str, str]]) -> Handler:
        async def handler(caller: Caller, inputs: dict[str, Any]) -> dict[str, str]:
            return values(await names())

        return handler

    def update(action: str, done: str) -> Handler:
        async def handler(caller: Caller, values: dict[str, Any]) -> str:
            changes = {name: value for name, value in values.items() if name != "cascade_to_nodes"}
            await change_settings(instance, backend, changes)
            return done

        return cascading(MTA, action, handler, cluster)

    def not_supported(reason: str) -> Handler:
        async def handler(caller: Caller, values: dict[str, Any]) -> None:
            raise ActionFailed(f"not supported by sendworx: {reason}")

        return handler

    flag = Input(
        DOUBLE_BOUNCE_MESSAGES,
        InputKind.INTEGER,
        parse_flag,
        "1: send double bounces to double_bounce_to; 0: drop them (an empty doublebounceto)",
        schema={"enum": [0, 1, "0", "1", False, True]},
    )
    bounce_inputs = (
        *(setting_input(NAMES_BY_INPUT[name]) for name in BOUNCE_INPUTS[:2]),
        flag,
        *(setting_input(NAMES_BY_INPUT[name]) for name in BOUNCE_INPUTS[2:]),
        cascade_input(),
    )
    general_inputs = (*(setting_input(NAMES_BY_INPUT[name]) for name in GENERAL_INPUTS),)
    for action in (
        Action(
            "updateBounce",
            "Update the bounce settings.",
            update("updateBounce", "Bounce settings updated"),
            bounce_inputs,
            CHANGE_RESULT,
        ),
        Action(
            "queryUpdateBounce",
            "Current values of every input of updateBounce.",
            query(bounce_values),
            returns=ANY_STRUCT,
        ),
        Action(
            "updateGeneral",
            "Update the general mail server settings.",
            update("updateGeneral", "Mail server settings updated"),
            (*general_inputs, cascade_input()),
            CHANGE_RESULT,
        ),
        Action(
            "queryUpdateGeneral",
            "Current values of every input of updateGeneral.",
            query(general_values),
            returns=ANY_STRUCT,
        ),
        *(
            Action(name, f"Not supported by sendworx: {reason}.", not_supported(reason))
            for name, reason in NOT_SUPPORTED.items()
        ),
    ):
        controller.add(action)

    async def everything() -> dict[str, Any]:
        current = await names()
        return {**bounce_values(current), **general_values(current)}

    add_common_actions(controller, everything)
    return controller
