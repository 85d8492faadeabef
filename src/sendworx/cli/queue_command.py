"""`sendworx queue`: the queue API's actions for the shell, working while the panel is down.

stat, summary, list and show inspect; retry, hold, release, expire, delete and purge act, on
ids or on the same filters as list. Everything runs through `/nodeworx/mail/queue` in this
process (as the local operator), so it behaves exactly like the API, engine running or not.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from sendworx.backends.builtin import BuiltinBackend
from sendworx.cli.api_access import AccessDenied, LocalApi
from sendworx.cli.output import printable
from sendworx.cli.queue_arguments import DONE, FILTERS
from sendworx.shared.errors import ApiError
from sendworx.shared.instance import Instance
from sendworx.shared.pidfile import running_pid
from sendworx.shared.queue_actions import QueueAction
from sendworx.shared.wire import Call

QUEUE = "/nodeworx/mail/queue"


def run(arguments: argparse.Namespace, instance: Instance) -> int:
    command: str = arguments.queue_command
    if command == "purge" and not arguments.yes:
        print("sendworx queue purge: deletes every matching message; add --yes", file=sys.stderr)
        return 2
    try:
        with LocalApi(instance) as api:
            return _COMMANDS[command](api, arguments, instance)
    except (AccessDenied, ApiError, OSError) as error:
        print(f"sendworx queue {command}: {error}", file=sys.stderr)
        return 1


def when(timestamp: float) -> str:
    """A UTC time for people; 0 or less is "now" (due at once)."""
    if timestamp <= 0:
        return "now"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def age(seconds: float) -> str:
    seconds = int(max(0, seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _run(api: LocalApi, action: str, inputs: dict[str, Any]) -> Any:
    call: Call[Any] = Call(QUEUE, action, inputs)
    return api.reply(call).payload_for(call)


def _filters(arguments: argparse.Namespace) -> dict[str, Any]:
    values = {
        name.replace("-", "_"): getattr(arguments, name.replace("-", "_")) for name in FILTERS
    }
    return {name: value for name, value in values.items() if value is not None}


def counts(api: LocalApi, instance: Instance) -> dict[str, Any]:
    """`queue stat`, also `sendworx status`'s queue line."""
    totals = _run(api, "querySummary", {"limit": 1})["totals"]
    corrupt = sum(1 for _ in instance.queue().corrupt_dir.iterdir())
    oldest = totals.get("oldest_age")
    return {
        "messages": totals["messages"],
        "held": totals["held"],
        "deferred": totals["deferred"],
        "active": totals["active"],
        "bytes": totals["bytes"],
        "oldest_age": age(oldest) if totals["messages"] else None,
        "corrupt": corrupt,
        "engine_pid": running_pid(instance.engine_pid_file),
    }


def _print(values: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(values))
        return
    for key, value in values.items():
        print(f"{key}: {'-' if value is None else value}")


def _stat(api: LocalApi, arguments: argparse.Namespace, instance: Instance) -> int:
    _print(counts(api, instance), arguments.json)
    return 0


def _summary(api: LocalApi, arguments: argparse.Namespace, instance: Instance) -> int:
    summary = _run(api, "querySummary", {})
    if arguments.json:
        print(json.dumps(summary))
        return 0
    totals = summary["totals"]
    print(
        f"{totals['messages']} messages, {totals['bytes']} bytes: {totals['new']} new, "
        f"{totals['active']} active, {totals['deferred']} deferred, {totals['held']} held"
    )
    print("\nwaiting for                          msgs  rcpts  oldest  most frequent last reply")
    for row in summary["destinations"]:
        print(
            f"{printable(row['destination'])[:36]:<36} {row['messages']:>5} {row['recipients']:>6} "
            f"{age(row['oldest_age']):>7}  {printable(row['top_reply'])[:60]}"
        )
    print("\nsender domain                        msgs   bytes  oldest")
    for row in summary["sender_domains"]:
        print(
            f"{printable(row['domain'])[:36] or '<>':<36} {row['messages']:>5} {row['bytes']:>7} "
            f"{age(row['oldest_age']):>7}"
        )
    if summary.get("pacing"):
        print("\npacing                               open  rate now  configured  slowed down")
        for pace in summary["pacing"]:
            print(
                f"{printable(str(pace['name']))[:36]:<36} {pace['open']:>4}  "
                f"{_rate(pace['rate_per_minute']):>8}  "
                f"{_rate(pace['configured_rate_per_minute']):>10}  {pace['backoffs']:>11}"
            )
    return 0


