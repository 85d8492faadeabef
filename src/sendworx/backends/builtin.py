"""The built-in backend: supervises `sendworx send` through its pid lock and control socket.

Every state change holds `run/control.lock` (flock), so concurrent API calls and the CLI
never start two engines or interleave a stop with a start. The last start or stop is
remembered (`engine.wanted`): the service's supervisor starts the engine at boot only if it
was not stopped, and starts it again if it dies while wanted.

Installed, the engine must be the sendworx service's own child (in its cgroup, shown by
`systemctl status sendworx`, stopped with it): the panel and the command line do not start
or stop it themselves but ask the supervisor (`cli/supervisor.py`) on `run/service.sock`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

from sendworx.backends import ServiceError
from sendworx.backends.exit_watch import ExitWatch
from sendworx.engine.control import ask_socket, query_engine
from sendworx.shared.durable import atomic_write
from sendworx.shared.file_lock import FileLock
from sendworx.shared.holds import Hold, HoldAction, change_hold_in_files
from sendworx.shared.instance import Instance
from sendworx.shared.pidfile import running_pid
from sendworx.shared.queue_actions import ActionOutcome, QueueAction, apply_to_files

START_TIMEOUT_SECONDS = 20.0
# An engine that holds its pid lock is alive and reading the queue (about 15 s for a million
# messages here): waited for that long before "did not come up".
LOADING_TIMEOUT_SECONDS = 300.0
# Ids per request to a running engine, and how long one such request may take (10,000
# state files fsynced take about 2 s here).
QUEUE_CHUNK = 2000
QUEUE_COMMAND_TIMEOUT_SECONDS = 120.0
# How long a successful "does it answer" probe is trusted; death shows at once via the lock.
LIVENESS_TTL_SECONDS = 1.0


class BuiltinBackend:
    def __init__(self, instance: Instance, *, supervisor: bool = False) -> None:
        """`supervisor`: this is the service's supervisor, which starts the engine itself."""
        self.instance = instance
        self._delegate = instance.system and not supervisor
        # Engines this process started; polled so that stopped ones leave no zombies.
        self._children: list[subprocess.Popen[bytes]] = []
        self._answered: tuple[int, float] | None = None  # (pid, monotonic time it answered)
        self._pid_path = str(instance.engine_pid_file)
        self._exit_watch = ExitWatch()

    def _exclusive(self) -> FileLock:
        """Held by whoever starts or stops the engine (the panel, the CLI)."""
        return FileLock(self.instance.run_dir / "control.lock")

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
        if self._delegate:
            self._ask_service("start")
            return
        with self._exclusive():
            self._remember(wanted=True)
            self._start_locked()

    def stop(self) -> None:
        if self._delegate:
            self._ask_service("stop")
            return
        with self._exclusive():
            self._remember(wanted=False)
            self._stop_locked()

    def restart(self) -> None:
        if self._delegate:
            self._ask_service("restart")
            return
        with self._exclusive():
            self._remember(wanted=True)
            self._stop_locked()
            self._start_locked()

    def stop_for_shutdown(self) -> None:
        """The service is stopping: the engine too, but the last word stays what it was (it
        starts again with the service)."""
        with self._exclusive():
            self._stop_locked()

    def wanted(self) -> bool:
        """Whether the last word on the engine was start (or there was none)."""
        try:
            return self.instance.engine_wanted_file.read_text().strip() != "stopped"
        except FileNotFoundError:
            return True

    def _remember(self, *, wanted: bool) -> None:
        text = b"started\n" if wanted else b"stopped\n"
        atomic_write(self.instance.engine_wanted_file, text, mode=0o600)

    def _ask_service(self, command: str) -> None:
        timeout = self.instance.config.delivery.shutdown_grace_seconds + 30
        try:
            answer = ask_socket(self.instance.service_socket, command, timeout=timeout)
        except (OSError, ValueError) as error:
            raise ServiceError(
                "the sendworx service does not answer; start it with `systemctl start sendworx`"
                f" ({error})"
            ) from error
        if answer.get("error"):
            raise ServiceError(str(answer["error"]))

    def apply_settings(self) -> None:
        """SIGHUP to the engine and the submission listener, whichever run: both reread the
        control files (the listener only the names: `me`)."""
        for pid in (self._engine_pid(), running_pid(self.instance.smtpd_pid_file)):
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGHUP)

    def act_on_queue(self, action: QueueAction, ids: list[str], by: str = "") -> ActionOutcome:
        return self._on_the_queue(
            lambda: apply_to_files(self.instance.queue(), action, ids, time.time()),
            lambda: self._act_through_engine(action, ids, by),
        )

    def act_on_hold(self, action: HoldAction, hold: Hold) -> ActionOutcome:
        def offline() -> ActionOutcome:
            queue, path = self.instance.queue(), self.instance.holds_path
            return change_hold_in_files(queue, path, hold, action, time.time())

        def through_engine() -> ActionOutcome:
            argument = {"action": action.value, "hold": hold.hold_id, "reason": hold.reason}
            answer = self._ask_engine("holds", argument)
            return ActionOutcome(answer["touched"], answer["in_flight"], answer["missing"])

        return self._on_the_queue(offline, through_engine)

    def _on_the_queue(
        self, offline: Callable[[], ActionOutcome], through_engine: Callable[[], ActionOutcome]
    ) -> ActionOutcome:
        """Through the engine while it runs (it owns the queue then); directly on the files,
        holding the queue lock so that it cannot start meanwhile, while it does not."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            queue_lock = FileLock(self.instance.queue_lock_file)
            if queue_lock.acquire(wait=False):
                try:
                    return offline()
                finally:
                    queue_lock.release()
            try:
                return through_engine()
            except (OSError, ValueError) as error:
                # Holding the lock but not answering: starting (loading the queue) or stopping.
                if time.monotonic() > deadline:
                    raise ServiceError(
                        f"the Outbound Mail engine holds the queue but does not answer: {error}"
                    ) from error
                time.sleep(0.1)

    def _ask_engine(self, command: str, argument: object) -> dict[str, Any]:
        answer = query_engine(
            self.instance, command, timeout=QUEUE_COMMAND_TIMEOUT_SECONDS, argument=argument
        )
        if "error" in answer:
            raise ServiceError(f"the engine refused: {answer['error']}")
        return answer

    def _act_through_engine(self, action: QueueAction, ids: list[str], by: str) -> ActionOutcome:
        outcome = ActionOutcome()
        for start in range(0, len(ids), QUEUE_CHUNK):
            chunk = ids[start : start + QUEUE_CHUNK]
            argument = {"action": action.value, "ids": chunk, "by": by}
            answer = self._ask_engine("queue", argument)
            outcome.merge(ActionOutcome(answer["touched"], answer["in_flight"], answer["missing"]))
        return outcome

    def active_ids(self) -> set[str]:
        if self._engine_pid() is None:
            return set()
        try:
            return set(query_engine(self.instance, "active", timeout=5).get("active", []))
        except (OSError, ValueError):
            return set()

    def activity(self, minutes: int) -> dict[str, object] | None:
        if self._engine_pid() is None:
            return None
        try:
            return query_engine(self.instance, "activity", timeout=5, argument=minutes)
        except (OSError, ValueError):
            return None

    def pacing(self) -> list[dict[str, object]]:
        if self._engine_pid() is None:
            return []
        try:
            paces = query_engine(self.instance, "status", timeout=2).get("pacing", [])
        except (OSError, ValueError):
            return []
        return list(paces) if isinstance(paces, list) else []

    def _start_locked(self) -> None:
        self._reap_children()
        if self._answering_pid() is not None:
            return
        if self._holds_lock():
            # Holding the lock but not answering (still starting or stopping): wait it out.
            self._wait(lambda: self._answering_pid() is not None or not self._holds_lock())
            if self._answering_pid() is not None:
                return
        log_dir = self.instance.log_dir
        with contextlib.ExitStack() as closing:
            stderr = None  # installed: the service's stderr, the journal
            if log_dir is not None:
                log_dir.mkdir(parents=True, exist_ok=True)
                stderr = closing.enter_context((log_dir / "send.stderr").open("ab"))
            process = subprocess.Popen(
                self.instance.command("send"),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # outlives the panel, as a daemon should
            )
        self._children.append(process)

        def up_or_gone() -> bool:
            return self._answering_pid() == process.pid or process.poll() is not None

        if not self._wait(up_or_gone) and not (
            # Not answering yet, but alive with its lock: reading a large queue.
            self._holds_lock() and self._wait(up_or_gone, LOADING_TIMEOUT_SECONDS)
        ):
            raise ServiceError("the Outbound Mail engine did not come up in time")
        if process.poll() is not None:
            where = self.instance.log_file("send") or "journalctl -u sendworx"
            raise ServiceError(
                f"the Outbound Mail engine exited with status {process.returncode}; see {where}"
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
