"""`sendworx suppression`: the addresses mail is not attempted to, for the shell, panel up or
down. It runs through `/nodeworx/mail/suppression` in this process (as the local operator),
like the API; the engine takes a change into account within a second.

    suppression [list] [--search S] [--reason R] [--page N] [--per-page N] [--json]
    suppression add ADDRESS... [--days N] [--note TEXT]
    suppression remove ADDRESS...
    suppression export              every entry in force, as CSV
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from sendworx.shared.instance import Instance
from sendworx.shared.suppression import REASONS

SUPPRESSION = "/nodeworx/mail/suppression"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="suppression_action")
    listing = actions.add_parser("list", help="the addresses in force, newest first")
    for where in (parser, listing):
        where.add_argument("--search", default="", help="an address, a domain, or a part")
        where.add_argument("--reason", choices=REASONS)
        where.add_argument("--page", type=int, default=1)
        where.add_argument("--per-page", type=int, default=50)
        where.add_argument("--json", action="store_true", help="print JSON")
    adding = actions.add_parser("add", help="suppress addresses by hand")
    adding.add_argument("addresses", nargs="+", metavar="ADDRESS")
    adding.add_argument("--days", type=int, help="how long (default: suppression.days)")
    adding.add_argument("--note", default="", help="why, for the record")
    removing = actions.add_parser("remove", help="take addresses off the list")
    removing.add_argument("addresses", nargs="+", metavar="ADDRESS")
    actions.add_parser("export", help="every address in force, as CSV")


def _line(entry: dict[str, Any]) -> str:
    from sendworx.cli.output import printable

    until = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry["until"]))
    said = f" {entry['detail']}" if entry["detail"] else ""
    return printable(f"{entry['address']} {entry['reason']} until {until}{said}")


def run(arguments: argparse.Namespace, instance: Instance) -> int:
    from sendworx.cli.api_access import Refused, call_locally
    from sendworx.shared.wire import Call

    action = arguments.suppression_action or "list"
    inputs: dict[str, Any] = {}
    if action == "list":
        name = "listAddresses"
        inputs = {"search": arguments.search, "page": arguments.page}
        inputs["per_page"] = arguments.per_page
        if arguments.reason:
            inputs["reason"] = arguments.reason
    elif action in ("add", "remove"):
        name, inputs = action, {"address": arguments.addresses}
        if action == "add":
            inputs["note"] = arguments.note
            if arguments.days is not None:
                inputs["days"] = arguments.days
    else:
        name = "exportCsv"
    call: Call[Any] = Call(SUPPRESSION, name, inputs)
    try:
        payload = call_locally(instance, call, "suppression")
    except Refused as refused:
        print(refused, file=sys.stderr)
        return 1
    if action == "export":
        sys.stdout.write(payload)
    elif action == "add":
        until = time.strftime("%Y-%m-%d %H:%M", time.localtime(payload["until"]))
        print(f"suppressed until {until}: {', '.join(payload['added'])}")
    elif action == "remove":
        removed = payload["removed"]
        print(f"removed: {', '.join(removed)}" if removed else "none of them was on the list")
        return 0 if removed else 1
    elif arguments.json:
        print(json.dumps(payload))
    else:
        for entry in payload["addresses"]:
            print(_line(entry))
        if not payload["addresses"]:
            print(
                "no address is suppressed" + (" that matches" if arguments.search else ""),
                file=sys.stderr,
            )
        elif payload.get("more"):
            print(f"{payload['total']} in all; more: --page {arguments.page + 1}", file=sys.stderr)
    return 0
