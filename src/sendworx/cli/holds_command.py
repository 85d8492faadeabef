"""`sendworx holds`: the senders the sending policy holds, for the shell, panel up or down.

list shows them; add puts a sender on hold with its queued mail; release ends a hold and lets
its mail go; purge ends it and deletes that mail (with --yes). Everything runs through
`/nodeworx/mail/policy` in this process (as the local operator), exactly like the API.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sendworx.shared.instance import Instance

POLICY = "/nodeworx/mail/policy"
ACTIONS = {"list": "listHolds", "add": "addHold", "release": "releaseHold", "purge": "purgeHold"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="holds_command")
    commands.add_parser("list", help="the senders on hold (the default)")
    for name, meaning in (
        ("add", "put a sender on hold with its queued mail"),
        ("release", "end a hold: the mail it held is tried now"),
        ("purge", "end a hold and delete the mail it held, without a bounce"),
    ):
        command = commands.add_parser(name, help=meaning)
        command.add_argument("hold", help="account:NAME, domain:NAME or sender:ADDRESS")
        if name == "add":
            command.add_argument("--reason", default="", help="why (shown with the hold)")
        if name == "purge":
            command.add_argument("--yes", action="store_true", help="really delete the mail")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(arguments: argparse.Namespace, instance: Instance) -> int:
    # Loaded here, not at import: main.py imports this module for its arguments only.
    from sendworx.cli.api_access import Refused, call_locally
    from sendworx.cli.queue_command import when
    from sendworx.shared.wire import Call

    command: str = arguments.holds_command or "list"
    if command == "purge" and not arguments.yes:
        print("sendworx holds purge: deletes the mail the hold kept; add --yes", file=sys.stderr)
        return 2
    inputs: dict[str, Any] = {}
    if command != "list":
        inputs["hold"] = arguments.hold
    if command == "add" and arguments.reason:
        inputs["reason"] = arguments.reason
    try:
        payload = call_locally(instance, Call(POLICY, ACTIONS[command], inputs), f"holds {command}")
    except Refused as refused:
        print(refused, file=sys.stderr)
        return 1
    if arguments.json:
        print(json.dumps(payload))
    elif command == "list":
        for hold in payload:
            print(f"{hold['hold']}  since {when(hold['since'])}  {hold['rule']}: {hold['reason']}")
        if not payload:
            print("no sender is on hold")
    else:
        in_flight = len(payload["in_flight"])
        print(f"{payload['hold']}: {payload['touched']} messages, {in_flight} in flight")
    return 0
