"""The arguments of `sendworx queue`: ids and the list's filters. Kept apart from the command,
which loads the API, so that parsing a command line (`sendworx sendmail` too) loads nothing."""

from __future__ import annotations

import argparse

FILTERS = {
    "sender": "an address, or a domain",
    "recipient": "an address, or a domain",
    "destination": "the MX domain or route relay mail waits for (see `queue summary`)",
    "state": "new, active, deferred or held",
    "older-than": "seconds",
    "younger-than": "seconds",
    "reply": "a piece of the last remote reply",
    "kind": "normal, bounce or double-bounce",
}
DONE = {
    "retry": "retried",
    "hold": "held",
    "release": "released",
    "expire": "expired",
    "delete": "deleted",
    "purge": "deleted",
}


def add_arguments(queue: argparse.ArgumentParser) -> None:
    """The `queue` subcommands, their ids and filters."""
    commands = queue.add_subparsers(dest="queue_command", required=True)

    def with_filters(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        for name, text in FILTERS.items():
            parser.add_argument(f"--{name}", help=text)
        return parser

    for name, text in (
        ("stat", "counts: messages, held, deferred, bytes, oldest, engine pid"),
        ("summary", "where mail waits and who sent it (Postfix's qshape)"),
    ):
        commands.add_parser(name, help=text).add_argument("--json", action="store_true")
    listing = with_filters(commands.add_parser("list", help="one line per message"))
    listing.add_argument("--json", action="store_true")
    show = commands.add_parser("show", help="everything about some messages")
    show.add_argument("ids", nargs="+")
    show.add_argument("--json", action="store_true")
    show.add_argument("--body", action="store_true", help="the body too (at most 64 KB)")
    for name, text in (
        ("retry", "try now (no ids, no filter: every queued message)"),
        ("hold", "never attempt until released (and never expire meanwhile)"),
        ("release", "release held messages: they are tried now"),
        ("expire", "bounce what is left to the senders"),
        ("delete", "remove without a bounce"),
    ):
        action = with_filters(commands.add_parser(name, help=text))
        action.add_argument("ids", nargs="*")
        action.add_argument("--json", action="store_true")
    purge = with_filters(commands.add_parser("purge", help="delete everything that matches"))
    purge.add_argument("--yes", action="store_true", help="yes, delete all of it")
    purge.add_argument("--json", action="store_true")
