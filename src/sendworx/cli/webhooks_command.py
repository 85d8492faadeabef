"""`sendworx webhooks`: the endpoints this node's events are posted to, for the shell, panel
up or down. It runs through `/nodeworx/mail/webhooks` in this process (as the local
operator), like the API; the engine and `webhookd` see a change within a second.

    webhooks [list] [--json]
    webhooks add URL [--events E,E] [--scope all|account|domain] [--scope-value V]
                     [--description TEXT] [--secret S]
    webhooks edit ID [--url URL] [--events ...] [--enable|--disable] [--rotate-secret
                     [--grace-hours N]] ...
    webhooks delete ID
    webhooks test ID                  post a sample event now, print what the receiver said
    webhooks attempts ID [--failed] [--page N] [--per-page N] [--json]
    webhooks deliveries ID [--dead] [--page N] [--json]
    webhooks redeliver ID [--delivery N]
    webhooks secret ID
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from sendworx.cli.privileges import ask_submission_daemon
from sendworx.shared.instance import Instance
from sendworx.shared.webhooks import SCOPES

WEBHOOKS = "/nodeworx/mail/webhooks"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="webhooks_action")
    listing = actions.add_parser("list", help="the endpoints, their state and queue")
    for where in (parser, listing):
        where.add_argument("--json", action="store_true", help="print JSON")
    adding = actions.add_parser("add", help="add an endpoint (prints its secret)")
    adding.add_argument("url")
    editing = actions.add_parser("edit", help="change an endpoint, or rotate its secret")
    editing.add_argument("id", type=int)
    editing.add_argument("--url")
    for where in (adding, editing):
        where.add_argument("--events", help="comma-separated events, or all (add's default)")
        where.add_argument("--scope", choices=SCOPES)
        where.add_argument("--scope-value", help="the account, or the sender domain")
        where.add_argument("--description")
        where.add_argument("--secret", help="the secret to sign with (default: generated)")
    switch = editing.add_mutually_exclusive_group()
    switch.add_argument("--enable", action="store_true", help="send to it again")
    switch.add_argument("--disable", action="store_true", help="stop sending to it")
    editing.add_argument("--rotate-secret", action="store_true", help="a new secret")
    editing.add_argument("--grace-hours", type=int, default=24, help="old secret valid this long")
    for name, help_text in (
        ("delete", "delete an endpoint and what waits for it"),
        ("test", "post a sample event now"),
        ("secret", "print an endpoint's signing secret"),
    ):
        actions.add_parser(name, help=help_text).add_argument("id", type=int)
    attempts = actions.add_parser("attempts", help="the requests made, newest first")
    attempts.add_argument("id", type=int)
    attempts.add_argument("--failed", action="store_true", help="only those that failed")
    deliveries = actions.add_parser("deliveries", help="events waiting, or given up (--dead)")
    deliveries.add_argument("id", type=int)
    deliveries.add_argument("--dead", action="store_true")
    for where in (attempts, deliveries):
        where.add_argument("--page", type=int, default=1)
        where.add_argument("--per-page", type=int, default=50)
        where.add_argument("--json", action="store_true", help="print JSON")
    redeliver = actions.add_parser("redeliver", help="dead deliveries due again")
    redeliver.add_argument("id", type=int)
    redeliver.add_argument("--delivery", type=int, default=0, help="only this one")


def _call(arguments: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The action and inputs of the command line."""
    action = arguments.webhooks_action or "list"
    if action == "list":
        return "listEndpoints", {}
    if action in ("add", "edit"):
        inputs: dict[str, Any] = {}
        for name in ("url", "scope", "scope_value", "description", "secret", "events"):
            value = getattr(arguments, name, None)
            if value is not None:
                inputs[name] = value
        if action == "edit":
            inputs["id"] = arguments.id
            if arguments.enable or arguments.disable:
                inputs["enabled"] = int(arguments.enable)
            if arguments.rotate_secret:
                inputs.update(rotate_secret=1, grace_hours=arguments.grace_hours)
        return action, inputs
    inputs = {"id": arguments.id}
    if action in ("attempts", "deliveries"):
        inputs.update(page=arguments.page, per_page=arguments.per_page)
        if action == "attempts":
            inputs["failed_only"] = int(arguments.failed)
        else:
            inputs["state"] = "dead" if arguments.dead else "pending"
    if action == "redeliver":
        inputs["delivery"] = arguments.delivery
    names = {
        "delete": "delete",
        "test": "test",
        "secret": "querySecret",
        "attempts": "listAttempts",
        "deliveries": "listDeliveries",
        "redeliver": "redeliver",
    }
    return names[action], inputs


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if at else "-"


