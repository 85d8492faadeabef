"""What an operator does to queued messages (retry, hold, release, expire, delete), as changes
to the queue files. The engine applies them to messages it is not delivering at that moment;
while it is stopped, whoever holds the queue lock applies them directly. Same files, same code.

- retry: due now.
- hold: never attempted until released; time held does not count towards the lifetime.
- release: due now, its held time added to its lifetime.
- expire: every recipient still to do is bounced at the next run.
- delete: gone, without a bounce; fsynced before the answer, so it cannot come back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from sendworx.shared.queue import Queue


class QueueAction(StrEnum):
    RETRY = "retry"
    HOLD = "hold"
    RELEASE = "release"
    EXPIRE = "expire"
    DELETE = "delete"


@dataclass
class ActionOutcome:
    """Which messages an action changed, which it will change after the attempt under way,
    and which were not in the queue."""

    touched: list[str] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def merge(self, other: ActionOutcome) -> None:
        self.touched.extend(other.touched)
        self.in_flight.extend(other.in_flight)
        self.missing.extend(other.missing)

    def as_payload(self) -> dict[str, object]:
        return {
            "touched": len(self.touched),
            "in_flight": self.in_flight,
            "missing": self.missing,
        }


def apply_to_files(
    queue: Queue, action: QueueAction, ids: list[str], now: float, held_by: str = ""
) -> ActionOutcome:
    """Change the files of `ids` for `action`; `touched` lists the messages whose files changed
    (retry: every message found, since a fresh one is due already). A hold names the sender
    hold it is for in `held_by` (`shared/holds.py`)."""
    if action is QueueAction.DELETE:
        removed, missing = queue.delete(ids)
        return ActionOutcome(touched=removed, missing=missing)
    if action is QueueAction.HOLD:
        changed, missing = queue.edit_states(ids, lambda state: state.on_hold(now, held_by))
    elif action is QueueAction.RELEASE:
        changed, missing = queue.edit_states(ids, lambda state: state.released(now))
    elif action is QueueAction.EXPIRE:
        changed, missing = queue.edit_states(ids, lambda state: state.to_expire())
    else:
        _, missing = queue.edit_states(ids, lambda state: state.due_now())
        gone = set(missing)
        changed = [message_id for message_id in ids if message_id not in gone]
    return ActionOutcome(touched=changed, missing=missing)
