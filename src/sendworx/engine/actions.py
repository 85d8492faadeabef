"""What operators and the sending policy do to queued mail while the engine runs: an action on
messages (now for those not being delivered, after the attempt under way for those that
are), and sender holds (put on by a breaker, another node or an operator; ended by an
operator, releasing or purging the mail they held). The files change through `outcomes.py`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sendworx.engine.notices import build_hold_notice
from sendworx.engine.outcomes import Outcomes
from sendworx.engine.queue_state import QueueState
from sendworx.engine.sending_policy import SendingPolicy
from sendworx.shared.holds import Hold, HoldAction, mail_of, messages_held_by
from sendworx.shared.policy import Identity
from sendworx.shared.queue import Queue
from sendworx.shared.queue_actions import ActionOutcome, QueueAction
from sendworx.shared.queue_format import Envelope, MessageKind, Origin
from sendworx.shared.settings import MailNames

log = logging.getLogger("sendworx.engine")


class QueueActions:
    def __init__(
        self,
        queue: Queue,
        state: QueueState,
        policy: SendingPolicy,
        outcomes: Outcomes,
        *,
        clock: Callable[[], float],
        names: Callable[[], MailNames],
        claim_new: Callable[[], None],
        check_new: Callable[[], None],
    ) -> None:
        """`claim_new` takes what injectors queued into the manager's memory now;
        `check_new` asks the manager to do so soon (after a notice is queued)."""
        self._queue = queue
        self._state = state
        self._policy = policy
        self._outcomes = outcomes
        self._clock = clock
        self._names = names
        self._claim_new = claim_new
        self._check_new = check_new

    async def act(self, action: QueueAction, ids: list[str], by: str = "") -> ActionOutcome:
        """`action` on messages: now for those not being delivered, after the attempt under
        way for those that are. Mail still in `new/` is claimed first, so it counts too."""
        self._claim_new()
        outcome = ActionOutcome()
        idle = []
        for message_id in dict.fromkeys(ids):
            if message_id in self._state.active:
                outcome.in_flight.append(message_id)
                if action is not QueueAction.RELEASE:  # nothing in flight is held
                    self._state.after_attempt[message_id] = (action, by)
            else:
                idle.append(message_id)
        outcome.merge(await self._outcomes.apply(idle, action, by=by))
        return outcome

    # -- sender holds (the circuit breaker's, another node's, an operator's) --------------

    async def put_on_hold(
        self, hold: Hold, notify: str | None, publish: bool = True
    ) -> ActionOutcome:
        """Record the hold, then hold the sender's queued mail; mail being delivered is held
        after its attempt (`active_set.py`)."""
        await self._policy.record(hold, publish)
        if notify:
            await asyncio.to_thread(self._notify_hold, hold, notify)
        in_flight = [
            message_id
            for message_id, active in self._state.active.items()
            if Identity.of(active.envelope).value(hold.scope) == hold.key
        ]
        waiting = self._state.due.waiting_ids()
        ids = await asyncio.to_thread(mail_of, self._queue, hold.scope, hold.key, waiting)
        outcome = await self._outcomes.apply(ids, QueueAction.HOLD, held_by=hold.hold_id)
        outcome.in_flight.extend(in_flight)  # held after their attempt
        return outcome

    def _notify_hold(self, hold: Hold, notify: str) -> None:
        names = self._names()
        report = build_hold_notice(hold, notify, names.me, names.bounce_sender)
        envelope = Envelope("", (notify,), self._clock(), MessageKind.NORMAL, Origin("engine"))
        self._queue.inject(envelope, report)
        self._check_new()

    async def adopt_shared_holds(self) -> None:
        """Holds another engine recorded in Redis become ours (and hold our mail of theirs)."""
        for hold in await self._policy.holds_of_other_nodes():
            await self.put_on_hold(hold, None, publish=False)

    async def end_hold(self, hold_id: str, action: HoldAction) -> ActionOutcome:
        """Release or purge a sender hold: the record goes first, then the mail it held."""
        if await self._policy.end(hold_id) is not None:
            log.info("hold on %s ended (%s) by the mail administrator", hold_id, action.value)
        held = list(self._state.held)
        ids = await asyncio.to_thread(messages_held_by, self._queue, hold_id, held)
        queue_action = QueueAction.RELEASE if action is HoldAction.RELEASE else QueueAction.DELETE
        return await self._outcomes.apply(ids, queue_action)

    async def hold_by_operator(self, hold: Hold) -> ActionOutcome:
        """A hold the mail administrator added: the sender's mail is held as by a breaker
        (nothing, if that hold is already in force)."""
        if not self._policy.add(hold):
            return ActionOutcome()
        return await self.put_on_hold(hold, None)
