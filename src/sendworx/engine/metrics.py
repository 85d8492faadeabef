"""Prometheus metrics of the engine, on a loopback HTTP port of their own.

A private registry keeps tests with several engines in one interpreter apart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

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

    def bind(
        self,
        queue_size: Callable[[], float],
        held: Callable[[], float],
        active: Callable[[], float],
        connections: Callable[[], float],
        limit: Callable[[], float],
    ) -> None:
        self.queue_messages.set_function(queue_size)
        self.held_messages.set_function(held)
        self.active_messages.set_function(active)
        self.open_connections.set_function(connections)
        self.connection_limit.set_function(limit)

    def serve(self, address: str, port: int) -> None:
        """Start the endpoint; mail delivery matters more than metrics, so failure only logs."""
        if port == 0:
            return
        try:
            start_http_server(port, addr=address, registry=self.registry)
        except OSError as error:
            log.error("metrics endpoint %s:%d not started: %s", address, port, error)
