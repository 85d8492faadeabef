"""The queue manager's memory of the queue: when each message is due, which are held, which
are being delivered (the active set) or wait for Redis before they start, and what an
operator asked of a message in flight. Rebuilt from the queue files at every start: the
files stay the truth, this is what keeps the manager from reading them again and again.

Shared by the manager's parts (`active_set.py`, `outcomes.py`, `actions.py`), all on the
manager's event loop: no locks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sendworx.engine.attempts import RecipientResult
from sendworx.engine.due_index import DueIndex
from sendworx.shared.queue_actions import QueueAction
from sendworx.shared.queue_format import DeliveryState, Envelope


@dataclass(eq=False)
class ActiveMessage:
    """A message being delivered: its jobs report their results here until none is left."""

    message_id: str
    envelope: Envelope
    state: DeliveryState
    results: list[RecipientResult] = field(default_factory=list)
    outstanding: int = 0

    def pending(self) -> list[str]:
        return pending_recipients(self.envelope, self.state)


def pending_recipients(envelope: Envelope, state: DeliveryState) -> list[str]:
    """Recipients neither delivered nor failed in an earlier attempt, each once."""
    finished = set(state.delivered) | {failure.recipient for failure in state.failed}
    return [rcpt for rcpt in dict.fromkeys(envelope.recipients) if rcpt not in finished]


@dataclass(eq=False)
class QueueState:
    due: DueIndex = field(default_factory=DueIndex)
    held: set[str] = field(default_factory=set)  # never attempted until an operator releases
    # Queued messages known to have no state file: never tried, nothing written for them
    # (while the engine runs it alone writes state files): no file to open or remove.
    stateless: set[str] = field(default_factory=set)
    active: dict[str, ActiveMessage] = field(default_factory=dict)
    admitting: set[str] = field(default_factory=set)  # taken from `due`, waiting for Redis
    # Asked while in flight, and by whom: applied once the attempt is recorded.
    after_attempt: dict[str, tuple[QueueAction, str]] = field(default_factory=dict)

    def queued(self) -> int:
        return len(self.due) + len(self.held)

    def busy(self) -> int:
        """Messages taken from the due index and not yet finished."""
        return len(self.active) + len(self.admitting)
