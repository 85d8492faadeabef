"""Delivering a job whose recipients are this host itself (`shared/local_domains.py`) into
their local mailboxes (`shared/maildir.py`), with a result per recipient as a session gives.
Blocking file I/O: the queue manager runs it in a worker thread."""

from __future__ import annotations

from pathlib import Path

from sendworx.engine.attempts import Outcome, RecipientResult
from sendworx.engine.delivery_job import DeliveryJob
from sendworx.shared import maildir
from sendworx.shared.maildir import NoMailbox, mailbox_for

RELAY = "local"  # what send.log names as the relay


def deliver_locally(mailboxes: Path, job: DeliveryJob) -> list[RecipientResult]:
    content = job.load_content()
    results = []
    for recipient in job.recipients:
        try:
            mailbox = mailbox_for(recipient.rpartition("@")[0])
            maildir.deliver(mailboxes, mailbox, job.sender, recipient, content)
        except NoMailbox as error:
            reply = f"550 5.1.1 {error}"
            results.append(RecipientResult(recipient, Outcome.FAILED, reply, "5.1.1", RELAY))
        except OSError as error:  # a full disk: tried again later, as a remote 4xx
            reply = f"local delivery failed: {error.strerror or error}"
            results.append(RecipientResult(recipient, Outcome.DEFERRED, reply, "4.3.0", RELAY))
        else:
            reply = f"250 2.0.0 delivered to mailbox {mailbox}"
            results.append(RecipientResult(recipient, Outcome.DELIVERED, reply, "2.0.0", RELAY))
    return results
