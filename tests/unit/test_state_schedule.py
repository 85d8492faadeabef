"""What the engine reads of each state file at start (DeliveryState.schedule_from_json) is what
the whole document says, whatever text peers and senders put in it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sendworx.shared.queue import Queue
from sendworx.shared.queue_format import (
    AttemptLog,
    DeliveryState,
    RecipientAttempt,
    RecipientFailure,
)

TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40) | st.sampled_from(
    ['"held": true', '{"attempts": 1, "next_attempt_at": 9, ', "held", '\\"held\\": true']
)
TIMES = st.floats(min_value=-1e12, max_value=1e21, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(
    attempts=st.integers(min_value=0, max_value=10**9),
    due=TIMES,
    held=st.booleans(),
    errors=st.dictionaries(TEXT, TEXT, max_size=3),
    failed=st.lists(st.builds(RecipientFailure, TEXT, TEXT, TEXT), max_size=2),
    replies=st.lists(TEXT, max_size=2),
)
def test_the_schedule_read_fast_is_the_documents(
    attempts: int,
    due: float,
    held: bool,
    errors: dict[str, str],
    failed: list[RecipientFailure],
    replies: list[str],
) -> None:
    history = [AttemptLog(1.0, tuple(RecipientAttempt(r, "deferred", r, r) for r in replies))]
    state = DeliveryState(
        attempts=attempts,
        next_attempt_at=due,
        held=held,
        last_errors=errors,
        failed=failed,
        history=history,
        held_by=next(iter(errors), ""),
    )
    data = state.to_json()
    assert DeliveryState.schedule_from_json(data) == (due, held)
    document = json.loads(data)
    compact = json.dumps(document, separators=(",", ":")).encode()  # not as we write: parsed
    assert DeliveryState.schedule_from_json(compact) == (due, held)


def test_a_state_file_that_is_not_a_document_is_refused(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "queue").ensure()
    message_id = "0662188230000000000000aa"
    assert queue.read_schedule(message_id) is None  # no state file: never tried
    (queue.state_dir / message_id).write_bytes(b"[1, 2]")
    with pytest.raises(ValueError):
        queue.read_schedule(message_id)
    long_history = DeliveryState(next_attempt_at=5.0, held=True, held_by="x" * 70_000)
    (queue.state_dir / message_id).write_bytes(long_history.to_json())
    assert queue.read_schedule(message_id) == (5.0, True)  # past the first read
