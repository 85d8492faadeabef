"""The queue index kept on disk between runs: whatever happened to the file or to the queue
while nothing watched it, a start followed by its check answers what the files say."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sendworx.shared import queue_index, queue_shape
from sendworx.shared.queue import Queue
from sendworx.shared.queue_actions import QueueAction, apply_to_files
from sendworx.shared.queue_format import DeliveryState, Envelope
from sendworx.shared.queue_index import QueueFilter, QueueIndex
from sendworx.shared.routes import RouteTable

NOW = 1_900_000_000.0
SRC = Path(__file__).resolve().parents[2] / "src"


def _queue(tmp_path: Path) -> Queue:
    return Queue(tmp_path / "queue").ensure()


def _inject(queue: Queue, sender: str, *recipients: str) -> str:
    return queue.inject(Envelope(sender, recipients, NOW), b"Subject: x\r\n\r\nbody\r\n")


def _open(queue: Queue, path: Path) -> QueueIndex:
    return QueueIndex(queue, lambda: RouteTable.from_lines([]), path, clock=lambda: NOW + 100)


def _listed(index: QueueIndex, selection: QueueFilter | None = None) -> list[str]:
    page, total = index.search(selection or QueueFilter(), set(), 1000)
    assert total == len(page)
    return [message["id"] for message in page]


def _truth(queue: Queue) -> list[str]:
    return sorted({*queue.message_ids(), *queue.pending_new_ids()})


def _fill(queue: Queue, count: int) -> list[str]:
    return [_inject(queue, f"s{n}@shop{n % 3}.test", f"u{n}@d{n % 5}.test") for n in range(count)]


def test_a_kept_index_is_answered_from_and_reads_nothing_unchanged(tmp_path: Path) -> None:
    queue, path = _queue(tmp_path), tmp_path / "index" / "queue.sqlite3"
    ids = _fill(queue, 30)
    first = _open(queue, path)
    assert first.status().state == "building" and first.status().reason == "there was none"
    first.check()
    assert first.status().state == "current" and _listed(first) == sorted(ids)
    first.close()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    again = _open(queue, path)
    assert again.status().state == "checking"
    assert _listed(again) == sorted(ids)  # at once, before its check
    again.check()
    assert again.status().total == 0 and again.status().state == "current"


def test_what_changed_while_nothing_watched_is_read_again_and_only_that(tmp_path: Path) -> None:
    queue, path = _queue(tmp_path), tmp_path / "queue.sqlite3"
    ids = _fill(queue, 40)
    queue.claim_new()
    index = _open(queue, path)
    index.check()
    index.close()
    # Down: one message delivered, one new (not claimed yet), one held, one given a reply,
    # one claimed meanwhile.
    queue.remove(ids[0])
    fresh = _inject(queue, "late@shop9.test", "x@d9.test")
    apply_to_files(queue, QueueAction.HOLD, [ids[1]], NOW)
    queue.write_state(
        ids[2], DeliveryState(attempts=1, last_errors={"u2@d2.test": "452 4.2.2 mailbox full"})
    )
    index = _open(queue, path)
    assert fresh not in _listed(index) and ids[0] in _listed(index)  # as it was
    index.check()
    assert index.status().total == 4  # gone, new, held, reply: nothing else read
    assert _listed(index) == _truth(queue)
    assert _listed(index, QueueFilter(state="held")) == [ids[1]]
    assert _listed(index, QueueFilter(reply="MAILBOX full")) == [ids[2]]
    assert _listed(index, QueueFilter(reply="2.2")) == [ids[2]]  # under 3: every reply read
    assert _listed(index, QueueFilter(sender="shop9.test")) == [fresh]
    queue.claim_new()
    index.check()
    assert index.status().total == 1  # moved from new/ to mess/
    page, _ = index.search(QueueFilter(sender="late@SHOP9.test"), set(), 10)
    assert [message["id"] for message in page] == [fresh]


def test_a_deleted_truncated_or_foreign_index_is_built_again(tmp_path: Path) -> None:
    queue, path = _queue(tmp_path), tmp_path / "queue.sqlite3"
    ids = _fill(queue, 300)
    index = _open(queue, path)
    index.check()
    index.close()
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.truncate(size // 2)
    damaged = _open(queue, path)
    assert damaged.status().state == "building", damaged.status()
    assert damaged.status().reason.startswith("it was damaged")
    damaged.check()
    assert _listed(damaged) == sorted(ids) and damaged.status().state == "current"
    damaged.close()
    path.write_bytes(b"not a database at all" * 100)
    garbage = _open(queue, path)
    assert garbage.status().reason.startswith("it was damaged")
    garbage.check()
    garbage.close()
    path.unlink()
    missing = _open(queue, path)
    assert missing.status().reason == "there was none"
    missing.check()
    assert _listed(missing) == sorted(ids)
    missing._db.execute("UPDATE meta SET value = '0' WHERE key = 'format'")
    missing.close()
    foreign = _open(queue, path)
    assert foreign.status().reason == "it was written by another version"
    foreign.check()
    assert _listed(foreign) == sorted(ids)


def test_damage_found_while_in_use_builds_it_again(tmp_path: Path) -> None:
    queue, path = _queue(tmp_path), tmp_path / "queue.sqlite3"
    ids = _fill(queue, 200)
    index = _open(queue, path)
    index.check()
    index._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the file itself
    # A failing disk, or another hand, scribbles over the file's pages while it is open...
    with path.open("r+b") as file:
        file.seek(4096)
        file.write(os.urandom(path.stat().st_size - 4096))
    index._db.execute("PRAGMA shrink_memory")  # ...and they are read from the file again
    index.refresh(ids[:5])  # a write meets the damage: a new file is started
    assert index.status().state == "building"
    index.check()
    assert _listed(index) == sorted(ids) and index.status().state == "current"


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from sendworx.shared import queue_index
    from sendworx.shared.queue import Queue
    from sendworx.shared.queue_index import QueueIndex
    from sendworx.shared.routes import RouteTable

    queue_index.READ_CHUNK = 20  # many small transactions: a kill lands inside one
    queue = Queue(Path(sys.argv[1]))
    index = QueueIndex(queue, lambda: RouteTable.from_lines([]), Path(sys.argv[2]))
    print("open", flush=True)
    while True:
        index.check()
        index.refresh(queue.message_ids())
    """
)


