"""`sendworx dkim`: the DKIM keys, for the shell, panel up or down. Every command runs through
`/nodeworx/mail/dkim` in this process (as the local operator), exactly like the API.

    list                        every key and its state
    show DOMAIN                 the records to publish (name, strings, zone-file line)
    add DOMAIN [options]        a new key (a domain's first is active at once)
    allow DOMAIN [options]      who may sign as the domain
    rotate DOMAIN start|finish|abort
    check [DOMAIN]              are the records published?
    delete DOMAIN --yes
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sendworx.shared.instance import Instance

DKIM = "/nodeworx/mail/dkim"


def _who(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--account",
        action="append",
        default=[],
        help="a Unix account that may sign as the domain (repeat)",
    )
    command.add_argument(
        "--network", action="append", default=[], help="a client network that may sign (repeat)"
    )
    command.add_argument(
        "--any", action="store_true", help="every sender may sign (a single-tenant host)"
    )
    command.add_argument("--testing", action="store_true", help="t=y in the record")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # --json before or after the subcommand (`dkim --json list`, `dkim list --json`).
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="dkim_command", parser_class=_with(output))
    commands.add_parser("list", help="every key and its state (the default)")
    show = commands.add_parser("show", help="the DNS records a domain's keys need")
    show.add_argument("domain")
    add = commands.add_parser("add", help="a new key for a domain")
    add.add_argument("domain")
    add.add_argument("--selector", help="the selector (default: swYYYYMM)")
    add.add_argument("--algorithm", choices=("rsa", "ed25519"), default="rsa")
    add.add_argument("--bits", type=int, help="RSA key size, 1024 to 4096 (default 2048)")
    add.add_argument("--import", dest="import_file", type=Path, help="an existing PEM key")
    _who(add)
    allow = commands.add_parser("allow", help="who may sign as a domain")
    allow.add_argument("domain")
    _who(allow)
    rotate = commands.add_parser("rotate", help="start, finish or abort a key rotation")
    rotate.add_argument("domain")
    rotate.add_argument("step", choices=("start", "finish", "abort"))
    rotate.add_argument("--selector", help="the new key's selector (start)")
    rotate.add_argument("--bits", type=int, help="the new key's size (start)")
    check = commands.add_parser("check", help="look the records up in DNS")
    check.add_argument("domain", nargs="?")
    delete = commands.add_parser("delete", help="every key of a domain")
    delete.add_argument("domain")
    delete.add_argument("--yes", action="store_true", help="really delete the keys")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _with(output: argparse.ArgumentParser) -> type[argparse.ArgumentParser]:
    class Subcommand(argparse.ArgumentParser):
        def __init__(self, **keywords: Any) -> None:
            super().__init__(parents=[output], **keywords)

    return Subcommand


def _inputs(arguments: argparse.Namespace, command: str) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    if getattr(arguments, "domain", None):
        inputs["domain"] = arguments.domain
    if command in ("add", "allow"):
        inputs |= {"accounts": arguments.account, "networks": arguments.network}
        inputs |= {"any": int(arguments.any), "testing": int(arguments.testing)}
    if command in ("add", "rotate"):
        for name in ("selector", "bits"):
            if getattr(arguments, name, None):
                inputs[name] = getattr(arguments, name)
    if command == "add":
        inputs["algorithm"] = arguments.algorithm
        if arguments.import_file is not None:
            inputs["key"] = arguments.import_file.read_text()
    if command == "rotate":
        inputs["step"] = arguments.step
    return inputs


ACTIONS = {
    "list": "listKeys",
    "show": "queryRecords",
    "add": "add",
    "allow": "allow",
    "rotate": "rotate",
    "check": "check",
    "delete": "delete",
}


def run(arguments: argparse.Namespace, instance: Instance) -> int:
    from sendworx.cli.api_access import Refused, call_locally
    from sendworx.cli.output import plain_lines
    from sendworx.shared.wire import Call

    command: str = arguments.dkim_command or "list"
    if command == "delete" and not arguments.yes:
        print(
            "sendworx dkim delete: mail from the domain goes unsigned; add --yes", file=sys.stderr
        )
        return 2
    try:
        call: Call[Any] = Call(DKIM, ACTIONS[command], _inputs(arguments, command))
        payload = call_locally(instance, call, f"dkim {command}")
    except Refused as refused:
        print(refused, file=sys.stderr)
        return 1
    if arguments.json:
        print(json.dumps(payload))
    elif command == "list":
        for key in payload:
            print(
                f"{key['domain']}  {key['selector']}  {key['algorithm']}-{key['bits']}  "
                f"{key['state']}"
            )
        if not payload:
            print("no DKIM key: mail goes out unsigned (sendworx dkim add DOMAIN)")
    elif command == "show":
        for record in payload:
            print(f"{record['selector']} ({record['state']}): {record['name']} TXT")
            print(f"  {record['zone_line']}")
    elif command == "check":
        for found in payload:
            detail = f"  {found['detail']}" if found["detail"] else ""
            print(f"{found['domain']}  {found['selector']}  {found['status']}{detail}")
        if not payload:
            print("no key to check")
        return 0 if all(found["status"] == "ok" for found in payload) else 3
    else:
        for line in plain_lines(payload):
            print(line)
    return 0
