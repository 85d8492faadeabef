"""The notice an administrator gets when the circuit breaker puts a sender on hold."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from sendworx.shared.holds import Hold


def build_hold_notice(hold: Hold, notify: str, reporting_mta: str, sender: str) -> bytes:
    message = EmailMessage()
    message["From"] = f"Mail Delivery System <{sender}>"
    message["To"] = notify
    message["Subject"] = f"Outbound mail held: {hold.scope} {hold.key}"
    message["Date"] = formatdate(hold.since)
    message["Message-ID"] = make_msgid(domain=reporting_mta)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(
        f"{reporting_mta} put a sender on hold:\n\n"
        f"  who:    {hold.scope} {hold.key}\n"
        f"  rule:   {hold.rule}\n"
        f"  why:    {hold.reason}\n\n"
        "Its queued mail and every new message from it are kept and not sent.\n"
        f"Release the hold (`sendworx holds release {hold.hold_id}`) once the sender is\n"
        "trusted again, or purge it to delete the mail it held.\n"
    )
    return bytes(message)
