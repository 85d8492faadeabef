"""`sendworx nodeworx` (and the `nodeworx` command): InterWorx's command-line API client.

    nodeworx -u -n -c MailSend -a update --concurrency_remote 100 --smtp_routes a.test:relay

Every `--name value` or `--name=value` after the known options is an input; a repeated name
makes a list. Output is plain text; the exit status is 0 on success, 1 when the API refused.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sendworx.cli.api_access import AccessDenied, ApiAccess, LocalApi, RemoteApi
from sendworx.cli.output import plain_lines, print_json
from sendworx.cli.privileges import become
from sendworx.client import ClientError, calls
from sendworx.shared.config import ConfigError
from sendworx.shared.instance import SYSTEM_USER, Instance, chosen_instance


def parser(prog: str = "nodeworx") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run a NodeWorx API action: -c CONTROLLER -a ACTION [--input value ...]",
    )
    parser.add_argument("-u", action="store_true", help="run as the master NodeWorx user")
    parser.add_argument("-n", action="store_true", help="non-interactive (always; accepted)")
    parser.add_argument("-c", "--controller", required=True, help="MailSend or /nodeworx/mail/send")
    parser.add_argument("-a", "--action", required=True, help="for example isRunning or update")
    parser.add_argument("--json", action="store_true", help="print the whole reply as JSON")
    parser.add_argument("--url", help="a panel elsewhere (default: this instance, in-process)")
    parser.add_argument("--key-file", type=Path, help="API key file for --url")
    parser.add_argument("--ca-file", type=Path, help="CA that signed the --url certificate")
    parser.add_argument("--home", type=Path, help="instance directory (default $SENDWORX_HOME)")
    return parser


def parse_inputs(words: Sequence[str]) -> dict[str, Any]:
    """`--name value`, `--name=value` and bare `--flag` (= "1"); repeated names make lists."""
    inputs: dict[str, Any] = {}
    index = 0
    while index < len(words):
        word = words[index]
        if not word.startswith("--") or len(word) == 2:
            raise ValueError(f"unexpected argument {word!r}; inputs are --name value")
        name, equals, value = word[2:].partition("=")
        if not equals:
            following = words[index + 1] if index + 1 < len(words) else None
            if following is not None and not following.startswith("--"):
                value, index = following, index + 1
            else:
                value = "1"
        if name in inputs:
            existing = inputs[name]
            inputs[name] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            inputs[name] = value
        index += 1
    return inputs


def run(argv: Sequence[str], prog: str = "nodeworx", instance: Instance | None = None) -> int:
    arguments, rest = parser(prog).parse_known_args(argv)
    arguments.instance = (
        instance
        if instance is not None and arguments.home is None
        else chosen_instance(arguments.home, system=False)
    )
    try:
        inputs = parse_inputs(rest)
    except ValueError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 2
    try:
        access = _access(arguments)
        try:
            reply = access.reply(calls.route(arguments.controller, arguments.action, inputs))
        finally:
            access.close()
    except (AccessDenied, ClientError, ConfigError, OSError) as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 1
    if arguments.json:
        print_json(reply.as_struct())
    elif reply.status == 0:
        for line in plain_lines(reply.payload):
            print(line)
    else:
        print("\n".join(plain_lines(reply.payload)), file=sys.stderr)
    return 0 if reply.status == 0 else 1


def _access(arguments: argparse.Namespace) -> ApiAccess:
    if arguments.url:
        if arguments.key_file is None:
            raise AccessDenied("--url needs --key-file")
        return RemoteApi(arguments.url, arguments.key_file, arguments.ca_file)
    instance: Instance = arguments.instance
    if instance.system and os.geteuid() == 0:
        become(SYSTEM_USER)  # root acts as the service's account, as `sendworx` does
    return LocalApi(instance)


def main() -> int:
    """The `nodeworx` console script."""
    return run(sys.argv[1:])