def test_kill_9_mid_write_leaves_an_index_the_next_start_repairs(tmp_path: Path) -> None:
    queue, path = _queue(tmp_path), tmp_path / "queue.sqlite3"
    ids = _fill(queue, 2000)
    queue.claim_new()
    for round_number in range(3):
        writer = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(queue.path), str(path)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(SRC)},
        )
        assert writer.stdout is not None and writer.stdout.readline() == b"open\n"
        time.sleep(0.3 + 0.4 * round_number)  # building, then rewriting what it has
        # The queue changes while the writer works and after it dies.
        apply_to_files(
            queue, QueueAction.HOLD, ids[round_number * 10 : round_number * 10 + 10], NOW
        )
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        queue.remove(ids[-1 - round_number])
        index = _open(queue, path)
        index.check()
        assert _listed_all(index) == _truth(queue)
        held, total = index.search(QueueFilter(state="held"), set(), 1000)
        assert total == len(held) == 10 * (round_number + 1)
        index.close()


def _listed_all(index: QueueIndex) -> list[str]:
    found, after = [], ""
    while True:
        page, _ = index.search(QueueFilter(), set(), 1000, after)
        found += [message["id"] for message in page]
        if len(page) < 1000:
            return found
        after = page[-1]["id"]


def test_the_shape_kept_as_rows_change_is_the_shape_counted_afresh(tmp_path: Path) -> None:
    """The summary's counts, changed with every write, equal a count of every row."""
    queue, path = _queue(tmp_path), tmp_path / "queue.sqlite3"
    rng = random.Random(7)
    index = _open(queue, path)
    ids: list[str] = []
    for step in range(400):
        choice = rng.random()
        if choice < 0.45 or not ids:
            recipients = [f"u{rng.randrange(50)}@d{rng.randrange(6)}.test" for _ in range(3)]
            ids.append(_inject(queue, f"s@shop{rng.randrange(4)}.test", *recipients))
        elif choice < 0.6:
            queue.remove(ids.pop(rng.randrange(len(ids))))
        elif choice < 0.75:
            apply_to_files(queue, QueueAction.HOLD, [rng.choice(ids)], NOW)
        else:
            message_id = rng.choice(ids)
            envelope = queue.read_envelope(message_id)
            first = envelope.recipients[0]
            queue.write_state(
                message_id,
                DeliveryState(
                    attempts=1,
                    delivered=[first] if rng.random() < 0.3 else [],
                    last_errors={r: f"45{rng.randrange(3)} try later" for r in envelope.recipients},
                ),
            )
        if step % 7 == 0:
            queue.claim_new()
        if step % 25 == 0:
            index.check()
    index.check()
    kept = index.summary(set(), limit=100)
    with index._lock:
        index._db.execute("BEGIN")
        queue_shape.recount(index._db)
        index._db.execute("COMMIT")
    assert index.summary(set(), limit=100) == kept
    assert kept["totals"]["messages"] == len(_truth(queue))


