"""The queue's shape as Prometheus metrics, served by the panel, which keeps the queue index
(the engine holds no envelope in memory), on `metrics.listen:metrics.panel_port`:

    sendworx_queue_oldest_pending_seconds{destination}   the age of the oldest message with
                                                         a recipient still to deliver there
    sendworx_queue_pending_recipients{destination}       its recipients still to deliver
    sendworx_queue_oldest_message_seconds                the oldest message in the queue

for the `DESTINATIONS` destinations with the most mail waiting (a destination is a
recipient domain, or the route that takes it), as `querySummary` gives them. A scrape
regroups the index at most every `SUMMARY_SECONDS`.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sendworx.shared.queue_index import QueueIndex

log = logging.getLogger("sendworx.panel")
DESTINATIONS = 20
SUMMARY_SECONDS = 10.0


class QueueCollector(Collector):
    def __init__(self, index: QueueIndex) -> None:
        self._index = index

    def collect(self) -> list[Metric]:
        """In the endpoint's own thread: the index answers from any thread."""
        self._index.ensure_current()
        summary = self._index.summary(set(), DESTINATIONS, SUMMARY_SECONDS)
        oldest = GaugeMetricFamily(
            "sendworx_queue_oldest_pending_seconds",
            "Age of the oldest message with a recipient still to deliver to the destination",
            labels=["destination"],
        )
        pending = GaugeMetricFamily(
            "sendworx_queue_pending_recipients",
            "Recipients still to deliver to the destination",
            labels=["destination"],
        )
        for entry in summary["destinations"]:
            oldest.add_metric([entry["destination"]], float(entry["oldest_age"]))
            pending.add_metric([entry["destination"]], float(entry["recipients"]))
        whole = GaugeMetricFamily(
            "sendworx_queue_oldest_message_seconds",
            "Age of the oldest message in the queue (0: empty)",
            value=float(summary["totals"]["oldest_age"]),
        )
        return [oldest, pending, whole]


def serve_queue_metrics(index: QueueIndex, address: str, port: int) -> None:
    """Start the endpoint (port 0: none); a failure to listen only logs."""
    if port == 0:
        return
    registry = CollectorRegistry()
    registry.register(QueueCollector(index))
    try:
        start_http_server(port, addr=address, registry=registry)
    except OSError as error:
        log.error("queue metrics endpoint %s:%d not started: %s", address, port, error)
