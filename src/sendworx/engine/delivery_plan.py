"""How one attempt of a message is split: recipients on this host itself, recipients per
destination in transactions of at most `per_transaction`, and those that name nowhere (they
fail now, without a session). Pure: the active set turns the plan into delivery jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sendworx.engine.attempts import Outcome, RecipientResult
from sendworx.shared.addresses import AddressError, has_control_characters
from sendworx.shared.destinations import Destination, destination_for
from sendworx.shared.local_domains import is_local
from sendworx.shared.routes import RouteTable


@dataclass
class DeliveryPlan:
    failures: list[RecipientResult] = field(default_factory=list)
    transactions: list[tuple[Destination, list[str]]] = field(default_factory=list)
    local: list[str] = field(default_factory=list)


def plan_delivery(
    sender: str,
    recipients: Sequence[str],
    *,
    routes: RouteTable,
    local_domains: frozenset[str],
    per_transaction: int,
) -> DeliveryPlan:
    plan = DeliveryPlan()
    if has_control_characters(sender):
        # A queue file from before smtpd refused these: never put them on the wire.
        reason = "sender address contains control characters"
        plan.failures = [
            RecipientResult(recipient, Outcome.FAILED, reason, "5.1.7", None)
            for recipient in recipients
        ]
        return plan
    by_destination: dict[Destination, list[str]] = {}
    for recipient in recipients:
        if is_local(recipient, local_domains):
            plan.local.append(recipient)
            continue
        try:
            destination = destination_for(recipient, routes)
        except AddressError as error:
            failure = RecipientResult(recipient, Outcome.FAILED, str(error), "5.1.3", None)
            plan.failures.append(failure)
        else:
            by_destination.setdefault(destination, []).append(recipient)
    for destination, grouped in by_destination.items():
        for start in range(0, len(grouped), per_transaction):
            plan.transactions.append((destination, grouped[start : start + per_transaction]))
    return plan
