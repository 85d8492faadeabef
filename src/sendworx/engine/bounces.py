"""Delivery status notifications (RFC 3464): one per failed message, listing every failure.

Pure: takes the original message and the failures, returns the bytes of the report.
"""

from __future__ import annotations

import email.policy
import email.utils
from email.message import EmailMessage, Message

from sendworx.shared.queue_format import Envelope, RecipientFailure

# Whole originals up to this size go back to the sender; larger ones only their headers.
RETURN_FULL_MESSAGE_LIMIT = 64 * 1024


def _per_recipient_block(failure: RecipientFailure) -> Message:
    block = Message()
    # RFC 6533: internationalized addresses use the "utf-8" address type.
    address_type = "rfc822" if failure.recipient.isascii() else "utf-8"
    block["Final-Recipient"] = f"{address_type}; {failure.recipient}"
    block["Action"] = "failed"
    block["Status"] = failure.status
    if failure.remote:
        block["Remote-MTA"] = f"dns; {failure.remote}"
    block["Diagnostic-Code"] = f"smtp; {' '.join(failure.reply.split())}"
    return block


def _explanation(reporting_mta: str, failures: list[RecipientFailure]) -> str:
    lines = [
        f"This is the mail system at {reporting_mta}.",
        "",
        "Your message could not be delivered to one or more recipients.",
        "The mail system gave these reasons:",
        "",
    ]
    for failure in failures:
        lines.append(f"<{failure.recipient}>: {failure.reply}")
    return "\n".join(lines) + "\n"


def build_bounce(
    *,
    original: Envelope,
    original_content: bytes,
    failures: list[RecipientFailure],
    notify: str,
    reporting_mta: str,
    sender: str,
    now: float,
) -> bytes:
    """A multipart/report for `notify` about `failures` of `original`, From `sender`."""
    report = EmailMessage(policy=email.policy.SMTP)
    report["From"] = f"Mail Delivery System <{sender}>"
    report["To"] = notify
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Date"] = email.utils.formatdate(now, localtime=False)
    report["Message-ID"] = email.utils.make_msgid("bounce", domain=reporting_mta)
    report["Auto-Submitted"] = "auto-replied"
    report.set_content(_explanation(reporting_mta, failures))
    report.make_mixed()
    report.replace_header("Content-Type", 'multipart/report; report-type="delivery-status"')

    status = Message()
    status.set_type("message/delivery-status")
    per_message = Message()
    per_message["Reporting-MTA"] = f"dns; {reporting_mta}"
    per_message["Arrival-Date"] = email.utils.formatdate(original.birth, localtime=False)
    status.set_payload([per_message, *(_per_recipient_block(f) for f in failures)])
    report.attach(status)  # type: ignore[arg-type]

    returned = Message()
    if len(original_content) <= RETURN_FULL_MESSAGE_LIMIT:
        returned.set_type("message/rfc822")
        returned.set_payload(
            [email.message_from_bytes(original_content, policy=email.policy.compat32)]
        )
    else:
        returned.set_type("text/rfc822-headers")
        header_end = original_content.find(b"\r\n\r\n")
        if header_end == -1:
            header_end = original_content.find(b"\n\n")
        headers = original_content[: header_end if header_end != -1 else len(original_content)]
        returned.set_payload(headers.decode("utf-8", "replace"))
    report.attach(returned)  # type: ignore[arg-type]
    # SMTPUTF8 policy: an internationalized recipient appears as itself, not as a crash.
    return report.as_bytes(policy=email.policy.SMTPUTF8.clone(max_line_length=998))
