"""`sendworx webhookd`: sends the events the engine queued to their endpoints.

One task per enabled endpoint reads what is due (a batch at a time, oldest due first),
posts each with up to `webhooks.connections_per_endpoint` requests in flight, and hands the
outcomes to a settler that commits them within SETTLE_SECONDS, one transaction for all:

    2xx             done: the delivery goes, its attempt stays on record
    410 Gone        the endpoint is disabled (its deliveries wait, dead at max_age_hours)
    anything else   a failure: due again later (health.py), dead past max_age_hours
    (no answer, a redirect, a refused address, a TLS error: failures too)

Failures in a row pause the endpoint (health.py's breaker); the pause's end is probed by one
request. A datagram on `run/webhooks.sock` (the engine queued events, the API asked for a
test) wakes the tasks; otherwise they look every second.

Order: each endpoint's deliveries are read oldest first and sent over several connections
at once, so a message's events usually arrive in order but may not (a retry, or two requests
in flight); receivers order by the event's `timestamp` and deduplicate by its `id`.

Memory: at most a batch per endpoint is held, and a reply's first `reply_bytes`.
Duplicates: a batch's outcomes are recorded before the next is read, so a kill -9 makes at
most one batch per endpoint (connections_per_endpoint x 16 events) be sent again; and so
nothing needs to mark a batch as taken (one sender per instance: its pid lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

from sendworx.shared import systemd, unix_sockets
from sendworx.shared.config import WebhooksConfig
from sendworx.shared.network_guard import AddressGuard
from sendworx.shared.webhook_signature import HEADER, sign
from sendworx.shared.webhooks import (
    Delivery,
    Endpoint,
    Settlement,
    WebhookStore,
    WebhookStoreError,
)
from sendworx.webhooks.health import Health, retry_delay
from sendworx.webhooks.poster import Answer, Lane, Poster

log = logging.getLogger("sendworx.webhookd")
SETTLE_SECONDS = 0.1
SETTLE_SOON = 200
MAX_UNSETTLED = 100_000  # outcomes kept while the store cannot be written
LOOK_SECONDS = 1.0
PRUNE_SECONDS = 60.0
BATCH_PER_CONNECTION = 16
STORE_RETRY_SECONDS = 5.0


class WebhookSender:
    def __init__(
        self,
        store: WebhookStore,
        config: WebhooksConfig,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.poster = Poster(config, AddressGuard(config.allow_networks))
        self._clock = clock
        self._rng = rng or random.Random()
        self._endpoints: dict[int, Endpoint] = {}
        self._health: dict[int, Health] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._wakes: dict[int, asyncio.Event] = {}
        self._settled: list[Settlement] = []
        self._settled_then: list[Callable[[], None]] = []
        self._settle_now = asyncio.Event()
        self._settling = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._look = asyncio.Event()
        self._version = -1

    def stop(self) -> None:
        self._stopping.set()
        self.wake()

    def wake(self) -> None:
        """Something was queued or changed: endpoints are looked at again, and each task."""
        self._look.set()
        for event in self._wakes.values():
            event.set()

    async def run(
        self, trigger: socket.socket | None = None, ready: Callable[[], None] = lambda: None
    ) -> None:
        loop = asyncio.get_running_loop()
        if trigger is not None:
            loop.add_reader(trigger.fileno(), self._drain, trigger)
        settler = asyncio.create_task(self._settle_loop())
        ready()
        next_prune = 0.0
        try:
            while not self._stopping.is_set():
                await self._refresh()
                now = self._clock()
                if now >= next_prune:
                    next_prune = now + PRUNE_SECONDS
                    max_age = self.config.max_age_hours * 3600
                    died = await self._store(functools.partial(self.store.prune, now, max_age))
                    if died:
                        log.warning("%d webhook deliveries given up (dead-lettered)", died)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._look.wait(), LOOK_SECONDS)
                self._look.clear()
        finally:
            if trigger is not None:
                loop.remove_reader(trigger.fileno())
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            settler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await settler
            await self._settle()  # what was answered is recorded

    def _drain(self, trigger: socket.socket) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while trigger.recv(64):
                pass
        self.wake()

    async def _store(self, work: Callable[[], object]) -> int | None:
        """`work` in a thread: the count it returns (0 if none), or None when the store
        failed (logged, and a pause before going on)."""
        try:
            result = await asyncio.to_thread(work)
        except WebhookStoreError as error:
            log.error("webhooks store: %s", error)
            await asyncio.sleep(STORE_RETRY_SECONDS)
            return None
        return result if isinstance(result, int) else 0

    async def _refresh(self) -> None:
        """Endpoints added, changed, disabled or deleted: a task per enabled one (a task that
        ended on a bug is logged and started again)."""
        for endpoint_id, task in list(self._tasks.items()):
            if task.done():
                if not task.cancelled() and task.exception() is not None:
                    log.error("endpoint %d's task failed", endpoint_id, exc_info=task.exception())
                del self._tasks[endpoint_id]
                self._version = -1
        try:
            version = await asyncio.to_thread(self.store.data_version)
            if version == self._version and self._endpoints:
                return
            endpoints = await asyncio.to_thread(self.store.endpoints)
        except WebhookStoreError as error:
            log.error("webhooks store: %s", error)
            return
        self._version = version
        self._endpoints = {endpoint.id: endpoint for endpoint in endpoints if endpoint.enabled}
        for endpoint_id in list(self._tasks):
            if endpoint_id not in self._endpoints:
                self._tasks.pop(endpoint_id).cancel()
                self._wakes.pop(endpoint_id, None)
                self._health.pop(endpoint_id, None)
        for endpoint in self._endpoints.values():
            if endpoint.id not in self._tasks:
                self._health[endpoint.id] = Health(
                    endpoint.failures, endpoint.paused_until, endpoint.pauses
                )
                self._wakes[endpoint.id] = asyncio.Event()
                self._tasks[endpoint.id] = asyncio.create_task(self._serve(endpoint.id))

    # -- one endpoint --------------------------------------------------------------------------

    async def _serve(self, endpoint_id: int) -> None:
        wake, health = self._wakes[endpoint_id], self._health[endpoint_id]
        connections = self.config.connections_per_endpoint
        lanes = [self.poster.lane() for _ in range(connections)]
        try:
            await self._serve_with(endpoint_id, wake, health, lanes)
        finally:
            for lane in lanes:
                lane.close()

    async def _serve_with(
        self, endpoint_id: int, wake: asyncio.Event, health: Health, lanes: list[Lane]
    ) -> None:
        connections = len(lanes)
        while not self._stopping.is_set():
            now = self._clock()
            if health.gone:  # until the refresh sees it disabled and ends this task
                await self._pause(wake, LOOK_SECONDS)
                continue
            if health.paused(now):
                await self._pause(wake, health.paused_until - now)
                continue
            probing = health.probing(now)
            limit = 1 if probing else connections * BATCH_PER_CONNECTION
            endpoint, batch = await asyncio.to_thread(self._due, endpoint_id, now, limit)
            if endpoint is None or not batch:
                await self._pause(wake, LOOK_SECONDS)
                continue
            await self._send_batch(endpoint, batch, health, lanes)
            # Recorded before the next batch is read: a kill -9 sends again at most one, and
            # what was sent is not read (and sent) again while the store cannot be written.
            await self._settle()
            while self._settled and not self._stopping.is_set():
                await asyncio.sleep(STORE_RETRY_SECONDS)
                await self._settle()

    async def _pause(self, wake: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), max(0.0, min(seconds, LOOK_SECONDS)))
        wake.clear()

    def _due(
        self, endpoint_id: int, now: float, limit: int
    ) -> tuple[Endpoint | None, list[Delivery]]:
        try:
            return self.store.due(endpoint_id, now, limit)
        except WebhookStoreError as error:
            log.error("webhooks store: %s", error)
            time.sleep(STORE_RETRY_SECONDS)
            return None, []

    async def _send_batch(
        self, endpoint: Endpoint, batch: list[Delivery], health: Health, lanes: list[Lane]
    ) -> None:
        waiting = list(reversed(batch))

        async def worker(lane: Lane) -> None:
            while waiting:
                if health.paused(self._clock()) or health.gone:
                    return  # the breaker opened, or a 410: the rest stays due as it was
                delivery = waiting.pop()
                await self._attempt(endpoint, delivery, health, lane)

        await asyncio.gather(*(worker(lane) for lane in lanes[: len(batch)]))

    async def _attempt(
        self, endpoint: Endpoint, delivery: Delivery, health: Health, lane: Lane
    ) -> None:
        now = self._clock()
        headers = {
            HEADER: sign(endpoint.secrets(now), int(now), delivery.body),
            "Sendworx-Event-Id": delivery.event_id,
            "Sendworx-Event": delivery.event,
            "Sendworx-Attempt": str(delivery.attempts + 1),
        }
        answer = await lane.post(endpoint.url, delivery.body, headers)
        self._record(endpoint, delivery, answer, health)

    def _record(
        self, endpoint: Endpoint, delivery: Delivery, answer: Answer, health: Health
    ) -> None:
        now = self._clock()
        status = answer.status
        if 200 <= status < 300:
            outcome, due = "done", 0.0
            if health.succeeded():
                log.info("endpoint %d (%s) answers again", endpoint.id, endpoint.url)
                self._after_settling(self._recovered(endpoint.id, now))
        elif status == 410:
            outcome, due = "disabled", 0.0
            health.gone = True
            log.warning("endpoint %d (%s) answered 410: disabled", endpoint.id, endpoint.url)
        else:
            delay = retry_delay(delivery.attempts + 1, self.config, self._rng)
            due = now + delay
            dead = due > delivery.created + self.config.max_age_hours * 3600
            outcome = "dead" if dead else "retry"
            if health.failed(now, self.config):
                log.warning(
                    "endpoint %d (%s) paused for %.0fs after %d failures in a row: %s",
                    endpoint.id,
                    endpoint.url,
                    health.paused_until - now,
                    health.failures,
                    answer.reply[:200],
                )
                self._after_settling(self._breaker_noted(endpoint.id, health))
        self._settled.append(
            Settlement(delivery, now, status, answer.reply, answer.milliseconds, outcome, due)
        )
        self._settle_now.set()

    def _after_settling(self, work: Callable[[], None]) -> None:
        """`work` in the settler's next transaction's thread, after the attempts."""
        self._settled_then.append(work)
        self._settle_now.set()

    def _recovered(self, endpoint_id: int, now: float) -> Callable[[], None]:
        def work() -> None:
            self.store.hurry(endpoint_id, now)
            self.store.note_breaker(endpoint_id, 0, 0.0, 0)

        return work

    def _breaker_noted(self, endpoint_id: int, health: Health) -> Callable[[], None]:
        failures, paused_until, pauses = health.failures, health.paused_until, health.pauses
        return lambda: self.store.note_breaker(endpoint_id, failures, paused_until, pauses)

    # -- settling ------------------------------------------------------------------------------

    async def _settle_loop(self) -> None:
        """Records outcomes as they come: woken by the first, it gathers SETTLE_SECONDS more
        into the same transaction (unless SETTLE_SOON already wait); idle, it sleeps."""
        while True:
            await self._settle_now.wait()
            self._settle_now.clear()
            if len(self._settled) < SETTLE_SOON:
                await asyncio.sleep(SETTLE_SECONDS)
            await self._settle()

    async def _settle(self) -> None:
        """Records every outcome appended before the call (waiting for a recording already
        under way: when this returns, they are all in the store, or kept for the next)."""
        async with self._settling:
            if not self._settled and not self._settled_then:
                return
            batch, self._settled = self._settled, []
            then, self._settled_then = self._settled_then, []

            def work() -> None:
                if batch:
                    self.store.settle(batch)
                for step in then:
                    step()

            try:
                await asyncio.to_thread(work)
            except WebhookStoreError as error:
                log.error("webhook attempts not recorded yet (%d): %s", len(batch), error)
                if len(self._settled) + len(batch) <= MAX_UNSETTLED:
                    # Recorded with the next batch (each endpoint waits for that before it
                    # reads more). Past the bound they are dropped: still due in the store,
                    # they are sent again: at least once either way.
                    self._settled[:0], self._settled_then[:0] = batch, then


def lower_priority(priority: str) -> None:
    """Below mail, as configured; lowering one's own priority needs no privilege (a system
    call filter may still refuse it: then it runs as it is, and says so)."""
    try:
        if priority == "idle":
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        elif priority == "low":
            os.setpriority(os.PRIO_PROCESS, 0, max(os.getpriority(os.PRIO_PROCESS, 0), 10))
    except OSError as error:
        log.warning("priority %s not taken (%s): sending at normal priority", priority, error)


async def serve(store: WebhookStore, config: WebhooksConfig, trigger_path: Path) -> None:
    """The process's main: the trigger socket, signals, readiness, the sender."""
    loop = asyncio.get_running_loop()
    lower_priority(config.priority)
    sender = WebhookSender(store, config)
    trigger = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    unix_sockets.bind(trigger, trigger_path)
    trigger.setblocking(False)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, sender.stop)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})

    def ready() -> None:
        systemd.notify(READY="1", STATUS="sending webhook events")
        log.info("started")

    try:
        await sender.run(trigger, ready)
    finally:
        trigger.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(trigger_path)
        log.info("stopped")
