"""`mailq`: the queue as Postfix's `mailq` prints it, for one account (its own mail) or for
root (everything). Read from the files (claimed and not yet claimed), so it works whether the
engine runs or not; a message that leaves while it is read is simply not listed.
"""

from __future__ import annotations

import contextlib
import time

from sendworx.shared.queue import Queue
from sendworx.shared.queue_format import CorruptMessageError

MOST_LISTED = 10_000


def mailq_text(queue: Queue, uid: int | None) -> str:
    """`uid`: only messages that account handed in; None: every message."""
    blocks: list[str] = []
    total_bytes = count = 0
    for message_id in sorted({*queue.message_ids(), *queue.pending_new_ids()}):
        with contextlib.suppress(FileNotFoundError, CorruptMessageError, OSError, ValueError):
            envelope = queue.read_envelope(message_id)
            origin = envelope.origin
            if uid is not None and (origin is None or origin.uid != uid):
                continue
            size = queue.message_size(message_id)
            state = queue.read_state(message_id)
            count += 1
            total_bytes += size
            if count > MOST_LISTED:
                continue
            mark = "!" if state is not None and state.held else " "
            arrival = time.strftime("%a %b %d %H:%M:%S", time.localtime(envelope.birth))
            lines = [
                f"{message_id + mark:<25} {size:>8} {arrival}  {envelope.sender or 'MAILER-DAEMON'}"
            ]
            done = set(state.delivered) | {f.recipient for f in state.failed} if state else set()
            for recipient in envelope.recipients:
                if recipient in done:
                    continue
                error = state.last_errors.get(recipient) if state is not None else None
                if error:
                    lines.append(f"{'':47}({error[:120]})")
                lines.append(f"{'':47}{recipient}")
            blocks.append("\n".join(lines))
    if not count:
        return "Mail queue is empty\n"
    header = (
        f"{'-Queue ID-':<25} {'--Size--':>8} {'----Arrival Time----':<21}  -Sender/Recipient-------"
    )
    shown = "\n\n".join(blocks)
    more = f"\n\n... and {count - MOST_LISTED} more" if count > MOST_LISTED else ""
    kilobytes = (total_bytes + 1023) // 1024
    footer = f"-- {kilobytes} Kbytes in {count} Request{'s' if count != 1 else ''}."
    return f"{header}\n{shown}{more}\n\n{footer}\n"
