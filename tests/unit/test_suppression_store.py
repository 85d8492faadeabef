"""The suppression list's store, the node's SQLite file and a cluster's Redis alike: strikes
within the window suppress, old ones don't; entries end; searches by address, domain and
part, with SQL's wildcards taken literally; the CSV export is safe to open in a spreadsheet;
addresses are checked."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.redis_server import RedisServer

from sendworx.shared.suppression import (
    Suppression,
    SuppressionList,
    SuppressionStore,
    normal_address,
)
from sendworx.shared.suppression_redis import RedisSuppressionStore

DAY = 86400.0
NOW = 1_800_000_000.0


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SuppressionList]:
    """Each test against the node's own file and against a cluster's Redis."""
    if request.param == "sqlite":
        yield SuppressionStore(tmp_path / "suppression" / "suppression.sqlite3")
        return
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield RedisSuppressionStore(server.url)
    finally:
        server.stop()


def _strike(store: SuppressionList, address: str, at: float) -> Suppression | None:
    return store.strike(address, at, "550 5.1.1 unknown", strikes=2, window=DAY, days=30)


def test_a_missing_list_suppresses_nothing(store: SuppressionList) -> None:
    assert store.generation() == 0
    assert store.in_force(NOW) == ({}, set())
    assert store.search("", "", NOW) == ([], 0)
    assert store.export_csv(NOW) == "address,since,until,reason,detail,added_by\r\n"


def test_strikes_within_the_window_suppress_and_older_ones_do_not(
    store: SuppressionList,
) -> None:
    assert _strike(store, "a@x.example", NOW - 2 * DAY) is None
    assert _strike(store, "a@x.example", NOW) is None  # the first is out of the window
    entry = _strike(store, "a@x.example", NOW + 60)
    assert entry is not None and entry.reason == "hard_bounces"
    assert entry.until == NOW + 60 + 30 * DAY and "2 hard bounces since" in entry.detail
    entries, struck = store.in_force(NOW + 120)
    assert set(entries) == {"a@x.example"} and struck == set()  # its strikes are spent
    assert store.in_force(entry.until)[0] == {}  # it ends
    assert store.prune(entry.until, DAY) == 1


def test_every_change_moves_the_generation(store: SuppressionList) -> None:
    seen = [store.generation()]
    store.add(Suppression("b@x.example", NOW, NOW + DAY, "operator"))
    seen.append(store.generation())
    assert store.remove(["b@x.example", "c@x.example"]) == ["b@x.example"]
    seen.append(store.generation())
    assert seen == sorted(set(seen))


def test_searches_by_address_domain_and_part_take_wildcards_literally(
    store: SuppressionList,
) -> None:
    for number, address in enumerate(("ann@shop.example", "bob@shop.example", "a_b@far.example")):
        store.add(Suppression(address, NOW + number, NOW + DAY, "operator"))
    assert [e.address for e in store.search("shop.example", "", NOW)[0]] == [
        "bob@shop.example",
        "ann@shop.example",
    ]
    assert store.search("@far.example", "", NOW)[1] == 1
    assert [e.address for e in store.search("ann", "", NOW)[0]] == ["ann@shop.example"]
    assert [e.address for e in store.search("a_b", "", NOW)[0]] == ["a_b@far.example"]
    assert [e.address for e in store.search("_", "", NOW)[0]] == ["a_b@far.example"]
    for hostile in ("%", "b_b", "' OR 1=1 --", "\\", "x" * 300):
        assert store.search(hostile, "", NOW) == ([], 0), hostile
    assert store.search("", "expired", NOW) == ([], 0)
    page, total = store.search("", "", NOW, page=2, per_page=2)
    assert total == 3 and [e.address for e in page] == ["ann@shop.example"]


def test_the_csv_export_cannot_run_formulas(store: SuppressionList) -> None:
    store.add(Suppression("=cmd@x.example", NOW, NOW + DAY, "operator", "=HYPERLINK(1)", "me"))
    rows = list(csv.reader(io.StringIO(store.export_csv(NOW))))
    assert rows[1][0] == "'=cmd@x.example" and rows[1][4] == "'=HYPERLINK(1)"
    assert rows[1][1] == "2027-01-15T08:00:00Z"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nobody",
        "a@",
        "@x.example",
        "a b@x.example",
        "a@x.example\n",
        "a@-x",
        "x" * 250 + "@x.example",
    ],
)
def test_what_is_not_an_address_is_refused(text: str) -> None:
    if text.endswith("\n"):  # surrounding space is trimmed, as the API trims
        assert normal_address(text) == "a@x.example"
        return
    with pytest.raises(ValueError):
        normal_address(text)


def test_addresses_are_kept_in_lower_case_without_brackets() -> None:
    assert normal_address(" <Ann@Shop.Example> ") == "ann@shop.example"
