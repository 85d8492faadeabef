"""Service backends: what `start`, `stop`, `restart`, `isRunning` and `update` act on.

The built-in engine (`builtin.py`) is the only one today; a backend for a real qmail or
Postfix would implement this same protocol.
"""

from __future__ import annotations

from typing import Protocol


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


class ServiceError(Exception):
    """The service could not be brought to the requested state; the message says why."""
