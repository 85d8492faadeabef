"""Delivering a job whose recipients are this host itself (`shared/local_domains.py`): each
name is expanded through the aliases file (`shared/aliases.py`) into local mailboxes
(`shared/maildir.py`) and addresses elsewhere, which get a copy queued as a new message (with
the original envelope sender, as a forward). A result per recipient, as a session gives.

A forwarded copy carries `Delivered-To: <recipient>`; a message that already carries it for
the recipient it comes to is a forwarding loop and fails (5.4.6) before any copy is made, as
in Postfix's local(8).
Blocking file I/O: the active set runs it in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sendworx.engine.attempts import Outcome, RecipientResult
from sendworx.engine.delivery_job import DeliveryJob
from sendworx.shared import maildir
from sendworx.shared.aliases import Aliases, expand
from sendworx.shared.maildir import NoMailbox, mailbox_for

RELAY = "local"  # what send.log names as the relay
Forward = Callable[[str, tuple[str, ...], bytes], str]  # sender, recipients, content -> id


def deliver_locally(
    mailboxes: Path,
    job: DeliveryJob,
    aliases: Aliases,
    local_domains: frozenset[str],
    forward: Forward,
) -> list[RecipientResult]:
    content = job.load_content()
    results = []
    for recipient in job.recipients:
        try:
            reply = _deliver(
                mailboxes, job.sender, recipient, content, aliases, local_domains, forward
            )
        except NoMailbox as error:
            reply = f"550 5.1.1 {error}"
            results.append(RecipientResult(recipient, Outcome.FAILED, reply, "5.1.1", RELAY))
        except _Loop:
            reply = f"554 5.4.6 mail forwarding loop for {recipient}"
            results.append(RecipientResult(recipient, Outcome.FAILED, reply, "5.4.6", RELAY))
        except OSError as error:  # a full disk: tried again later, as a remote 4xx
            reply = f"local delivery failed: {error.strerror or error}"
            results.append(RecipientResult(recipient, Outcome.DEFERRED, reply, "4.3.0", RELAY))
        else:
            results.append(RecipientResult(recipient, Outcome.DELIVERED, reply, "2.0.0", RELAY))
    return results


class _Loop(Exception):
    pass


def _deliver(
    mailboxes: Path,
    sender: str,
    recipient: str,
    content: bytes,
    aliases: Aliases,
    local_domains: frozenset[str],
    forward: Forward,
) -> str:
    if _delivered_to(content, recipient):
        raise _Loop  # before any copy is written
    expansion = expand(recipient.rpartition("@")[0], aliases, local_domains)
    names = [mailbox_for(name) for name in expansion.mailboxes]  # NoMailbox before any write
    done = []
    for mailbox in dict.fromkeys(names):
        maildir.deliver(mailboxes, mailbox, sender, recipient, content)
        done.append(f"mailbox {mailbox}")
    if expansion.remote:
        trace = f"Delivered-To: {recipient}\n".encode()
        forwarded_id = forward(sender, expansion.remote, trace + content)
        done.append(f"{', '.join(expansion.remote)} (forwarded as {forwarded_id})")
    return f"250 2.0.0 delivered to {'; '.join(done)}"


def _delivered_to(content: bytes, recipient: str) -> bool:
    """Whether the message's header already says it was delivered to `recipient` here."""
    header_end = content.find(b"\n\n")
    head = content[: header_end if header_end != -1 else len(content)].replace(b"\r\n", b"\n")
    wanted = f"delivered-to: {recipient}".lower().encode()
    return any(line.strip().lower() == wanted for line in head.split(b"\n"))
