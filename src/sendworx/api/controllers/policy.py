"""/nodeworx/mail/policy: the sending policy (limits, circuit breakers, pacing) and the senders
it holds. sendworx's own controller (InterWorx has none; permission EMAIL), in InterWorx's
conventions: `update`/`queryUpdate` for the policy file (status 11 naming every problem, the
file written atomically and the engine told to reread it), `listHolds`, and `addHold`,
`releaseHold` and `purgeHold` acting on a sender's mail whether the engine runs or not. Every
action exists `OnNode`; the changes can cascade to every node.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sendworx.api.controllers.common import (
    ANY_STRUCT,
    add_common_actions,
    on_node,
    parse_string,
)
from sendworx.api.controllers.service_actions import (
    CHANGE_RESULT,
    cascade_input,
    cascading,
)
from sendworx.api.registry import Action, Caller, Controller, Handler, Input, InputKind
from sendworx.backends import MailBackend, ServiceError
from sendworx.cluster.manager import ClusterManager
from sendworx.shared.config import ConfigError, parse_toml_model
from sendworx.shared.durable import atomic_write
from sendworx.shared.errors import ActionFailed
from sendworx.shared.holds import OPERATOR_HOLD, Hold, HoldAction, parse_hold_id, read_holds
from sendworx.shared.instance import Instance
from sendworx.shared.policy import Policy

POLICY = "/nodeworx/mail/policy"
HOLD_LIST: dict[str, Any] = {"type": "array", "items": ANY_STRUCT}
MAX_POLICY_BYTES = 4 * 1024 * 1024  # 10,000 rules with their match lists fit with room


def parse_policy(value: object) -> str:
    """The policy file's new text, validated as the engine will read it."""
    if not isinstance(value, str):
        raise ValueError("must be the policy file's text (TOML)")
    raw = value.encode()
    if len(raw) > MAX_POLICY_BYTES:
        raise ValueError(f"at most {MAX_POLICY_BYTES} bytes")
    try:
        parse_toml_model(raw, Policy, "policy")
    except ConfigError as error:
        raise ValueError(str(error).removeprefix("policy: ")) from error
    return value


def parse_hold(value: object) -> str:
    scope, key = parse_hold_id(parse_string(value, max_length=330))
    return f"{scope}:{key}"


def hold_payload(hold: Hold) -> dict[str, Any]:
    return {
        "hold": hold.hold_id,
        "scope": hold.scope,
        "key": hold.key,
        "rule": hold.rule,
        "reason": hold.reason,
        "since": hold.since,
    }


def policy_controller(
    instance: Instance, backend: MailBackend, cluster: ClusterManager
) -> Controller:
    controller = Controller(POLICY, "MailPolicy", ("EMAIL",))
    hold_input = Input(
        "hold",
        InputKind.STRING,
        parse_hold,
        "who: account:NAME (a Unix account), domain:NAME or sender:ADDRESS",
        required=True,
    )

    def policy_text() -> str:
        try:
            return instance.policy_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""

    async def query_policy(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            text = policy_text()
            policy = parse_toml_model(text.encode(), Policy, str(instance.policy_path))
            return {
                "policy": text,
                "limits": len(policy.limit),
                "breakers": len(policy.breaker),
                "pacing": [rule.model_dump() for rule in policy.pacing_rules()],
                "redis_url": policy.redis_url or "",
                "holds": [hold_payload(hold) for hold in read_holds(instance.holds_path).values()],
                "paces": backend.pacing(),
            }

        try:
            return await asyncio.to_thread(read)
        except ConfigError as error:
            raise ActionFailed(str(error)) from error

    async def query_update() -> dict[str, str]:
        return {"policy": await asyncio.to_thread(policy_text), "cascade_to_nodes": "0"}

    async def update(caller: Caller, values: dict[str, Any]) -> str:
        def write() -> None:
            atomic_write(instance.policy_path, values["policy"].encode(), mode=0o600)
            backend.apply_settings()

        await asyncio.to_thread(write)
        return "Sending policy updated"

    async def list_holds(caller: Caller, values: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            holds = await asyncio.to_thread(read_holds, instance.holds_path)
        except ConfigError as error:
            raise ActionFailed(str(error)) from error
        return [hold_payload(hold) for hold in holds.values()]

    def on_hold(action: HoldAction) -> Handler:
        async def handler(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
            scope, key = parse_hold_id(values["hold"])
            reason = values.get("reason") or OPERATOR_HOLD
            hold = Hold(scope, key, "operator", reason, time.time())
            try:
                outcome = await asyncio.to_thread(backend.act_on_hold, action, hold)
            except (ServiceError, ConfigError) as error:
                raise ActionFailed(str(error)) from error
            return {"hold": hold.hold_id, **outcome.as_payload()}

        return handler

    reason_input = Input(
        "reason", InputKind.STRING, parse_string, "why (shown with the hold)", default=str
    )
    actions: list[tuple[str, str, Handler, tuple[Input, ...], Any, bool]] = [
        ("queryPolicy", "The policy file, its rules, the holds and the paces in force.",
         query_policy, (), ANY_STRUCT, False),
        ("update", "Replace the policy file (TOML); every problem is named, nothing is "
         "written on any.", update, (Input("policy", InputKind.STRING, parse_policy,
         "the whole policy file (TOML), as docs/operations.md describes", required=True),),
         CHANGE_RESULT, True),
        ("listHolds", "The senders on hold.", list_holds, (), HOLD_LIST, False),
        ("addHold", "Put a sender on hold with its queued mail.", on_hold(HoldAction.ADD),
         (hold_input, reason_input), ANY_STRUCT, False),
        ("releaseHold", "End a hold: the mail it held is tried now.",
         on_hold(HoldAction.RELEASE), (hold_input,), ANY_STRUCT, False),
        ("purgeHold", "End a hold and delete the mail it held, without a bounce.",
         on_hold(HoldAction.PURGE), (hold_input,), ANY_STRUCT, False),
    ]  # fmt: skip
    for name, description, handler, inputs, returns, heavy in actions:
        cascades = name in ("update", "addHold", "releaseHold", "purgeHold")
        controller.add(
            Action(
                name,
                description,
                cascading(POLICY, name, handler, cluster) if cascades else handler,
                (*inputs, cascade_input()) if cascades else inputs,
                returns,
                validates_in_thread=heavy,
            )
        )
        plain = Action(name, description, handler, inputs, returns, validates_in_thread=heavy)
        controller.add(on_node(cluster, POLICY, plain))
    add_common_actions(controller, query_update)
    return controller
