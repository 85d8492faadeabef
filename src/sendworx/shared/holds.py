"""Senders on hold: the circuit breaker of the sending policy (or an operator) holds every
message of one sender identity — queued and new — until an operator releases or purges it.

The holds live in `holds.json` in the instance, rewritten atomically on every change; a held
message's state names its hold (`DeliveryState.held_by`), so releasing a hold releases exactly
the mail it held and not what an operator held by hand. The engine changes holds while it
runs; whoever holds the queue lock does while it does not (`change_hold_in_files`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from sendworx.shared.config import ConfigError
from sendworx.shared.durable import atomic_write
from sendworx.shared.policy import Identity, SenderScope
from sendworx.shared.queue import Queue
from sendworx.shared.queue_actions import ActionOutcome, QueueAction, apply_to_files
from sendworx.shared.queue_format import CorruptMessageError, MessageKind

SCOPES: tuple[SenderScope, ...] = ("sender", "account", "domain")  # most specific first
OPERATOR_HOLD = "held by the mail administrator"
_KEY = re.compile(r"^[^\x00-\x20\x7f]{1,320}$")


class HoldAction(StrEnum):
    ADD = "add"  # an operator puts a sender on hold, with its queued mail
    RELEASE = "release"  # the hold ends; the mail it held is tried now
    PURGE = "purge"  # the hold ends; the mail it held is deleted, without a bounce


@dataclass(frozen=True, slots=True)
class Hold:
    scope: SenderScope
    key: str  # who: the account name, the domain or the address (lower case)
    rule: str  # the breaker rule that tripped, or "operator"
    reason: str
    since: float

    @property
    def hold_id(self) -> str:
        return f"{self.scope}:{self.key}"


def parse_hold_id(hold_id: str) -> tuple[SenderScope, str]:
    """("account", "alice") from "account:alice"; ValueError for anything else."""
    name, _, key = hold_id.partition(":")
    for scope in SCOPES:
        if name == scope and _KEY.match(key):
            return scope, key.lower()
    raise ValueError(f"{hold_id[:80]!r}: expected account:NAME, domain:NAME or sender:ADDRESS")


def hold_id_for(identity: Identity, holds: dict[str, Hold]) -> str | None:
    """The hold that covers `identity`, if any (address, then account, then domain)."""
    for scope in SCOPES:
        value = identity.value(scope)
        if value is not None and f"{scope}:{value}" in holds:
            return f"{scope}:{value}"
    return None


def read_holds(path: Path) -> dict[str, Hold]:
    """The holds in force. A file that cannot be read stops whoever reads it (ConfigError):
    a hold is never dropped by accident."""
    try:
        document = json.loads(path.read_bytes())
        holds = []
        for entry in document["holds"]:
            scope, key = parse_hold_id(f"{entry['scope']}:{entry['key']}")
            since = float(entry["since"])
            holds.append(Hold(scope, key, str(entry["rule"]), str(entry["reason"]), since))
    except FileNotFoundError:
        return {}
    except (ValueError, TypeError, KeyError) as error:
        raise ConfigError(f"{path}: not a holds file ({error}); fix or move it") from error
    return {hold.hold_id: hold for hold in holds}


def write_holds(path: Path, holds: Iterable[Hold]) -> None:
    entries = [asdict(hold) for hold in sorted(holds, key=lambda hold: hold.since)]
    atomic_write(path, json.dumps({"holds": entries}, indent=1).encode(), mode=0o600)


def messages_held_by(queue: Queue, hold_id: str, candidates: Iterable[str]) -> list[str]:
    """Which of `candidates` the hold `hold_id` keeps (their state says so)."""
    held = []
    for message_id in candidates:
        try:
            state = queue.read_state(message_id)
        except (ValueError, TypeError, KeyError):
            continue
        if state is not None and state.held and state.held_by == hold_id:
            held.append(message_id)
    return held


def mail_of(queue: Queue, scope: SenderScope, key: str, candidates: Iterable[str]) -> list[str]:
    """Which of `candidates` were sent by `key` (normal mail only: bounces are never held)."""
    mail = []
    for message_id in candidates:
        try:
            envelope = queue.read_envelope(message_id)
        except (CorruptMessageError, OSError):
            continue
        if envelope.kind is MessageKind.NORMAL and Identity.of(envelope).value(scope) == key:
            mail.append(message_id)
    return mail


def change_hold_in_files(
    queue: Queue, holds_path: Path, hold: Hold, action: HoldAction, now: float
) -> ActionOutcome:
    """A hold added, released or purged with the engine stopped (the caller holds the queue
    lock). Adding records the hold before holding its mail; ending removes it first, so a
    crash in between leaves mail held by a hold that no longer exists — which a second
    release or purge of the same hold finds and ends."""
    holds = read_holds(holds_path)
    queued = [*queue.message_ids(), *queue.pending_new_ids()]
    if action is HoldAction.ADD:
        if hold.hold_id not in holds:
            write_holds(holds_path, [*holds.values(), hold])
        ids = mail_of(queue, hold.scope, hold.key, queued)
        return apply_to_files(queue, QueueAction.HOLD, ids, now, hold.hold_id)
    if holds.pop(hold.hold_id, None) is not None:
        write_holds(holds_path, holds.values())
    ids = messages_held_by(queue, hold.hold_id, queued)
    queue_action = QueueAction.RELEASE if action is HoldAction.RELEASE else QueueAction.DELETE
    return apply_to_files(queue, queue_action, ids, now)
