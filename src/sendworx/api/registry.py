"""Controllers and actions, defined once: name, typed inputs with rules, permission, handler.

`Registry.run` answers one call for an authenticated caller: find, authorise, validate, run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sendworx.shared.errors import (
    ApiError,
    AuthenticationFailed,
    PermissionDenied,
    UnknownAction,
    ValidationFailed,
)
from sendworx.shared.wire import NO_INPUT, Call, Reply

log = logging.getLogger("sendworx.api")


class InputKind(StrEnum):
    """An input's type as the InterWorx docs name it."""

    INTEGER = "integer"
    STRING = "string"
    STRUCT = "struct"
    STRING_STRUCT = "struct (string)"  # a list, a struct of strings or a newline-separated text


@dataclass(frozen=True)
class Input:
    """One input of an action; `parse` turns a wire value into a clean one or raises ValueError."""

    name: str
    kind: InputKind
    parse: Callable[[object], object]
    help: str = ""
    default: Callable[[], object] | None = None
    required: bool = False
    schema: Mapping[str, Any] | None = None  # JSON Schema; None derives it from `kind`


@dataclass(frozen=True)
class Caller:
    """Who is asking: the authenticated NodeWorx user and where the request came from.
    `domain`: a SiteWorx-style login (`{domain, apikey}`, `{domain, email, password}`),
    which acts for that domain alone, and only on SiteWorx controllers."""

    email: str
    permissions: frozenset[str]
    master: bool
    peer: str
    domain: str | None = None

    def may(self, permissions: tuple[str, ...]) -> bool:
        return self.master or set(permissions) <= self.permissions


Handler = Callable[[Caller, dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class Action:
    name: str
    description: str
    handler: Handler
    inputs: tuple[Input, ...] = ()
    returns: Mapping[str, Any] | None = None  # JSON Schema of the payload; None means any value
    # Inputs whose checking can take long (10,000 routes) are checked in a worker thread, so
    # one large request never stalls the event loop every other request shares.
    validates_in_thread: bool = False


@dataclass
class Controller:
    path: str  # "/nodeworx/mail/send"
    cli_name: str  # "MailSend"
    permissions: tuple[str, ...]
    siteworx: bool = False  # served to SiteWorx-style logins only, never to NodeWorx ones
    actions: dict[str, Action] = field(default_factory=dict)

    def add(self, action: Action) -> None:
        self.actions[action.name] = action


def normalize_input(raw: object) -> dict[str, Any]:
    """Missing, nil, empty struct and empty array all mean "no input"."""
    if raw in NO_INPUT:
        return {}
    if isinstance(raw, Mapping):
        return {str(key): value for key, value in raw.items()}
    raise ValidationFailed({"input": "must be a struct of named inputs"})


def validate(action: Action, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Parse every declared input; unknown keys (billing modules send `perms`) are ignored."""
    values: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for spec in action.inputs:
        if spec.name in raw:
            try:
                values[spec.name] = spec.parse(raw[spec.name])
            except ValueError as error:
                problems[spec.name] = str(error)
        elif spec.default is not None:
            values[spec.name] = spec.default()
        elif spec.required:
            problems[spec.name] = "is required"
    if problems:
        raise ValidationFailed(problems)
    return values


async def validated(action: Action, raw: object) -> dict[str, Any]:
    """The action's inputs checked, in a worker thread for actions that say so."""
    inputs = normalize_input(raw)
    if action.validates_in_thread:
        return await asyncio.to_thread(validate, action, inputs)
    return validate(action, inputs)


def _check_panel(caller: Caller, controller: Controller) -> None:
    """NodeWorx controllers answer NodeWorx logins, SiteWorx ones SiteWorx logins (401 as
    InterWorx answers a login for the wrong panel)."""
    if caller.domain is not None and not controller.siteworx:
        raise AuthenticationFailed(
            "SiteWorx credentials cannot control server-wide mail settings; use a NodeWorx user"
        )
    if caller.domain is None and controller.siteworx:
        raise AuthenticationFailed(
            f"{controller.path} acts for one domain: authenticate with {{domain, apikey}} or"
            " {domain, email, password}"
        )


class Registry:
    def __init__(self) -> None:
        self._controllers: dict[str, Controller] = {}

    def register(self, controller: Controller) -> None:
        self._controllers[controller.path.lower()] = controller
        self._controllers[controller.cli_name.lower()] = controller

    @property
    def controllers(self) -> list[Controller]:
        return list({id(c): c for c in self._controllers.values()}.values())

    def find(self, name: str) -> Controller:
        """`/nodeworx/mail/send`, `nodeworx/mail/send` and `MailSend` name the same controller."""
        controller = self._controllers.get(name)  # as registered: the common case
        if controller is not None:
            return controller
        key = name.strip().lower()
        controller = self._controllers.get(key) or self._controllers.get("/" + key)
        if controller is None:
            raise UnknownAction(f"unknown controller {name[:200]!r}")
        return controller

    async def run(self, caller: Caller, call: Call[Any]) -> Reply:
        controller_name, action_name = call.controller, call.action
        try:
            controller = self.find(controller_name)
            action = controller.actions.get(action_name)
            if action is None:
                raise UnknownAction(f"unknown action {action_name[:200]!r} on {controller.path}")
            _check_panel(caller, controller)
            if not caller.may(controller.permissions):
                needed = ", ".join(controller.permissions)
                raise PermissionDenied(f"permission denied: {controller.path} requires {needed}")
            values = await validated(action, call.input)
            return Reply.success(await action.handler(caller, values))
        except ApiError as error:
            return Reply.from_error(error)
        except Exception:
            # A bug must still answer in the API's own format, never as an HTTP error page.
            log.exception("action %s on %s failed", action_name[:100], controller_name[:100])
            return Reply.internal_error()
