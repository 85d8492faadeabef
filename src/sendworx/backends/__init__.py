"""Service backends: what `start`, `stop`, `restart`, `isRunning` and `update` act on.

The built-in engine (`builtin.py`) is the only one today; a backend for a real qmail or
Postfix would implement this same protocol.
"""

from __future__ import annotations

from typing import Protocol

from sendworx.shared.holds import Hold, HoldAction
from sendworx.shared.queue_actions import ActionOutcome, QueueAction


class ServiceBackend(Protocol):
    def is_running(self) -> bool: ...

    def is_running_now(self) -> bool | None:
        """The answer if it is known without blocking (a cheap check), else None."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def restart(self) -> None: ...

    def apply_settings(self) -> None:
        """Make a running service use the control files as they are now."""
        ...


class QueueBackend(Protocol):
    """What `/nodeworx/mail/queue` acts on: the service's queue, running or not."""

    def act_on_queue(self, action: QueueAction, ids: list[str], by: str = "") -> ActionOutcome:
        """An operator's action on queued messages, whether the service runs or not."""
        ...

    def act_on_hold(self, action: HoldAction, hold: Hold) -> ActionOutcome:
        """Put a sender on hold, or release or purge a hold, whether the service runs or not;
        the outcome is that of the mail the hold keeps or kept."""
        ...

    def active_ids(self) -> set[str]:
        """The messages being delivered right now (none while the service is stopped)."""
        ...

    def activity(self, minutes: int) -> dict[str, object] | None:
        """Delivery results per minute and the latest attempts; None while stopped."""
        ...

    def pacing(self) -> list[dict[str, object]]:
        """The paces with connections open or a rate cut by their receivers (none while
        stopped)."""
        ...


class MailBackend(ServiceBackend, QueueBackend, Protocol):
    """The Outbound Mail service and its queue, as one backend (the built-in engine's)."""


class ServiceError(Exception):
    """The service could not be brought to the requested state; the message says why."""
