"""An endpoint's test: a sample event (`test`) queued for it, `webhookd` woken, and what the
receiver answered once it has. The operator's API and a site's account (through the
submission daemon) ask it the same way.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from sendworx.shared.pidfile import running_pid
from sendworx.shared.unix_sockets import send_datagram
from sendworx.shared.webhook_events import sample_event
from sendworx.shared.webhooks import TEST_EVENT, Endpoint, NewDelivery, WebhookStore

LOOK_SECONDS = 0.1


def queue_test(store: WebhookStore, endpoint: Endpoint, node: str) -> str:
    """A sample event queued for `endpoint`, due now; its event id."""
    now = time.time()
    event = sample_event(node, endpoint.id, now)
    store.enqueue([NewDelivery(endpoint.id, event.event_id, TEST_EVENT, "", event.to_json(), now)])
    return event.event_id


async def probe(
    store: WebhookStore,
    endpoint: Endpoint,
    node: str,
    *,
    trigger: Path,
    sender_pid_file: Path,
    wait_seconds: float,
) -> dict[str, Any]:
    """The test's attempt (`sent` 1, the attempt's fields), or `sent` 0 and `outcome`
    pending: at once while `webhookd` is not running, else after `wait_seconds` without an
    answer. The event stays queued either way. WebhookStoreError when the store fails."""
    event_id = await asyncio.to_thread(queue_test, store, endpoint, node)
    pending = {"event_id": event_id, "sent": 0, "outcome": "pending"}
    if running_pid(sender_pid_file) is None:
        return {**pending, "reply": "webhookd is not running: the test event waits for it"}
    await asyncio.to_thread(send_datagram, b"t", trigger)
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        attempts, _ = await asyncio.to_thread(store.attempts, endpoint.id, 1, 1, event_id=event_id)
        if attempts:
            return {"event_id": event_id, "sent": 1, **attempts[0].to_document()}
        await asyncio.sleep(LOOK_SECONDS)
    why = "disabled" if not endpoint.enabled else "not answered yet, or webhookd is not running"
    return {**pending, "reply": why}
