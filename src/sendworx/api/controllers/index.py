"""/nodeworx/index: where API clients trade credentials for a session id (`getSession`)."""

from __future__ import annotations

from typing import Any

from sendworx.api.auth import Authenticator
from sendworx.api.controllers.common import STRING
from sendworx.api.registry import Action, Caller, Controller


def index_controller(authenticator: Authenticator) -> Controller:
    controller = Controller("/nodeworx/index", "Index", ())

    async def get_session(caller: Caller, values: dict[str, Any]) -> str:
        return authenticator.new_session(caller.email)

    controller.add(
        Action(
            "getSession",
            "Returns a session id for the authenticated user.",
            get_session,
            returns=STRING,
        )
    )
    return controller
