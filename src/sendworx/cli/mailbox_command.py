"""`sendworx mailbox`: read the local mailboxes, where mail for this host itself arrives
(bounces to local senders, postmaster's double bounces, mail to root).

    sendworx mailbox                    every mailbox and how many messages it holds
    sendworx mailbox USER [--json]      its messages, oldest first: id, received, from, subject
    sendworx mailbox USER ID            one message, whole

Read-only: the Maildirs stay as they are for any mail client. Anything unprintable a sender
chose is escaped before it reaches the terminal.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from sendworx.cli.output import printable
from sendworx.shared.aliases import AliasFile, expand
from sendworx.shared.instance import Instance
from sendworx.shared.maildir import NoMailbox, mailbox_for, mailbox_names, messages


def run(arguments: argparse.Namespace, instance: Instance) -> int:
    root = instance.mailboxes_dir
    if arguments.mailbox is None:
        counts = {name: len(messages(root, name)) for name in mailbox_names(root)}
        if arguments.json:
            print(json.dumps(counts))
        for name, count in counts.items() if not arguments.json else ():
            print(f"{name}\t{count}")
        return 0
    try:
        # `root` reads the mailbox its mail goes to (postmaster's, without an aliases file).
        aliases = AliasFile(instance.aliases_path).current()
        expanded = expand(arguments.mailbox, aliases, frozenset()).mailboxes
        mailbox = mailbox_for(expanded[0] if len(expanded) == 1 else arguments.mailbox)
    except NoMailbox as error:
        print(f"sendworx mailbox: {error}", file=sys.stderr)
        return 1
    stored = messages(root, mailbox)
    if arguments.id is not None:
        chosen = next((message for message in stored if message.name == arguments.id), None)
        if chosen is None:
            print(f"sendworx mailbox: no message {printable(arguments.id)}", file=sys.stderr)
            return 1
        text = chosen.path.read_bytes().decode("utf-8", "replace")
        print("\n".join(printable(line) for line in text.splitlines()))
        return 0
    if arguments.json:
        rows = [
            {
                "id": message.name,
                "received": message.received,
                "sender": message.sender,
                "subject": message.subject,
                "size": message.size,
                "seen": message.seen,
            }
            for message in stored
        ]
        print(json.dumps(rows))
        return 0
    for message in stored:
        received = datetime.fromtimestamp(message.received, UTC).strftime("%Y-%m-%d %H:%M:%S")
        sender = printable(message.sender) or "<>"
        print(f"{message.name}  {received}  {sender}  {printable(message.subject)}")
    return 0
