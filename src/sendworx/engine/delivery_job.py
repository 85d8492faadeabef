"""One delivery job: some recipients of one message that go to one destination in one
transaction. Whoever delivers it reports one result per recipient, once (`finish`); how a
job goes over an SMTP connection and its replies become results is here too, so the pool
(`delivery.py`) only decides who sends what, when."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sendworx.engine.attempts import Outcome, RecipientResult
from sendworx.engine.smtp_client import SMTPConnection
from sendworx.engine.smtp_protocol import SMTPReply


class MessageGone(Exception):
    """The queue file disappeared (deleted by an operator) before it could be sent."""


@dataclass(eq=False)
class DeliveryJob:
    message_id: str
    sender: str
    recipients: list[str]
    load_content: Callable[[], bytes]
    on_done: Callable[[DeliveryJob, list[RecipientResult]], None]
    finished: bool = False
    requeued: int = 0

    def finish(self, results: list[RecipientResult]) -> None:
        if not self.finished:
            self.finished = True
            self.on_done(self, results)

    def finish_all(self, outcome: Outcome, reply: str, status: str, remote: str | None) -> None:
        self.finish(
            [RecipientResult(rcpt, outcome, reply, status, remote) for rcpt in self.recipients]
        )


async def send_job(connection: SMTPConnection, job: DeliveryJob) -> list[tuple[str, SMTPReply]]:
    """One transaction; each recipient's reply."""
    # The content goes straight to the connection, which lets go of it once written.
    replies = await connection.send(job.sender, job.recipients, _content_of(job))
    return list(replies.items())


def results_of(
    replies: list[tuple[str, SMTPReply]], remote: str, tls: str = ""
) -> list[RecipientResult]:
    return [
        RecipientResult(
            recipient, Outcome.of_reply(reply.code), str(reply), reply.enhanced_status, remote, tls
        )
        for recipient, reply in replies
    ]


def _content_of(job: DeliveryJob) -> bytes:
    try:
        return job.load_content()
    except FileNotFoundError as error:
        raise MessageGone(job.message_id) from error
