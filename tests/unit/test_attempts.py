"""How one delivery attempt's results fold into the message's next state."""

from __future__ import annotations

import copy
import random

from hypothesis import given
from hypothesis import strategies as st

from sendworx.engine.attempts import AttemptRecord, Outcome, RecipientResult, fold_attempt
from sendworx.shared.queue_format import DeliveryState, RecipientFailure

BIRTH = 1_000_000.0
LIFETIME = 3600


def _fold(
    results: list[RecipientResult], state: DeliveryState | None = None, now: float = BIRTH + 10
) -> AttemptRecord:
    return fold_attempt(
        state or DeliveryState(),
        results,
        birth=BIRTH,
        now=now,
        queue_lifetime=LIFETIME,
        rng=random.Random(0),
    )


def _result(recipient: str, outcome: Outcome, reply: str = "250 ok") -> RecipientResult:
    return RecipientResult(recipient, outcome, reply, f"{reply[0]}.0.0", "mx.test[192.0.2.1]:25")


def test_every_recipient_delivered_finishes_the_message() -> None:
    record = _fold([_result("a@x", Outcome.DELIVERED), _result("b@x", Outcome.DELIVERED)])
    assert record.finished and record.changed
    assert record.state.delivered == ["a@x", "b@x"] and record.state.failed == []
    assert record.attempt == 1


def test_a_deferral_keeps_the_message_for_qmails_next_retry_and_counts_the_attempt() -> None:
    results = [_result("a@x", Outcome.DELIVERED), _result("b@x", Outcome.DEFERRED, "451 later")]
    record = _fold(results, now=BIRTH)  # age 0: (isqrt(0) + 20)^2 = 400 s
    assert not record.finished and record.changed
    assert record.state.attempts == 1
    assert BIRTH + 400 <= record.state.next_attempt_at <= BIRTH + 400 + 20
    assert record.state.delivered == ["a@x"]
    assert record.state.last_errors == {"b@x": "451 later"}
    assert record.attempt == 1  # one attempt: both lines say so


def test_the_attempt_number_follows_earlier_deferrals() -> None:
    earlier = DeliveryState(attempts=2, next_attempt_at=BIRTH + 441, last_errors={"a@x": "451"})
    record = _fold([_result("a@x", Outcome.DELIVERED)], earlier, now=BIRTH + 441)
    assert record.attempt == 3 and record.finished
    assert record.state.last_errors == {}


def test_a_deferral_past_the_lifetime_is_a_failure_carrying_the_last_error() -> None:
    record = _fold([_result("a@x", Outcome.DEFERRED, "450 mailbox busy")], now=BIRTH + LIFETIME + 1)
    assert record.finished
    [failure] = record.state.failed
    assert failure == RecipientFailure(
        "a@x",
        "delivery time expired; last error: 450 mailbox busy",
        "4.4.7",
        "mx.test[192.0.2.1]:25",
    )
    [logged] = record.results
    assert logged.outcome is Outcome.FAILED and logged.status == "4.4.7"


def test_a_permanent_failure_is_kept_for_the_bounce() -> None:
    record = _fold([_result("a@x", Outcome.FAILED, "550 no such user")])
    assert record.finished
    assert record.state.failed == [
        RecipientFailure("a@x", "550 no such user", "5.0.0", "mx.test[192.0.2.1]:25")
    ]


def test_an_attempt_cut_short_leaves_the_message_as_it_was() -> None:
    before = DeliveryState(attempts=1, next_attempt_at=BIRTH + 400)
    record = _fold([_result("a@x", Outcome.SKIPPED)], before)
    assert not record.finished and not record.changed
    assert record.state == before and record.results == ()


def test_progress_in_an_attempt_cut_short_is_recorded_without_a_new_wait() -> None:
    before = DeliveryState(attempts=1, next_attempt_at=BIRTH + 400)
    record = _fold([_result("a@x", Outcome.DELIVERED), _result("b@x", Outcome.SKIPPED)], before)
    assert not record.finished and record.changed
    assert record.state.delivered == ["a@x"]
    assert (record.state.attempts, record.state.next_attempt_at) == (1, BIRTH + 400)


def test_no_results_at_all_finish_the_message() -> None:
    assert _fold([]).finished


outcomes = st.sampled_from(list(Outcome))
results = st.lists(
    st.builds(_result, st.from_regex(r"[a-e]@x", fullmatch=True), outcomes), max_size=8
).map(lambda found: list({result.recipient: result for result in found}.values()))


@given(results=results, late=st.booleans())
def test_every_tried_recipient_lands_in_exactly_one_place_and_the_old_state_is_untouched(
    results: list[RecipientResult], late: bool
) -> None:
    before = DeliveryState(attempts=1, next_attempt_at=BIRTH + 400, last_errors={"z@x": "451"})
    snapshot = copy.deepcopy(before)
    record = _fold(results, before, now=BIRTH + (LIFETIME + 1 if late else 10))
    assert before == snapshot
    tried = {result.recipient for result in results if result.outcome is not Outcome.SKIPPED}
    assert {result.recipient for result in record.results} == tried
    delivered = set(record.state.delivered)
    failed = {failure.recipient for failure in record.state.failed}
    waiting = set(record.state.last_errors) - {"z@x"}
    assert delivered | failed | waiting == tried
    assert not (delivered & failed) and not (delivered & waiting) and not (failed & waiting)
    assert record.finished == (not waiting and tried == {r.recipient for r in results})
    if late:
        assert not waiting
