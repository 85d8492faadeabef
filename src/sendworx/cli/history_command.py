"""`sendworx history`: what happened to the mail, for the shell, panel up or down. It runs
through `/nodeworx/mail/history` in this process (as the local operator), like the API.

    history [--sender S] [--recipient R] [--account A] [--message-id M] [--event E]
            [--since SECONDS-AGO] [--page N] [--per-page N] [--all-nodes] [--json]
    history QUEUE-ID [--json]       one message's whole story, oldest first

Run by a local account other than the instance's owner (a site's user on a shared host),
it asks the submission daemon instead, which answers with that account's own mail only
(inject/account_history.py): the account is the kernel's word, as for sendmail.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from sendworx.cli.privileges import ask_submission_daemon
from sendworx.shared.bounce_classes import CLASSES
from sendworx.shared.history import EVENTS
from sendworx.shared.instance import Instance

HISTORY = "/nodeworx/mail/history"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("queue_id", nargs="?", help="one message's story (its queue id)")
    parser.add_argument("--sender", help="an address, or a domain")
    parser.add_argument("--recipient", help="an address, or a domain")
    parser.add_argument("--account", help="the Unix account that sent it")
    parser.add_argument("--message-id", help="its Message-ID header")
    parser.add_argument("--event", choices=EVENTS)
    parser.add_argument("--class", dest="bounce_class", choices=CLASSES, help="why it failed")
    parser.add_argument("--since", type=float, metavar="SECONDS", help="this long ago at most")
    parser.add_argument("--page", type=int, default=1)
    parser.add_argument("--per-page", type=int, default=50)
    parser.add_argument(
        "--all-nodes", action="store_true", help="search every node of the cluster too"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


def _filters(arguments: argparse.Namespace) -> dict[str, Any]:
    inputs: dict[str, Any] = {"page": arguments.page, "per_page": arguments.per_page}
    for name in ("sender", "recipient", "account", "message_id", "event"):
        value = getattr(arguments, name)
        if value:
            inputs[name] = value
    if arguments.bounce_class:
        inputs["class"] = arguments.bounce_class
    if arguments.since is not None:
        inputs["since"] = int(time.time() - arguments.since)
    return inputs


def _line(event: dict[str, Any]) -> str:
    from sendworx.cli.output import printable

    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event["at"]))
    who = event["recipient"] or event["sender"] or "-"
    parts = (event["bounce_class"], event["status"], event["reply"], event["detail"])
    said = " ".join(part for part in parts if part)
    relay = f" via {event['relay']}" if event["relay"] else ""
    node = f"{event['node']} " if "node" in event else ""
    return printable(f"{when} {node}{event['queue_id']} {event['event']:<9} {who}{relay} {said}")


def run_for_account(arguments: argparse.Namespace, instance: Instance) -> int:
    """The caller's own mail's history, as the submission daemon answers it."""
    answered = _as_account(arguments, instance)
    if isinstance(answered, int):
        return answered
    return _show(arguments, answered)


def _as_account(arguments: argparse.Namespace, instance: Instance) -> dict[str, Any] | int:
    """The answer of the submission daemon (the caller's own mail), or the exit status."""
    if arguments.account or arguments.all_nodes:
        print("sendworx history: an account sees its own mail only", file=sys.stderr)
        return 77
    argv = ["mailhistory"]
    if arguments.queue_id:
        argv.append(arguments.queue_id)
    else:
        for name, value in _filters(arguments).items():
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return ask_submission_daemon(instance, argv)


def run(arguments: argparse.Namespace, instance: Instance) -> int:
    from sendworx.cli.api_access import Refused, call_locally
    from sendworx.shared.wire import Call

    if arguments.queue_id:
        call: Call[Any] = Call(HISTORY, "queryMessage", {"queue_id": arguments.queue_id})
    else:
        action = "listEventsOnAllNodes" if arguments.all_nodes else "listEvents"
        call = Call(HISTORY, action, _filters(arguments))
    try:
        payload = call_locally(instance, call, "history")
    except Refused as refused:
        print(refused, file=sys.stderr)
        return 1
    return _show(arguments, payload)


def _show(arguments: argparse.Namespace, payload: dict[str, Any]) -> int:
    if arguments.json:
        print(json.dumps(payload))
        return 0
    for event in payload["events"]:
        print(_line(event))
    for node, said in payload.get("nodes", {}).items():
        if said != "ok":
            print(f"node {node} not searched: {said}", file=sys.stderr)
    if not payload["events"]:
        print("no event matches", file=sys.stderr)
    elif payload.get("more"):
        print(f"more: --page {arguments.page + 1}", file=sys.stderr)
    return 0
