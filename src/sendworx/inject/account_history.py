"""What the submission daemon answers `sendworx history` run by a local account: the
history of that account's own mail only. The account is the kernel's word (SO_PEERCRED, as
for sendmail), never the caller's; root and the service's own account see everything, as
with `mailq`. The answer is the JSON `/nodeworx/mail/history` gives, so the command prints
it the same way.

    mailhistory [--sender S] [--recipient R] [--message-id M] [--event E] [--class C]
                [--since EPOCH] [--page N] [--per-page N]
    mailhistory QUEUE-ID       one message's story: only when the account sent it
"""

from __future__ import annotations

import argparse
import json

from sendworx.shared.bounce_classes import CLASSES
from sendworx.shared.history import (
    EVENTS,
    MAX_PER_PAGE,
    HistoryFilter,
    HistoryReader,
)
from sendworx.shared.queue_format import is_message_id

PROGRAM = "mailhistory"


class HistoryRefused(Exception):
    """A request the daemon does not answer; the text says why."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, add_help=False, exit_on_error=False)
    parser.add_argument("queue_id", nargs="?")
    for name in ("--sender", "--recipient", "--message-id"):
        parser.add_argument(name, default="")
    parser.add_argument("--event", default="", choices=("", *EVENTS))
    parser.add_argument("--class", dest="bounce_class", default="", choices=("", *CLASSES))
    parser.add_argument("--since", type=float)
    parser.add_argument("--page", type=int, default=1)
    parser.add_argument("--per-page", type=int, default=50)
    return parser


def account_history(reader: HistoryReader, account: str | None, arguments: list[str]) -> str:
    """The JSON answer; `account` None: every account's mail. HistoryRefused when the
    arguments are not a search, HistoryError when the history cannot be read."""
    try:
        asked = _parser().parse_args(arguments)
    except (argparse.ArgumentError, SystemExit) as error:
        raise HistoryRefused(f"{PROGRAM}: {error}") from None
    if asked.queue_id is not None:
        if not is_message_id(asked.queue_id):
            raise HistoryRefused(f"{PROGRAM}: {asked.queue_id[:80]!r} is not a queue id")
        events = reader.timeline(asked.queue_id)
        if account is not None and not any(event.account == account for event in events):
            events = []  # another account's mail: as if there were none
        story = [event.to_document() for event in events]
        return json.dumps({"queue_id": asked.queue_id, "events": story})
    if not 1 <= asked.page <= 100_000 or not 1 <= asked.per_page <= MAX_PER_PAGE:
        raise HistoryRefused(f"{PROGRAM}: --page from 1, --per-page up to {MAX_PER_PAGE}")
    for name in ("sender", "recipient", "message_id"):
        if len(getattr(asked, name)) > 320:
            raise HistoryRefused(f"{PROGRAM}: --{name.replace('_', '-')} is too long")
    selection = HistoryFilter(
        sender=asked.sender,
        recipient=asked.recipient,
        account=account or "",
        message_id=asked.message_id,
        event=asked.event,
        bounce_class=asked.bounce_class,
        since=asked.since,
    )
    found, more = reader.search(selection, asked.page, asked.per_page)
    page = [event.to_document() for event in found]
    return json.dumps({"events": page, "page": asked.page, "more": int(more)})