def _print(action: str, payload: dict[str, Any], as_json: bool) -> None:
    from sendworx.cli.output import printable

    if as_json:
        print(json.dumps(payload))
        return
    if action == "list":
        for row in payload["endpoints"]:
            scope = row["scope"] + (f" {row['scope_value']}" if row["scope_value"] else "")
            print(
                printable(
                    f"{row['id']} {row['state']} {row['url']} [{scope}] "
                    f"{','.join(row['events'])} pending={row['pending']} dead={row['dead']}"
                    + (f" ({row['disabled_reason']})" if row["disabled_reason"] else "")
                )
            )
        if not payload["endpoints"]:
            print("no webhook endpoint", file=sys.stderr)
    elif action in ("add", "edit"):
        print(printable(f"endpoint {payload['id']}: {payload['url']} ({payload['state']})"))
        if not payload["secret"].endswith("..."):
            print(f"secret: {payload['secret']}")
        if payload.get("warning"):
            print(f"note: {payload['warning']}", file=sys.stderr)
    elif action == "secret":
        print(payload["secret"])
    elif action == "test":
        status = payload.get("status") or "-"
        print(printable(f"{payload['outcome']} {status} {payload.get('reply', '')}"))
    elif action == "attempts":
        for row in payload["attempts"]:
            print(
                printable(
                    f"{_when(row['at'])} {row['event']} {row['event_id']} {row['outcome']} "
                    f"{row['status'] or '-'} {row['milliseconds']}ms {row['reply'][:120]}"
                )
            )
    elif action == "deliveries":
        for row in payload["deliveries"]:
            print(
                printable(
                    f"{row['id']} {row['event']} {row['event_id']} {row['state']} "
                    f"attempts={row['attempts']} due={_when(row['due'])} {row['last_result']}"
                )
            )
    else:
        print(json.dumps(payload))


def run_for_account(arguments: argparse.Namespace, instance: Instance) -> int:
    """A local account's own endpoints, as the submission daemon answers them: `add` makes an
    endpoint for the account's own mail (the kernel names the account)."""
    action = arguments.webhooks_action or "list"
    argv = ["mailwebhooks", action]
    if action == "edit":
        if not arguments.rotate_secret:
            print("sendworx webhooks: an account may rotate its secret (edit ID --rotate-secret);"
                  " to change an endpoint, delete it and add another", file=sys.stderr)  # fmt: skip
            return 77
        argv = ["mailwebhooks", "rotate", str(arguments.id)]
        argv += ["--grace-hours", str(arguments.grace_hours)]
    elif action == "add":
        if arguments.scope not in (None, "account") or arguments.scope_value or arguments.secret:
            print("sendworx webhooks: an account's endpoints are for its own mail, with a"
                  " generated secret", file=sys.stderr)  # fmt: skip
            return 77
        argv.append(arguments.url)
        if arguments.events:
            argv += ["--events", arguments.events]
        if arguments.description:
            argv += ["--description", arguments.description]
    elif action in ("delete", "secret", "attempts", "test"):
        argv.append(str(arguments.id))
        if action == "attempts":
            argv += ["--page", str(arguments.page)]
    elif action != "list":
        print(f"sendworx webhooks: {action} is the operator's", file=sys.stderr)
        return 77
    payload = ask_submission_daemon(instance, argv)
    if isinstance(payload, int):
        return payload
    _print(action, payload, bool(getattr(arguments, "json", False)))
    if action == "test":
        return 0 if payload.get("outcome") == "done" else 1
    return 0


def run(arguments: argparse.Namespace, instance: Instance) -> int:
    from sendworx.cli.api_access import Refused, call_locally
    from sendworx.shared.wire import Call

    name, inputs = _call(arguments)
    call: Call[Any] = Call(WEBHOOKS, name, inputs)
    try:
        payload = call_locally(instance, call, "webhooks")
    except Refused as refused:
        print(refused, file=sys.stderr)
        return 1
    action = arguments.webhooks_action or "list"
    _print(action, payload, bool(getattr(arguments, "json", False)))
    if action == "test":
        return 0 if payload.get("outcome") == "done" else 1
    return 0