def test_every_way_of_counting_and_testing_a_filter_gives_the_same_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shortcuts (totals from the queue's shape; reply text matched by the candidates'
    replies, gathered from the text index, or tested message by message) answer alike."""
    queue = _queue(tmp_path)
    rng = random.Random(11)
    replies = ["452 4.2.2 mailbox full", "451 4.7.1 greylisted", "550 5.1.1 unknown user"]
    for number in range(120):
        recipients = [f"u{number}x{k}@d{rng.randrange(4)}.test" for k in range(rng.randrange(1, 3))]
        message_id = _inject(queue, f"s{number % 7}@shop{number % 3}.test", *recipients)
        if number % 4:
            state = DeliveryState(
                attempts=1, last_errors={r: rng.choice(replies) for r in recipients}
            )
            queue.write_state(message_id, state.on_hold(NOW) if number % 9 == 0 else state)
    queue.claim_new()
    index = _open(queue, tmp_path / "queue.sqlite3")
    index.check()
    active = set(_truth(queue)[::10])
    filters = [
        QueueFilter(),
        QueueFilter(state="deferred"),
        QueueFilter(state="held"),
        QueueFilter(state="new"),
        QueueFilter(state="active"),
        QueueFilter(reply="mailbox"),
        QueueFilter(reply="4.7"),
        QueueFilter(reply="ma"),
        QueueFilter(reply="mailbox", sender="shop1.test"),
        QueueFilter(reply="unknown", state="deferred", recipient="d2.test"),
        QueueFilter(destination="d3.test", older_than=10),
    ]

    def answers() -> list[tuple[list[str], int, list[str]]]:
        found = []
        for selection in filters:
            page, total = index.search(selection, active, 1000)
            found.append(([m["id"] for m in page], total, index.matching_ids(selection, active)))
        return found

    plain = answers()
    for ids, total, matching in plain:
        assert ids == matching and total == len(matching)
    assert plain[5][1] > 0 and plain[3][1] > 0 and plain[4][1] == len(active)
    with monkeypatch.context() as patched:
        patched.setattr(queue_index, "NEAR_CANDIDATES", 0)  # never by the other filters
        assert answers() == plain  # found by the text index, gathered
        patched.setattr(queue_index, "DENSE_REPLY", 1)
        assert answers() == plain  # found by the text index, each message tested
    monkeypatch.setattr(queue_index, "NEAR_CANDIDATES", 10**9)
    assert answers() == plain  # with another filter: each candidate's replies matched


def test_an_index_that_cannot_be_kept_or_written_never_stops_the_answers(
    tmp_path: Path,
) -> None:
    queue = _queue(tmp_path)
    ids = _fill(queue, 10)
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the index's directory would be")
    index = _open(queue, blocked / "queue.sqlite3")
    assert index.status().reason.startswith("kept in memory")
    index.check()
    assert _listed(index) == sorted(ids)
    kept = _open(queue, tmp_path / "index" / "queue.sqlite3")
    kept.check()
    (pages,) = kept._db.execute("PRAGMA page_count").fetchone()
    kept._db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full
    late = [_inject(queue, f"late{n}@shop.test", f"x{n}@d.test") for n in range(300)]
    kept.refresh(late)
    assert kept.needs_check() and "full" in kept.status().reason
    assert _listed(kept) == sorted(ids)  # answers go on, as they were
    kept._db.execute("PRAGMA max_page_count = 1000000")  # room again
    kept.check()
    assert not kept.needs_check() and _listed_all(kept) == sorted([*ids, *late])


def test_damage_met_in_the_middle_of_a_check_starts_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue, path = _queue(tmp_path), tmp_path / "queue.sqlite3"
    ids = _fill(queue, 120)
    monkeypatch.setattr(queue_index, "READ_CHUNK", 30)
    index = _open(queue, path)
    chunks = []
    refresh = index.refresh

    def damaging_refresh(wanted: list[str]) -> None:
        chunks.append(len(wanted))
        if len(chunks) == 2:  # the second chunk of the first build meets a damaged file
            index._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            with path.open("r+b") as file:
                file.seek(4096)
                file.write(os.urandom(path.stat().st_size - 4096))
            index._db.execute("PRAGMA shrink_memory")
        refresh(wanted)

    monkeypatch.setattr(index, "refresh", damaging_refresh)
    index.check()
    assert len(chunks) > 4  # started again after the damage
    assert index.status().state == "current" and _listed(index) == sorted(ids)
