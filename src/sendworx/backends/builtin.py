"""The built-in backend: supervises `sendworx send` through its pid lock and control socket.

Every state change holds `run/control.lock` (flock), so concurrent API calls and the CLI
never start two engines or interleave a stop with a start.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

from sendworx.backends import ServiceError
from sendworx.backends.exit_watch import ExitWatch
from sendworx.engine.control import query_engine
from sendworx.shared.instance import Instance
from sendworx.shared.pidfile import running_pid

START_TIMEOUT_SECONDS = 20.0
# How long a successful "does it answer" probe is trusted; death shows at once via the lock.
LIVENESS_TTL_SECONDS = 1.0


class BuiltinBackend:
    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        # Engines this process started; polled so that stopped ones leave no zombies.
        self._children: list[subprocess.Popen[bytes]] = []
        self._answered: tuple[int, float] | None = None  # (pid, monotonic time it answered)
        self._pid_path = str(instance.engine_pid_file)
        self._exit_watch = ExitWatch()

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        self.instance.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.instance.run_dir / "control.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _engine_pid(self) -> int | None:
        """The pid holding the engine's lock, or None."""
        return running_pid(self._pid_path)

    def _holds_lock(self) -> bool:
        return self._engine_pid() is not None

    def _reap_children(self) -> None:
        self._children = [child for child in self._children if child.poll() is None]

    def _answering_pid(self) -> int | None:
        """The engine's pid if it holds its lock and answers on its control socket."""
        pid = self._engine_pid()
        if pid is None:
            return None
        try:
            status = query_engine(self.instance, "status", timeout=2)
        except (OSError, ValueError):
            return None
        return pid if status.get("pid") == pid and not status.get("stopping") else None

    def is_running(self) -> bool:
        known = self.is_running_now()
        if known is not None:
            return known
        pid = self._answering_pid()
        if pid is not None:
            self._answered = (pid, time.monotonic())
        return pid is not None

    def is_running_now(self) -> bool | None:
        """True while the engine that answered a probe less than a second ago still runs
        (its exit, kill -9 included, shows at once); False at once when nobody holds the
        engine's lock; None: probe needed."""
        answered = self._answered
        fresh = answered is not None and time.monotonic() - answered[1] < LIVENESS_TTL_SECONDS
        if answered is not None and fresh and self._exit_watch.alive(answered[0]):
            # The common case, on every monitoring poll: one poll of a pidfd, no file work.
            return True
        pid = self._engine_pid()
        if pid is None:
            return False
        if answered is not None and fresh and answered[0] == pid:
            return True  # where pidfds are missing: the lock check above told us
        return None

    def start(self) -> None:
        with self._exclusive():
            self._start_locked()

    def stop(self) -> None:
        with self._exclusive():
            self._stop_locked()

    def restart(self) -> None:
        with self._exclusive():
            self._stop_locked()
            self._start_locked()

    def apply_settings(self) -> None:
        """SIGHUP to the engine and the submission listener, whichever run: both reread the
        control files (the listener only the names: `me`)."""
        for pid in (self._engine_pid(), running_pid(self.instance.smtpd_pid_file)):
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGHUP)

    def _start_locked(self) -> None:
        self._reap_children()
        if self._answering_pid() is not None:
            return
        if self._holds_lock():
            # Holding the lock but not answering (still starting or stopping): wait it out.
            self._wait(lambda: self._answering_pid() is not None or not self._holds_lock())
            if self._answering_pid() is not None:
                return
        self.instance.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.instance.log_dir / "send.stderr").open("ab") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "sendworx", "--home", str(self.instance.home), "send"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # outlives the panel, as a daemon should
            )
        self._children.append(process)
        if not self._wait(
            lambda: self._answering_pid() == process.pid or process.poll() is not None
        ):
            raise ServiceError("the Outbound Mail engine did not come up in time")
        if process.poll() is not None:
            raise ServiceError(
                f"the Outbound Mail engine exited with status {process.returncode}; "
                f"see {self.instance.log_dir / 'send.log'}"
            )

    def _stop_locked(self) -> None:
        self._answered = None
        pid = self._engine_pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        grace = self.instance.config.delivery.shutdown_grace_seconds + 10
        if not self._wait(lambda: not self._holds_lock(), timeout=grace):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not self._wait(lambda: not self._holds_lock(), timeout=10):
                raise ServiceError(f"the Outbound Mail engine (pid {pid}) would not stop")
        self._reap_children()

    @staticmethod
    def _wait(done: Callable[[], bool], timeout: float = START_TIMEOUT_SECONDS) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return True
            time.sleep(0.05)
        return bool(done())
