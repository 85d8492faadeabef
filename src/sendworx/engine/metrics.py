"""Prometheus metrics of the engine, on a loopback HTTP port of their own.

A private registry keeps tests with several engines in one interpreter apart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


class EngineMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.queue_messages = Gauge(
            "sendworx_queue_messages", "Messages in the queue", registry=self.registry
        )
        self.held_messages = Gauge(
            "sendworx_held_messages",
            "Messages an operator holds: never attempted until released",
            registry=self.registry,
        )
        self.active_messages = Gauge(
            "sendworx_active_messages", "Messages being delivered now", registry=self.registry
        )
        self.open_connections = Gauge(
            "sendworx_open_connections", "Outbound SMTP connections open", registry=self.registry
        )
        self.connection_limit = Gauge(
            "sendworx_connection_limit", "concurrency_remote in force", registry=self.registry
        )
        self.attempts = Counter(
            "sendworx_delivery_attempts",
            "Delivery attempts per recipient, by result",
            ["result"],
            registry=self.registry,
        )
        self.bounces = Counter(
            "sendworx_bounces", "Bounces generated, by kind", ["kind"], registry=self.registry
        )
        self.dkim_refused = Counter(
            "sendworx_dkim_refused_messages",
            "Messages sent unsigned: their origin may not use their From domain's DKIM key",
            registry=self.registry,
        )
        self.dkim_record_ok = Gauge(
            "sendworx_dkim_record_ok",
            "1 while DNS shows a DKIM key's record as it should be, 0 otherwise (hourly check)",
            ["domain", "selector", "state"],
            registry=self.registry,
        )
        self.history_dropped = Counter(
            "sendworx_history_dropped_events",
            "Delivery history events not written (the store unwritable, or too many waiting)",
            registry=self.registry,
        )
        self.webhook_dropped = Counter(
            "sendworx_webhook_dropped_events",
            "Webhook events not queued (the store unwritable, or too many waiting)",
            registry=self.registry,
        )
        self.bounce_classes = Counter(
            "sendworx_bounce_classes",
            "Deferrals and failures per recipient, by class (shared/bounce_classes.py)",
            ["event", "bounce_class"],
            registry=self.registry,
        )
        self.time_in_queue = Histogram(
            "sendworx_time_in_queue_seconds",
            "From acceptance to delivery, per recipient, by destination group: the pacing rule"
            " its MX host matches (google, microsoft, yahoo, the policy's own), local, or other",
            ["group"],
            buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 86400, 3 * 86400, 7 * 86400),
            registry=self.registry,
        )
        self.suppressed = Counter(
            "sendworx_suppressed_recipients",
            "Recipients not attempted: their address is on the suppression list",
            registry=self.registry,
        )
        self.suppressions_added = Counter(
            "sendworx_suppressions_added",
            "Addresses the engine put on the suppression list, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.suppression_list = Gauge(
            "sendworx_suppression_list_addresses",
            "Addresses on the suppression list in force",
            registry=self.registry,
        )
        self.limited = Counter(
            "sendworx_limited_messages",
            "Times a message waited for a sending limit, by rule",
            ["rule"],
            registry=self.registry,
        )

        self.breaker_trips = Counter(
            "sendworx_breaker_trips",
            "Times a circuit breaker held a sender, by rule",
            ["rule"],
            registry=self.registry,
        )
        self.redis_up = Gauge(
            "sendworx_redis_up",
            "1 while the policy's Redis answers, 0 while limits use local counters "
            "(1 without redis_url)",
            registry=self.registry,
        )
        self.redis_errors = Gauge(
            "sendworx_redis_errors",
            "Requests to the policy's Redis that failed since the engine started",
            registry=self.registry,
        )
        self.holds = Gauge(
            "sendworx_sender_holds", "Senders on hold (sending policy)", registry=self.registry
        )

    def bind(
        self,
        queue_size: Callable[[], float],
        held: Callable[[], float],
        holds: Callable[[], float],
        active: Callable[[], float],
        connections: Callable[[], float],
        limit: Callable[[], float],
        pacing: Callable[[], list[dict[str, object]]],
        redis: Callable[[], tuple[bool, int]] = lambda: (True, 0),
    ) -> None:
        self.queue_messages.set_function(queue_size)
        self.held_messages.set_function(held)
        self.holds.set_function(holds)
        self.redis_up.set_function(lambda: float(redis()[0]))
        self.redis_errors.set_function(lambda: float(redis()[1]))
        self.active_messages.set_function(active)
        self.open_connections.set_function(connections)
        self.connection_limit.set_function(limit)
        self.registry.register(_PacingCollector(pacing))

    def serve(self, address: str, port: int) -> None:
        """Start the endpoint; mail delivery matters more than metrics, so failure only logs."""
        if port == 0:
            return
        try:
            start_http_server(port, addr=address, registry=self.registry)
        except OSError as error:
            log.error("metrics endpoint %s:%d not started: %s", address, port, error)


class _PacingCollector(Collector):
    """Each pace that matters now (connections open, or a rate cut by the receiver): its
    effective rate, its open connections and how often it was told to slow down."""

    def __init__(self, pacing: Callable[[], list[dict[str, object]]]) -> None:
        self._pacing = pacing

    def collect(self) -> list[Metric]:
        rate = GaugeMetricFamily(
            "sendworx_pacing_rate_per_minute",
            "Messages a minute a pace allows now (absent: no cap)",
            labels=["pacing"],
        )
        open_connections = GaugeMetricFamily(
            "sendworx_pacing_connections", "Connections a pace holds open", labels=["pacing"]
        )
        backoffs = GaugeMetricFamily(
            "sendworx_pacing_backoffs",
            "Times the receivers of a pace asked to slow down",
            labels=["pacing"],
        )
        for pace in self._pacing():
            name = str(pace["name"])
            if isinstance(pace["rate_per_minute"], (int, float)):
                rate.add_metric([name], float(pace["rate_per_minute"]))
            open_connections.add_metric([name], float(pace["open"]))  # type: ignore[arg-type]
            backoffs.add_metric([name], float(pace["backoffs"]))  # type: ignore[arg-type]
        return [rate, open_connections, backoffs]
