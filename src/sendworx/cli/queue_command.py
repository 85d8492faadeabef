"""`sendworx queue`: what an operator reaches for when mail is stuck.

stat, list, show, retry and delete read the queue files directly, so they work while
the engine is stopped; retry and delete also tell a running engine.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from sendworx.shared.instance import Instance
from sendworx.shared.pidfile import running_pid
from sendworx.shared.queue import Queue
from sendworx.shared.queue_format import CorruptMessageError, is_message_id


def when(timestamp: float) -> str:
    """A UTC time for people; 0 or less is "now" (due at once)."""
    if timestamp <= 0:
        return "now"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(seconds: float) -> str:
    seconds = int(max(0, seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _describe(queue: Queue, message_id: str, now: float) -> dict[str, Any] | None:
    try:
        envelope = queue.read_envelope(message_id)
        size = queue.message_size(message_id)
        state = queue.read_state(message_id)
    except FileNotFoundError:
        return None
    except (CorruptMessageError, ValueError) as error:
        return {"id": message_id, "error": str(error)}
    done = set(state.delivered) | {f.recipient for f in state.failed} if state else set()
    return {
        "id": message_id,
        "sender": envelope.sender,
        "kind": envelope.kind.value,
        "birth": envelope.birth,
        "age": _age(now - envelope.birth),
        "size": size,
        "recipients": len(envelope.recipients),
        "pending": [r for r in envelope.recipients if r not in done],
        "attempts": state.attempts if state else 0,
        "next_attempt_at": state.next_attempt_at if state else 0.0,
        "last_errors": state.last_errors if state else {},
        "delivered": state.delivered if state else [],
        "failed": [asdict(failure) for failure in state.failed] if state else [],
    }


def _all_ids(queue: Queue) -> list[str]:
    return sorted(set(queue.message_ids()) | set(queue.pending_new_ids()))


def summary(instance: Instance) -> dict[str, Any]:
    """Messages, deferred, bytes, oldest age, corrupt files and the engine pid, from the files."""
    queue = instance.queue()
    now = time.time()
    ids = _all_ids(queue)
    deferred = sum(1 for _ in queue.state_ids())
    total_bytes = 0
    oldest = None
    for message_id in ids:
        described = _describe(queue, message_id, now)
        if described and "size" in described:
            total_bytes += described["size"]
            oldest = described["birth"] if oldest is None else min(oldest, described["birth"])
    return {
        "messages": len(ids),
        "deferred": deferred,
        "bytes": total_bytes,
        "oldest_age": _age(now - oldest) if oldest else None,
        "corrupt": len(os.listdir(queue.corrupt_dir)),
        "engine_pid": running_pid(instance.engine_pid_file),
    }


def stat(instance: Instance, as_json: bool) -> int:
    counts = summary(instance)
    if as_json:
        print(json.dumps(counts))
    else:
        for key, value in counts.items():
            print(f"{key}: {'-' if value is None else value}")
    return 0


def list_messages(instance: Instance, as_json: bool) -> int:
    queue = instance.queue()
    now = time.time()
    rows = [row for row in (_describe(queue, i, now) for i in _all_ids(queue)) if row]
    if as_json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        if "error" in row:
            print(f"{row['id']}  unreadable: {row['error']}")
            continue
        last = next(iter(row["last_errors"].values()), "")
        print(
            f"{row['id']}  {row['age']:>5}  {row['size']:>8}  <{row['sender']}>  "
            f"{len(row['pending'])}/{row['recipients']} pending  "
            f"next {when(row['next_attempt_at'])}  {last[:80]}"
        )
    return 0


def show(instance: Instance, message_ids: list[str], as_json: bool) -> int:
    queue = instance.queue()
    status = 0
    for message_id in message_ids:
        described = _describe(queue, message_id, time.time()) if is_message_id(message_id) else None
        if described is None:
            print(f"{message_id}: no such message")
            status = 1
            continue
        if as_json:
            print(json.dumps(described))
            continue
        for key, value in described.items():
            if key == "next_attempt_at":
                value = when(value)
            print(f"{key}: {value}")
        print()
    return status


def retry(instance: Instance) -> int:
    """Make everything due now: signal a running engine, or rewrite the waits on disk."""
    pid = running_pid(instance.engine_pid_file)
    if pid is not None:
        os.kill(pid, signal.SIGALRM)
        print(f"asked the engine (pid {pid}) to retry every queued message now")
        return 0
    queue = instance.queue()
    count = 0
    for message_id in queue.state_ids():
        state = queue.read_state(message_id)
        if state is not None and state.next_attempt_at > 0:
            state.next_attempt_at = 0.0
            queue.write_state(message_id, state)
            count += 1
    print(f"engine not running; {count} deferred messages will be tried as soon as it starts")
    return 0


def delete(instance: Instance, message_ids: list[str]) -> int:
    queue = instance.queue()
    status = 0
    for message_id in message_ids:
        if not is_message_id(message_id) or not queue.remove(message_id):
            print(f"{message_id}: no such message")
            status = 1
        else:
            print(f"{message_id}: deleted")
    return status
