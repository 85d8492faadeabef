"""`sendworx status|start|stop|restart|settings`: the same actions as the API, for people.

Each runs through the controller registry as the local master user, so it behaves exactly
like the API; `--json` prints machine-readable output, a terminal gets rich tables.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sendworx.cli import queue_command
from sendworx.cli.api_access import AccessDenied, LocalApi
from sendworx.cli.output import plain_lines, print_json, print_table
from sendworx.client import ApiError, Call, calls
from sendworx.cluster.store import LOCAL_NODE_NUMBER
from sendworx.engine.control import query_engine
from sendworx.shared.instance import Instance

NODES = "/nodeworx/cluster/nodes"
T = TypeVar("T")


def _run(api: LocalApi, call: Call[T]) -> T:
    return api.reply(call).payload_for(call)


def _settings(api: LocalApi) -> dict[str, Any]:
    """What `update` takes, without `cascade_to_nodes` (an option of the call, not a setting)."""
    values: dict[str, Any] = _run(api, calls.query_update())
    values.pop("cascade_to_nodes", None)
    return values


def _with_api(instance: Instance, command: str, body: Callable[[LocalApi], int]) -> int:
    """Runs `body` with the local API (closed afterwards); a refusal is one line, exit 1."""
    try:
        with LocalApi(instance) as api:
            return body(api)
    except (AccessDenied, ApiError, OSError) as error:
        print(f"sendworx {command}: {error}", file=sys.stderr)
        return 1


def status(instance: Instance, as_json: bool, cluster: bool = False) -> int:
    def body(api: LocalApi) -> int:
        running = _run(api, calls.is_running())
        since = None
        if running:
            try:
                since = query_engine(instance, "status", timeout=2.0).get("started_at")
            except (OSError, ValueError):
                since = None
        report: dict[str, Any] = {
            "service": "send",
            "running": running,
            "since": since,
            "queue": queue_command.counts(api, instance),
            "settings": _settings(api),
            "nodes": [instance.node_id]
            + [node["node_id"] for node in _run(api, calls.route(NODES, "listClusterNodes"))],
        }
        if cluster:
            report["cluster"] = _run(api, calls.route(NODES, "listNodeStatus"))
        if as_json:
            print_json(report)
            return 0
        queue = report["queue"]
        print_table(
            "sendworx",
            {
                "service": "send (Outbound Mail): " + ("running" if running else "stopped"),
                "since": queue_command.when(since) if since else "-",
                "queue": f"{queue['messages']} messages, {queue['deferred']} deferred, "
                f"{queue['held']} held, {queue['bytes']} bytes, "
                f"oldest {queue['oldest_age'] or '-'}",
                "settings": report["settings"],
                "nodes": report["nodes"],
            },
        )
        if cluster:
            print_table(
                "cluster",
                {entry["node_id"]: _node_state(entry) for entry in report["cluster"]},
            )
        return 0

    return _with_api(instance, "status", body)


def _node_state(entry: dict[str, Any]) -> str:
    if not entry["reachable"]:
        return f"{entry['role']}: unreachable ({entry['error']})"
    if entry["running"] is None:
        return f"{entry['role']}: unknown ({entry['error']})"
    return f"{entry['role']}: {'running' if entry['running'] else 'stopped'}"


def control(instance: Instance, action: str, as_json: bool) -> int:
    """start, stop or restart; prints what the API answered."""
    builders = {"start": calls.start, "stop": calls.stop, "restart": calls.restart}

    def body(api: LocalApi) -> int:
        message = _run(api, builders[action]())
        if as_json:
            print_json({"action": action, "result": message})
        else:
            print(message)
        return 0

    return _with_api(instance, action, body)


def settings(instance: Instance, as_json: bool) -> int:
    def body(api: LocalApi) -> int:
        values = _settings(api)
        if as_json:
            print_json(values)
        else:
            print_table("Outbound Mail settings", values)
        return 0

    return _with_api(instance, "settings", body)


def parse_assignments(assignments: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` words; `smtp_routes` may repeat (one route each) and `smtp_routes=` clears."""
    changes: dict[str, Any] = {}
    for word in assignments:
        key, equals, value = word.partition("=")
        if not equals or not key:
            raise ValueError(f"expected KEY=VALUE, not {word!r}")
        if key == "smtp_routes":
            routes = changes.setdefault(key, [])
            if value:
                routes.append(value)
        else:
            changes[key] = value
    return changes


def settings_set(instance: Instance, assignments: Sequence[str], as_json: bool) -> int:
    try:
        changes = parse_assignments(assignments)
    except ValueError as error:
        print(f"sendworx settings set: {error}", file=sys.stderr)
        return 2

    def body(api: LocalApi) -> int:
        known = set(_settings(api))
        unknown = sorted(set(changes) - known)
        if unknown:
            print(
                f"sendworx settings set: unknown setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}",
                file=sys.stderr,
            )
            return 2
        message = _run(api, calls.update(changes))
        if as_json:
            print_json({"result": message, "changed": changes})
        else:
            print(message)
            for line in plain_lines(changes):
                print(f"  {line}")
        return 0

    return _with_api(instance, "settings set", body)


def nodes(
    instance: Instance, command: str, argument: str | None, key_file: Path | None, as_json: bool
) -> int:
    """`sendworx node add HOST --key-file F`, `node delete NODE_ID`, `node list`."""

    def body(api: LocalApi) -> int:
        if command == "add" and key_file is not None:
            inputs = {"hostname": argument, "apikey": key_file.read_text()}
            result: Any = _run(api, calls.route(NODES, "add", inputs))
        elif command == "delete":
            result = _run(api, calls.route(NODES, "delete", {"node_id": argument}))
        else:
            result = _run(api, calls.route(NODES, "listClusterNodes"))
        if as_json:
            print_json(result)
        elif isinstance(result, list):
            print(f"{LOCAL_NODE_NUMBER:>3}  {instance.node_id}  (this server)")
            for entry in result:
                print(
                    f"{entry['id']:>3}  {entry['node_id']}  {entry['url']}  {entry['fingerprint']}"
                )
        else:
            print(result)
        return 0

    return _with_api(instance, f"node {command}", body)
