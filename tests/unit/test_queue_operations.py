"""An operator's actions on the queue files, and the index that lists and summarises them."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sendworx.engine.attempts import Outcome, RecipientResult, fold_attempt
from sendworx.shared.queue import Queue
from sendworx.shared.queue_actions import QueueAction, apply_to_files
from sendworx.shared.queue_format import HISTORY_LIMIT, DeliveryState, Envelope, MessageKind
from sendworx.shared.queue_index import QueueFilter, QueueIndex
from sendworx.shared.routes import RouteTable

NOW = 1_900_000_000.0


def test_held_time_is_given_back_to_the_lifetime_on_release() -> None:
    held = DeliveryState(attempts=1, next_attempt_at=NOW + 400).on_hold(NOW)
    assert held.held and held.held_since == NOW
    assert held.on_hold(NOW + 50) is held  # holding twice changes nothing
    released = held.released(NOW + 3600)
    assert not released.held and released.held_seconds == 3600
    assert released.next_attempt_at == 0.0  # due at once
    assert DeliveryState().released(NOW) == DeliveryState()  # only held mail is released
    # A day held, a day of lifetime: a deferral right after release is not yet a failure.
    result = RecipientResult("a@x", Outcome.DEFERRED, "451 later", "4.0.0")
    after = fold_attempt(released, [result], birth=NOW - 60, now=NOW + 3600, queue_lifetime=3600)
    assert not after.finished and after.results[0].outcome is Outcome.DEFERRED


def test_expiring_unholds_and_makes_the_message_due() -> None:
    state = DeliveryState(next_attempt_at=NOW + 400).on_hold(NOW).to_expire()
    assert state.expire and not state.held and state.next_attempt_at == 0.0


def test_the_history_keeps_the_last_attempts() -> None:
    state = DeliveryState()
    for attempt in range(HISTORY_LIMIT + 3):
        result = RecipientResult("a@x", Outcome.DEFERRED, f"451 try {attempt}", "4.0.0", "mx")
        state = fold_attempt(
            state,
            [result],
            birth=NOW,
            now=NOW + attempt,
            queue_lifetime=10**6,
            rng=random.Random(0),
        ).state
    assert len(state.history) == HISTORY_LIMIT
    assert state.history[-1].results[0].reply == f"451 try {HISTORY_LIMIT + 2}"
    last = state.last_attempt("a@x")
    assert last is not None and last.remote == "mx"
    assert DeliveryState.from_json(state.to_json()) == state


def _queue(tmp_path: Path) -> Queue:
    return Queue(tmp_path / "queue").ensure()


def _inject(queue: Queue, sender: str, *recipients: str, birth: float = NOW) -> str:
    return queue.inject(Envelope(sender, recipients, birth), b"Subject: x\r\n\r\nbody\r\n")


@pytest.mark.parametrize(
    ("action", "check"),
    [
        (QueueAction.HOLD, lambda state: state is not None and state.held),
        (QueueAction.EXPIRE, lambda state: state is not None and state.expire),
        (QueueAction.RETRY, lambda state: state is None or state.next_attempt_at == 0.0),
    ],
)
def test_actions_change_the_files_of_existing_messages_only(
    tmp_path: Path, action: QueueAction, check: object
) -> None:
    queue = _queue(tmp_path)
    kept = _inject(queue, "a@o.test", "u@x.test")
    outcome = apply_to_files(queue, action, [kept, "0" * 24], NOW)
    assert outcome.touched == [kept] and outcome.missing == ["0" * 24]
    assert callable(check) and check(queue.read_state(kept))


def test_delete_removes_for_good_and_release_touches_only_held_mail(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    first, second = _inject(queue, "a@o.test", "u@x.test"), _inject(queue, "b@o.test", "v@x.test")
    apply_to_files(queue, QueueAction.HOLD, [first], NOW)
    released = apply_to_files(queue, QueueAction.RELEASE, [first, second], NOW + 10)
    assert released.touched == [first]
    deleted = apply_to_files(queue, QueueAction.DELETE, [first, first], NOW)
    assert deleted.touched == [first] and deleted.missing == [first]
    assert not queue.exists(first) and queue.read_state(first) is None and queue.exists(second)


def test_state_batches_leave_no_temporary_files(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    ids = [_inject(queue, "a@o.test", f"u{n}@x.test") for n in range(20)]
    apply_to_files(queue, QueueAction.HOLD, ids, NOW)
    assert sorted(queue.state_ids()) == sorted(ids)
    assert not [name for name in (queue.state_dir).iterdir() if name.name.startswith(".")]


def _index(queue: Queue, routes: str = "") -> QueueIndex:
    index = QueueIndex(
        queue, lambda: RouteTable.from_lines(routes.split()), clock=lambda: NOW + 100
    )
    index.check()
    return index


def test_the_index_filters_pages_and_summarises(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    shop = [_inject(queue, f"s{n}@Shop.test", f"b{n}@grey.test", birth=NOW - n) for n in range(5)]
    letter = _inject(queue, "news@letters.test", "boss@grey.test", "clerk@fine.test")
    bounce = queue.inject(
        Envelope("", ("s1@shop.test",), NOW, MessageKind.BOUNCE), b"Subject: bounce\r\n\r\n"
    )
    apply_to_files(queue, QueueAction.HOLD, [shop[0]], NOW)
    index = _index(queue, "fine.test:[192.0.2.9]:2525")

    def ids(selection: QueueFilter, active: set[str] | None = None) -> set[str]:
        return set(index.matching_ids(selection, active or set()))

    assert ids(QueueFilter(sender="shop.test")) == set(shop)
    assert ids(QueueFilter(sender="S3@SHOP.TEST")) == {shop[3]}
    assert ids(QueueFilter(recipient="fine.test")) == {letter}
    assert ids(QueueFilter(destination="[192.0.2.9]:2525")) == {letter}
    assert ids(QueueFilter(destination="grey.test")) == {*shop, letter}
    assert ids(QueueFilter(state="held")) == {shop[0]}
    assert ids(QueueFilter(state="active"), {shop[1]}) == {shop[1]}
    assert shop[1] not in ids(QueueFilter(state="new"), {shop[1]})
    assert ids(QueueFilter(kind="bounce")) == {bounce}
    assert ids(QueueFilter(older_than=102.5)) == {shop[3], shop[4]}
    assert ids(QueueFilter(reply="%")) == set()  # LIKE's wildcards are escaped
    page, total = index.search(QueueFilter(), set(), limit=3)
    assert total == 7 and len(page) == 3
    rest, _ = index.search(QueueFilter(), set(), limit=10, after=page[-1]["id"])
    assert {row["id"] for row in page + rest} == {*shop, letter, bounce}
    summary = index.summary(set())
    assert summary["totals"]["held"] == 1 and summary["totals"]["new"] == 6
    assert summary["destinations"][0]["destination"] == "grey.test"
    assert summary["destinations"][0]["messages"] == 6
    assert summary["sender_domains"][0] == {
        "domain": "shop.test",
        "messages": 5,
        "bytes": summary["sender_domains"][0]["bytes"],
        "oldest_age": 104,
    }


def test_the_index_follows_refreshes_and_reroutes(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    first = _inject(queue, "a@o.test", "u@x.test")
    routes = ["x.test:relay.example:2525"]
    index = QueueIndex(queue, lambda: RouteTable.from_lines(routes), clock=lambda: NOW)
    index.check()
    second = _inject(queue, "b@o.test", "v@x.test")
    queue.delete([first])
    index.refresh([first, second])
    assert index.matching_ids(QueueFilter(), set()) == [second]
    routes[:] = []
    index.reroute()
    assert index.matching_ids(QueueFilter(destination="x.test"), set()) == [second]


def test_a_summary_is_given_again_only_while_younger_than_max_age(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    first = _inject(queue, "a@o.test", "u@x.test")
    now = [NOW]
    index = QueueIndex(queue, lambda: RouteTable.from_lines([]), clock=lambda: now[0])
    index.check()
    assert index.summary(set(), max_age=5)["totals"]["messages"] == 1
    second = _inject(queue, "b@o.test", "v@x.test")
    index.refresh([second])
    now[0] += 4
    assert index.summary(set(), max_age=5)["totals"]["messages"] == 1  # young enough
    assert index.summary(set(), limit=10, max_age=5)["totals"]["messages"] == 2  # other limit
    assert index.summary(set())["totals"]["messages"] == 2  # max_age 0: the queue as it is
    queue.delete([first])
    index.refresh([first])
    now[0] += 6
    assert index.summary(set(), max_age=5)["totals"]["messages"] == 1


def test_the_content_alone_is_what_a_full_read_gives_and_refuses_the_same_files(
    tmp_path: Path,
) -> None:
    from sendworx.shared.queue_format import CorruptMessageError

    queue = Queue(tmp_path).ensure()
    content = b'Subject: x\r\n\r\n{"not": "an envelope"}\n.\r\n'
    message_id = queue.inject(Envelope("a@b.test", ("c@d.test",), 1.0), content)
    assert queue.read_content(message_id) == queue.read(message_id)[1] == content
    (queue.new_dir / message_id).rename(queue.messages_dir / message_id)  # claimed: same
    assert queue.read_content(message_id) == content
    for broken in (b"garbage", (queue.messages_dir / message_id).read_bytes()[:12]):
        (queue.messages_dir / message_id).write_bytes(broken)
        with pytest.raises(CorruptMessageError):
            queue.read_content(message_id)
    with pytest.raises(ValueError):
        queue.read_content("../state/x")