def _rate(per_minute: float | None) -> str:
    return "-" if per_minute is None else f"{per_minute:.0f}/min"


def _rows(api: LocalApi, filters: dict[str, Any]) -> Iterator[dict[str, Any]]:
    cursor = ""
    while True:
        page = _run(api, "listMessages", {**filters, "page_size": 1000, "cursor": cursor})
        yield from page["messages"]
        cursor = page["next_cursor"]
        if not cursor:
            return


def _as_listed(row: dict[str, Any]) -> dict[str, Any]:
    """A row as `queue list --json` has always shown it."""
    recipients = row["recipients"]
    return {
        "id": row["id"],
        "sender": row["sender"],
        "kind": row["kind"],
        "state": row["state"],
        "birth": row["birth"],
        "age": age(row["age"]),
        "size": row["size"],
        "recipients": len(recipients),
        "pending": [r["address"] for r in recipients if r["state"] == "pending"],
        "attempts": row["attempts"],
        "next_attempt_at": row["next_attempt_at"],
        "last_errors": {
            r["address"]: r["last_reply"]
            for r in recipients
            if r["state"] == "pending" and r["last_reply"]
        },
        "delivered": [r["address"] for r in recipients if r["state"] == "delivered"],
        "failed": [
            {"recipient": r["address"], "reply": r["last_reply"], "remote": r["last_host"]}
            for r in recipients
            if r["state"] == "failed"
        ],
    }


def _list(api: LocalApi, arguments: argparse.Namespace, instance: Instance) -> int:
    rows = [_as_listed(row) for row in _rows(api, _filters(arguments))]
    if arguments.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        last = next(iter(row["last_errors"].values()), "")
        print(
            f"{row['id']}  {row['age']:>5}  {row['size']:>8}  <{printable(row['sender'])}>  "
            f"{len(row['pending'])}/{row['recipients']} pending  {row['state']:<8}  "
            f"next {when(row['next_attempt_at'])}  {printable(last)[:80]}"
        )
    return 0


def _show(api: LocalApi, arguments: argparse.Namespace, instance: Instance) -> int:
    status = 0
    for message_id in arguments.ids:
        call: Call[Any] = Call(QUEUE, "queryMessage", {"id": message_id, "body": arguments.body})
        reply = api.reply(call)
        if reply.status != 0:
            print(f"{printable(message_id)}: no such message")
            status = 1
            continue
        shown = reply.payload
        if arguments.json:
            print(json.dumps(shown))
            continue
        for key, value in shown.items():
            if key == "next_attempt_at":
                value = when(value)
            print(f"{key}: {printable(str(value))}")
        print()
    return status


def _act(api: LocalApi, arguments: argparse.Namespace, instance: Instance) -> int:
    command: str = arguments.queue_command
    ids: list[str] = getattr(arguments, "ids", [])
    filters = _filters(arguments)
    if command == "retry" and not ids and not filters:
        return _retry_everything(instance)
    inputs: dict[str, Any] = {**filters, "ids": ids} if ids else dict(filters)
    if command == "purge":
        inputs["confirm"] = 1
    outcome = _run(api, command, inputs)
    if arguments.json:
        print(json.dumps(outcome))
    else:
        print(f"{outcome['touched']} {DONE[command]}")
        if outcome["in_flight"]:
            print(
                f"being delivered, {command} when that attempt ends: "
                + " ".join(outcome["in_flight"])
            )
        if outcome["missing"]:
            print("not queued: " + " ".join(printable(i) for i in outcome["missing"]))
    return 1 if outcome["missing"] else 0


def _retry_everything(instance: Instance) -> int:
    """SIGALRM to a running engine; otherwise every wait is cleared on disk."""
    pid = running_pid(instance.engine_pid_file)
    if pid is not None:
        os.kill(pid, signal.SIGALRM)
        print(f"asked the engine (pid {pid}) to retry every queued message now")
        return 0
    ids = sorted(instance.queue().state_ids())
    outcome = BuiltinBackend(instance).act_on_queue(QueueAction.RETRY, ids)
    print(
        f"engine not running; {len(outcome.touched)} deferred messages will be tried as soon "
        "as it starts"
    )
    return 0


_COMMANDS: dict[str, Callable[[LocalApi, argparse.Namespace, Instance], int]] = {
    "stat": _stat,
    "summary": _summary,
    "list": _list,
    "show": _show,
    **{name: _act for name in DONE},
}
