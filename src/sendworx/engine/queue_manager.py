"""The `sendworx send` process: the queue manager. It claims what injectors queued, takes due
messages into the active set, and runs until stopped; what happens to a message is decided
by its parts, like Postfix's qmgr:

    queue_state.py   what the manager knows of the queue, in memory (rebuilt from the files)
    active_set.py    admitting a message, splitting it into jobs, finishing its attempt
    delivery_plan.py which recipients go where, in which transactions (pure)
    outcomes.py      the one writer of a message's fate: records, then announces (events.py)
    actions.py       an operator's or the policy's actions on messages; sender holds
    control_commands.py  what the control socket answers, through `EngineControl`

How a message moves (the files are the truth; everything in memory is rebuilt from them):

    tmp/ --injector renames--> new/ --claim--> mess/ (+ state/ once tried) --> gone
                                                 `--unreadable--> corrupt/ (kept for people)

- An injector writes `tmp/<id>`, fsyncs it, renames it into `new/` and fsyncs `new/`; only
  then does it acknowledge the message. It then sends a wake-up datagram to the trigger socket.
- A wake-up is only a hint: the manager claims `new/` when one arrives and also every
  `rescan_seconds`, so a lost datagram delays mail, never loses it.
- Claimed messages live in `mess/`; the due index holds each one's next-attempt time. Up to
  `max_active_messages` are active at once (`active_set.py`).
- When every job of a message has reported, the attempt is recorded (`outcomes.py`): the
  message is removed (after its bounce is queued) or its `state/` file is rewritten. Only
  then is the attempt announced and logged, so a logged delivery is never repeated; a
  `kill -9` between a remote's 250 and the record repeats the delivery (at-least-once).
- An operator's action (retry, hold, release, expire, delete) on a message not being delivered
  changes its files at once; on one being delivered, it waits for the end of that attempt.
  Held messages are never attempted. While the engine runs it holds `run/queue.lock`, so
  nothing else changes `mess/` or `state/` under it.
- The manager never talks to the outside world itself: sessions do, in `delivery.py`.

Signals: SIGTERM/SIGINT stop gracefully, SIGHUP rereads the control files, SIGALRM retries
everything now. The control socket (`control.py`) answers `status`, `retry`, `reload`,
`active`, `activity`, `queue` and `holds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

from sendworx.engine.actions import QueueActions
from sendworx.engine.active_set import ActiveSet
from sendworx.engine.activity import ActivityLog
from sendworx.engine.control import serve_admission, serve_control
from sendworx.engine.control_commands import ControlCommands
from sendworx.engine.delivery import DeliveryPool
from sendworx.engine.dkim_upkeep import DkimUpkeep
from sendworx.engine.due_index import DueIndex
from sendworx.engine.history_recorder import HistoryRecorder
from sendworx.engine.metrics import EngineMetrics
from sendworx.engine.outcomes import (
    Outcomes,
    activity_listener,
    delivery_log_listener,
    metrics_listener,
    queue_time_listener,
)
from sendworx.engine.queue_state import QueueState
from sendworx.engine.resolver import DestinationResolver
from sendworx.engine.sending_policy import SendingPolicy
from sendworx.engine.smtp_client import opportunistic_tls_context
from sendworx.engine.suppression import Suppressions
from sendworx.engine.webhook_outbox import WebhookOutbox
from sendworx.shared import unix_sockets
from sendworx.shared.bounce_classes import Classifier
from sendworx.shared.config import ConfigError
from sendworx.shared.file_lock import FileLock
from sendworx.shared.holds import Hold, HoldAction
from sendworx.shared.instance import Instance
from sendworx.shared.local_domains import local_domains
from sendworx.shared.queue_actions import ActionOutcome, QueueAction
from sendworx.shared.settings import MailNames, read_settings
from sendworx.shared.suppression import ListChooser

log = logging.getLogger("sendworx.engine")
GROUPS_REMEMBERED = 10_000  # destination groups of (domain, MX host) kept for the metric


class QueueManager:
    def __init__(self, instance: Instance, clock: Callable[[], float] = time.time) -> None:
        """`clock` gives the wall-clock time that births, retries and lifetimes are measured
        in; tests pass one they can move."""
        self.instance = instance
        self.config = instance.config
        self.clock = clock
        self.queue = instance.queue()
        self.settings = read_settings(instance.control_dir)
        self.names = self._names()
        self.locals = self._local_domains()
        self.state = QueueState()
        self.metrics = EngineMetrics()
        self.policy = SendingPolicy(instance, lambda: self.names, self.metrics, clock)
        delivery = self.config.delivery
        self.pool = DeliveryPool(
            resolver=DestinationResolver(self.config.resolver, delivery.remote_port),
            limit=self.settings.concurrency_remote,
            helo_name=lambda: self.names.me,
            config=delivery,
            settings=lambda: self.settings,
            policy=lambda: self.policy.rules,
            tls_context=opportunistic_tls_context() if delivery.starttls else None,
        )
        self.metrics.bind(
            queue_size=self.state.queued,
            held=lambda: len(self.state.held),
            holds=lambda: len(self.policy.holds),
            active=lambda: len(self.state.active),
            connections=lambda: self.pool.open_connections,
            limit=lambda: self.pool.limit,
            pacing=self.pool.status,
            redis=self._redis_health,
        )
        self.started_at = self.clock()
        self.activity = ActivityLog()
        self.outcomes = Outcomes(
            self.queue,
            self.state,
            clock=clock,
            names=lambda: self.names,
            queue_lifetime=lambda: self.settings.queue_lifetime,
            wake=self.wake,
        )
        self.outcomes.listeners += [
            metrics_listener(self.metrics),
            queue_time_listener(self.metrics, self._destination_group),
            activity_listener(self.activity),
            delivery_log_listener(),
            self.policy.on_fate,
        ]
        history = self.config.history
        classifier = Classifier.load(instance.bounce_rules_path)
        self.history: HistoryRecorder | None = None
        if history.enabled:
            self.history = HistoryRecorder(
                instance.history_path,
                retention_seconds=history.retention_days * 86400.0,
                flush_seconds=history.flush_seconds,
                dropped=self.metrics.history_dropped,
                classifier=classifier,
                classes=self.metrics.bounce_classes,
                json_lines=instance.home / history.json_lines_file
                if history.json_lines_file
                else None,
            )
            self.outcomes.listeners.append(self.history.listen)
        self.webhooks: WebhookOutbox | None = None
        if self.config.webhooks.enabled:
            self.webhooks = WebhookOutbox(
                instance.webhooks_path,
                node=lambda: instance.node_id,
                wake=instance.webhooks_trigger_socket,
                flush_seconds=self.config.webhooks.flush_seconds,
                classifier=classifier,
                dropped=self.metrics.webhook_dropped,
                clock=clock,
            )
            self.outcomes.listeners.append(self.webhooks.listen)
        self.suppressions: Suppressions | None = None
        if self.config.suppression.enabled:
            self.suppressions = Suppressions(
                ListChooser(instance.suppression_path, lambda: self.policy.rules.redis_url),
                self.config.suppression,
                classifier,
                self.metrics,
                clock,
            )
            self.outcomes.listeners.append(self.suppressions.listen)
        self.actions = QueueActions(
            self.queue,
            self.state,
            self.policy,
            self.outcomes,
            clock=clock,
            names=lambda: self.names,
            claim_new=self._claim_new,
            check_new=self._look_at_new,
        )
        self.active_set = ActiveSet(
            instance,
            self.state,
            policy=self.policy,
            suppressions=self.suppressions,
            pool=self.pool,
            outcomes=self.outcomes,
            actions=self.actions,
            config=delivery,
            settings=lambda: self.settings,
            local_domains=lambda: self.locals,
            clock=clock,
            spawn=self._spawn,
            wake=self.wake,
            stopping=lambda: self._stopping,
        )
        self._groups: dict[tuple[str, str | None], str] = {}
        self._queue_lock = FileLock(instance.queue_lock_file)
        self._recorders: asyncio.TaskGroup | None = None
        self._stopping = False
        self._check_new = True
        self._wake: asyncio.Event | None = None

    @property
    def due(self) -> DueIndex:
        return self.state.due

    @property
    def held(self) -> set[str]:
        """Messages never attempted until an operator releases them."""
        return self.state.held

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        # Offline queue tools finish what they are doing first, and start none while we run.
        await asyncio.to_thread(self._queue_lock.acquire)
        self._load_queue()
        if self.suppressions is not None:
            await asyncio.to_thread(self.suppressions.load)
        if self.history is not None:
            self.history.start()
        if self.webhooks is not None:
            await asyncio.to_thread(self.webhooks.start)
        trigger = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        unix_sockets.bind(trigger, self.instance.queue_trigger_socket)
        trigger.setblocking(False)
        loop.add_reader(trigger.fileno(), self._drain_trigger, trigger)
        admission = await serve_admission(
            self.instance.admission_socket, self.policy.admit_injection
        )
        control = await serve_control(
            self.instance.engine_control_socket, ControlCommands(self).table()
        )
        for signum, handler in (
            (signal.SIGTERM, self.stop),
            (signal.SIGINT, self.stop),
            (signal.SIGHUP, self.reload),
            (signal.SIGALRM, self.retry_now),
        ):
            loop.add_signal_handler(signum, handler)
        # Blocked since before the pid lock was taken (cli/processes.py): a reload asked for
        # while we started is handled now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
        self.metrics.serve(self.config.metrics.listen, self.config.metrics.port)
        log.info(
            "started: %d queued, concurrency_remote=%d, helo=%s",
            len(self.due),
            self.settings.concurrency_remote,
            self.names.me,
        )
        try:
            # Recording an attempt is a task of its own (its file I/O runs in a thread); the
            # group owns them and outlives the pool, whose last sessions still report.
            async with asyncio.TaskGroup() as recorders:
                self._recorders = recorders
                self._share(self.policy.rules.redis_url)
                upkeep = [asyncio.create_task(self._look_after_dkim())]
                if self.suppressions is not None:
                    upkeep.append(asyncio.create_task(self.suppressions.run()))
                try:
                    async with self.pool.running():
                        await self._schedule_loop()
                finally:
                    for task in upkeep:
                        task.cancel()
            if self.pool.cut:
                grace = self.config.delivery.shutdown_grace_seconds
                log.warning(
                    "sessions still busy after %.0fs were cut; their mail stays queued", grace
                )
        finally:
            self._recorders = None
            if self.history is not None:
                await asyncio.to_thread(self.history.close)  # what is pending is written
            if self.webhooks is not None:
                await asyncio.to_thread(self.webhooks.close)  # what is pending is queued
            if self.suppressions is not None:
                await self.suppressions.flush()
            if self.policy.shared is not None:
                await self.policy.shared.close()
            loop.remove_reader(trigger.fileno())
            trigger.close()
            control.close()
            admission.close()
            self._queue_lock.release()
        log.info("stopped: %d messages remain queued", self.state.queued())

    async def _look_after_dkim(self) -> None:
        """The DKIM keys' upkeep (engine/dkim_upkeep.py): a minute after the start (sooner
        when `dkim.check_seconds` is shorter), then every `dkim.check_seconds`."""
        every = self.config.dkim.check_seconds
        upkeep = DkimUpkeep(
            self.instance.dkim_keys(),
            self.config.resolver,
            self.metrics,
            queue_lifetime=lambda: float(self.settings.queue_lifetime),
            rotate_days=self.config.dkim.rotate_days,
            stopping=lambda: self._stopping,
        )
        await asyncio.sleep(min(every, 60.0))
        while not self._stopping:
            try:
                await asyncio.to_thread(upkeep.run, time.time())
            except Exception:
                log.exception("DKIM upkeep failed; it runs again in %.0fs", every)
            await asyncio.sleep(every)

    def stop(self) -> None:
        if not self._stopping:
            log.info("stopping: no new deliveries, finishing those in flight")
        self._stopping = True
        self.wake()

    def reload(self) -> None:
        self._groups.clear()  # the pacing rules may change
        self.settings = read_settings(self.instance.control_dir)
        self.names = self._names()
        self.locals = self._local_domains()
        self.pool.set_limit(self.settings.concurrency_remote)
        try:
            self.policy.reload()
        except ConfigError as error:
            log.error("policy not reloaded, the one in force stays: %s", error)
        else:
            self.pool.reconfigure()
            if self._recorders is not None:
                self._share(self.policy.rules.redis_url)
        values = " ".join(
            f"{name}={value}" for name, value in self.settings.integer_values().items()
        )
        log.info("settings reloaded: %s routes=%d", values, len(self.settings.smtp_routes))
        self.wake()

    def _share(self, url: str | None) -> None:
        """Count limits and keep holds in Redis at `url` from now on (None: alone)."""
        if url == self.policy.shared_url:
            return  # a reload that did not change it: the connection stays
        replaced = self.policy.share(url)
        if replaced is not None:
            self._spawn(replaced.close())
        if url is not None:
            self._spawn(self.actions.adopt_shared_holds())

    def _redis_health(self) -> tuple[bool, int]:
        shared = self.policy.shared
        return (shared.up, shared.errors) if shared is not None else (True, 0)

    def _destination_group(self, recipient: str, relay: str) -> str:
        """The pacing rule the recipient's MX host (or domain) matches, `local`, or `other`:
        few enough groups for a metric's label. Remembered per domain and host (every
        delivery asks; a reload forgets)."""
        if relay == "local":
            return "local"
        key = (recipient.rpartition("@")[2].lower(), relay.partition("[")[0] or None)
        group = self._groups.get(key)
        if group is None:
            if len(self._groups) >= GROUPS_REMEMBERED:
                self._groups.clear()
            rule = self.policy.rules.pacing_for(*key)
            group = self._groups[key] = rule.name if rule is not None else "other"
        return group

    def _local_domains(self) -> frozenset[str]:
        names = self.names
        return local_domains(self.instance.control_dir, self.config.helo_name, names.me)

    def _names(self) -> MailNames:
        delivery = self.config.delivery
        return self.settings.mail_names(self.config.helo_name, delivery.double_bounce_to)

    def retry_now(self) -> None:
        count = self.due.make_all_due(self.clock())
        log.info("retrying %d waiting messages now", count)
        self.wake()

    def wake(self) -> None:
        """Look at the queue, the due index and the clock again now."""
        if self._wake is not None:
            self._wake.set()

    # -- queue intake --------------------------------------------------------------------

    def _load_queue(self) -> None:
        now = self.clock()
        self.queue.claim_new()  # before the orphan check: a state's message may be in new/
        stale = self.queue.remove_stale_temporaries(now)
        stale += self.queue.remove_unfinished_state_writes()  # we hold the queue lock
        message_ids = self.queue.message_ids()
        with_state, orphans = self.queue.remove_orphan_states(message_ids)
        if stale or orphans:
            log.info("cleaned %d stale temp files and %d orphan state files", stale, orphans)
        # Of each state file only when the message is due and whether it is held: a million
        # queued messages are read in seconds (the rest is read when one is attempted).
        for message_id in message_ids:
            schedule = None
            if message_id in with_state:
                try:
                    schedule = self.queue.read_schedule(message_id)
                except (ValueError, TypeError, KeyError) as error:
                    log.warning("state of %s unreadable (%s); retrying it now", message_id, error)
            if schedule is None:
                self.state.stateless.add(message_id)
                self.due.schedule(message_id, now)
            elif schedule[1]:
                self.held.add(message_id)
            else:
                self.due.schedule(message_id, schedule[0])

    def _drain_trigger(self, trigger: socket.socket) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while True:
                trigger.recv(64)
        self._look_at_new()

    def _look_at_new(self) -> None:
        """Claim `new/` at the next turn of the loop."""
        self._check_new = True
        self.wake()

    def _claim_new(self) -> None:
        now = self.clock()
        for message_id in self.queue.claim_new():
            self.state.stateless.add(message_id)  # while we run, only we write state files
            self.due.schedule(message_id, now)

    async def _schedule_loop(self) -> None:
        assert self._wake is not None
        rescan_every = self.config.delivery.rescan_seconds
        next_rescan = time.monotonic() + rescan_every
        max_active = self.config.delivery.max_active_messages
        while not self._stopping:
            self._wake.clear()
            self.activity.queue_size(self.clock(), self.state.queued())
            if self._check_new or time.monotonic() >= next_rescan:
                # The wake-up datagram is only a hint; the periodic look catches lost ones.
                self._check_new = False
                next_rescan = time.monotonic() + rescan_every
                self._claim_new()
                self.policy.forget_spent()
                if self.policy.shared is not None:
                    self._spawn(self.actions.adopt_shared_holds())
            for message_id in self.due.take_due(self.clock(), max_active - self.state.busy()):
                self.active_set.start(message_id)
            timeout = next_rescan - time.monotonic()
            next_due = self.due.next_due_at()
            if next_due is not None and self.state.busy() < max_active:
                timeout = min(timeout, next_due - self.clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(timeout, 0.0)):
                    await self._wake.wait()

    def _spawn(self, work: Coroutine[Any, Any, object]) -> None:
        """Run `work` as a task of the manager's own; its failure (disk trouble, a bug) is
        logged and leaves the files as they were, never stopping the manager."""
        if self._recorders is None:  # only while the manager runs
            raise RuntimeError("the queue manager is not running")

        async def guarded() -> None:
            try:
                await work
            except Exception:
                log.exception("a queue change failed; the files stay as they were")

        self._recorders.create_task(guarded())

    # -- the control socket (`control_commands.EngineControl`) ---------------------------

    def status(self) -> dict[str, object]:
        return {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "stopping": self._stopping,
            "queued": self.state.queued(),
            "held": len(self.state.held),
            "active": len(self.state.active),
            "open_connections": self.pool.open_connections,
            "concurrency_remote": self.pool.limit,
            "pacing": self.pool.status(),
            "settings": self.settings.as_inputs(),
        }

    def activity_report(self, minutes: int) -> dict[str, object]:
        return {"started_at": self.started_at, **self.activity.report(self.clock(), minutes)}

    def active_ids(self) -> list[str]:
        """The ids being delivered now (at most max_active_messages)."""
        return sorted(self.state.active)

    async def act(self, action: QueueAction, ids: list[str], by: str = "") -> ActionOutcome:
        return await self.actions.act(action, ids, by)

    async def hold_by_operator(self, hold: Hold) -> ActionOutcome:
        return await self.actions.hold_by_operator(hold)

    async def end_hold(self, hold_id: str, action: HoldAction) -> ActionOutcome:
        return await self.actions.end_hold(hold_id, action)
