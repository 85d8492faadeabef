"""The engine's control-socket commands: `sendworx status` and `retry`, SIGHUP's reload by
request, and what the panel and the CLI ask of a running engine (its activity, the messages
in flight, actions on messages, holds on senders). Each checks the shape of the request's
argument and asks the engine through `EngineControl`, the small interface this module owns
(the queue manager provides it; nothing here knows the manager); the socket itself is
`control.py`'s."""

from __future__ import annotations

from typing import Protocol

from sendworx.engine.activity import KEPT_MINUTES
from sendworx.engine.control import Command
from sendworx.shared.holds import OPERATOR_HOLD, Hold, HoldAction, parse_hold_id
from sendworx.shared.queue_actions import ActionOutcome, QueueAction
from sendworx.shared.queue_format import is_message_id


class EngineControl(Protocol):
    """What the control socket may ask of a running engine."""

    def clock(self) -> float: ...

    def status(self) -> dict[str, object]: ...

    def retry_now(self) -> None: ...

    def reload(self) -> None: ...

    def activity_report(self, minutes: int) -> dict[str, object]: ...

    def active_ids(self) -> list[str]: ...

    async def act(self, action: QueueAction, ids: list[str], by: str = "") -> ActionOutcome: ...

    async def hold_by_operator(self, hold: Hold) -> ActionOutcome: ...

    async def end_hold(self, hold_id: str, action: HoldAction) -> ActionOutcome: ...


def _changes(outcome: ActionOutcome) -> dict[str, object]:
    return {"touched": outcome.touched, "in_flight": outcome.in_flight, "missing": outcome.missing}


class ControlCommands:
    def __init__(self, engine: EngineControl) -> None:
        self._engine = engine

    def table(self) -> dict[str, Command]:
        return {
            "status": self.status,
            "retry": self.retry,
            "reload": self.reload,
            "active": self.active,
            "activity": self.activity,
            "queue": self.queue,
            "holds": self.holds,
        }

    async def status(self, argument: object) -> dict[str, object]:
        return self._engine.status()

    async def retry(self, argument: object) -> dict[str, object]:
        self._engine.retry_now()
        return {"ok": True}

    async def reload(self, argument: object) -> dict[str, object]:
        self._engine.reload()
        return {"ok": True}

    async def activity(self, argument: object) -> dict[str, object]:
        """Delivery results per minute and the latest attempts (`activity.py`)."""
        minutes = argument if isinstance(argument, int) and 0 < argument <= KEPT_MINUTES else 60
        return self._engine.activity_report(minutes)

    async def active(self, argument: object) -> dict[str, object]:
        """The ids being delivered now (all of them: at most max_active_messages)."""
        return {"active": self._engine.active_ids()}

    async def queue(self, argument: object) -> dict[str, object]:
        """{"action": "hold", "ids": [...], "by": who} -> {"touched": [...], "in_flight": ...}."""
        if not isinstance(argument, dict) or not isinstance(argument.get("ids"), list):
            return {"error": "expected {action, ids}"}
        try:
            action = QueueAction(str(argument.get("action")))
        except ValueError:
            return {"error": f"unknown action {str(argument.get('action'))[:40]!r}"}
        ids = [str(message_id) for message_id in argument["ids"]]
        by = str(argument.get("by", ""))[:200]
        outcome = await self._engine.act(action, [i for i in ids if is_message_id(i)], by)
        outcome.missing.extend(i for i in ids if not is_message_id(i))
        return _changes(outcome)

    async def holds(self, argument: object) -> dict[str, object]:
        """{"action": "add"|"release"|"purge", "hold": "account:alice", "reason": ...} ->
        {touched, in_flight, missing} of the mail the hold keeps or kept."""
        if not isinstance(argument, dict):
            return {"error": "expected {action, hold}"}
        try:
            action = HoldAction(str(argument.get("action")))
            scope, key = parse_hold_id(str(argument.get("hold")))
        except ValueError as error:
            return {"error": str(error)}
        manager = self._engine
        if action is HoldAction.ADD:
            reason = str(argument.get("reason") or OPERATOR_HOLD)[:200]
            hold = Hold(scope, key, "operator", reason, manager.clock())
            outcome = await manager.hold_by_operator(hold)
        else:
            outcome = await manager.end_hold(f"{scope}:{key}", action)
        return {**_changes(outcome), "missing": []}
