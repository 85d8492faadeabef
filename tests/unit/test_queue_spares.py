"""A finished message's file is kept in `spare/` and written over by the next injection: what
is read back is always exactly what was injected, and the spares stay few and small."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sendworx.shared.queue import SPARE_MAX_BYTES, Queue
from sendworx.shared.queue_actions import QueueAction, apply_to_files
from sendworx.shared.queue_format import DeliveryState, Envelope, header_notes

ENVELOPE = Envelope("a@o.test", ("u@x.test",), 1.0)


def _as_queued(content: bytes) -> tuple[Envelope, bytes]:
    """What reading back gives: the envelope as injected, with the size and the Subject the
    queue notes."""
    return replace(ENVELOPE, size=len(content), subject=header_notes(content)[1]), content


def _content(size: int, fill: bytes) -> bytes:
    return b"Subject: s\r\n\r\n" + fill * size + b"\r\n"


def _finish(queue: Queue, message_id: str) -> None:
    """What the engine does: claim the message, later retire it."""
    queue.claim_new()
    queue.retire(message_id)


# Sizes around the interesting edges: empty, one block, the spare limit, beyond it.
SIZES = st.one_of(
    st.integers(0, 5000), st.sampled_from([4096, SPARE_MAX_BYTES, SPARE_MAX_BYTES + 1])
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(st.tuples(SIZES, st.booleans()), min_size=1, max_size=25))
def test_what_is_read_back_is_what_was_injected_whatever_it_was_written_over(
    tmp_path_factory: object, steps: list[tuple[int, bool]]
) -> None:
    folder = tmp_path_factory.mktemp("queue")  # type: ignore[attr-defined]
    queue = Queue(folder).ensure()
    queue.spare_limit = 3
    queued: dict[str, bytes] = {}
    for number, (size, finish_one) in enumerate(steps):
        content = _content(size, bytes([0x41 + number % 26]))
        queued[queue.inject(ENVELOPE, content)] = content
        if finish_one and len(queued) > 1:
            oldest = next(iter(queued))
            _finish(queue, oldest)
            del queued[oldest]
            assert not queue.exists(oldest)
        spares = list(queue.spare_dir.iterdir())
        assert len(spares) <= queue.spare_limit
        assert all(spare.stat().st_size <= SPARE_MAX_BYTES for spare in spares)
        assert not list(queue.tmp_dir.iterdir())
    for message_id, content in queued.items():
        assert queue.read(message_id) == _as_queued(content)


def test_an_injection_takes_a_spare_and_a_retired_message_leaves_no_state(tmp_path: Path) -> None:
    queue = Queue(tmp_path).ensure()
    first = queue.inject(ENVELOPE, _content(3000, b"x"))
    queue.claim_new()
    queue.write_state(first, DeliveryState(attempts=1))
    inode = os.stat(queue.message_path(first)).st_ino
    queue.retire(first)
    assert [spare.name for spare in queue.spare_dir.iterdir()] == [first]
    assert queue.read_state(first) is None and not queue.exists(first)

    second = queue.inject(ENVELOPE, _content(10, b"y"))  # shorter: nothing of the old is left
    assert not list(queue.spare_dir.iterdir())
    assert os.stat(queue.new_dir / second).st_ino == inode
    assert queue.read(second) == _as_queued(_content(10, b"y"))


def test_an_operator_delete_keeps_nothing(tmp_path: Path) -> None:
    queue = Queue(tmp_path).ensure()
    message_id = queue.inject(ENVELOPE, _content(100, b"z"))
    queue.claim_new()
    assert apply_to_files(queue, QueueAction.DELETE, [message_id], 0.0).touched == [message_id]
    assert not list(queue.spare_dir.iterdir()) and not queue.exists(message_id)


def test_a_full_spare_folder_is_counted_again_before_it_grows(tmp_path: Path) -> None:
    """A restarted engine does not know how many spares there are: it counts before adding."""
    queue = Queue(tmp_path).ensure()
    ids = [queue.inject(ENVELOPE, _content(10, b"w")) for _ in range(4)]
    queue.claim_new()
    for message_id in ids[:2]:
        queue.retire(message_id)
    restarted = Queue(tmp_path)
    restarted.spare_limit = 2
    for message_id in ids[2:]:
        restarted.retire(message_id)
    assert sorted(spare.name for spare in queue.spare_dir.iterdir()) == sorted(ids[:2])
    assert not any(queue.exists(message_id) for message_id in ids)


def test_a_reader_never_takes_a_file_written_over_for_the_message_it_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = Queue(tmp_path).ensure()
    first = queue.inject(ENVELOPE, _content(10, b"a"))
    queue.claim_new()
    early = queue.open_message(first)  # a reader (the API's `show`) opened it just before ...
    queue.retire(first)  # ... the engine finished with it, and an injection wrote over it
    queue.inject(ENVELOPE, _content(10, b"b"))
    monkeypatch.setattr(queue, "open_message", lambda message_id: early)
    with pytest.raises(FileNotFoundError):
        queue.read(first)


def test_a_message_claimed_while_it_is_read_is_still_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = Queue(tmp_path).ensure()
    message_id = queue.inject(ENVELOPE, _content(10, b"c"))
    early = queue.open_message(message_id)  # in new/ ...
    queue.claim_new()  # ... now in mess/: the same file
    monkeypatch.setattr(queue, "open_message", lambda message_id: early)
    assert queue.read(message_id) == _as_queued(_content(10, b"c"))


def test_a_spare_that_cannot_be_written_is_dropped_and_a_file_created(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "queue").ensure()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (queue.spare_dir / ("0" * 24)).symlink_to(elsewhere)  # opening it for writing fails
    message_id = queue.inject(ENVELOPE, _content(10, b"d"))
    assert queue.read(message_id) == _as_queued(_content(10, b"d"))
    assert not list(queue.spare_dir.iterdir()) and not list(queue.tmp_dir.iterdir())
    assert elsewhere.is_dir() and not list(elsewhere.iterdir())
