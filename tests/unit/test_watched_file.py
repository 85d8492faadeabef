"""WatchedFile: every kind of change another process can make shows at the next question."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sendworx.shared.durable import atomic_write
from sendworx.shared.watched_file import WatchedFile


def _reads(path: Path) -> tuple[WatchedFile[str], list[str]]:
    parsed: list[str] = []

    def parse(content: bytes) -> str:
        parsed.append(content.decode())
        return content.decode()

    return WatchedFile(str(path), parse), parsed


def test_unchanged_file_is_parsed_once(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    path.write_text("one")
    watched, parsed = _reads(path)
    assert [watched.current() for _ in range(3)] == ["one"] * 3
    assert parsed == ["one"]


def test_replaced_by_rename_with_the_same_size_and_time_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    path.write_text("one")
    watched, _ = _reads(path)
    assert watched.current() == "one"
    stamp = os.stat(path)
    atomic_write(path, b"two")
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # only the inode differs
    assert watched.current() == "two"


def test_written_in_place_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    path.write_text("one")
    watched, _ = _reads(path)
    assert watched.current() == "one"
    with path.open("w") as file:  # an editor that truncates and rewrites
        file.write("three")
    assert watched.current() == "three"


def test_deleted_is_none_and_created_again_is_read(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    watched, _ = _reads(path)
    assert watched.current() is None
    path.write_text("one")
    assert watched.current() == "one"
    path.unlink()
    assert watched.current() is None
    path.write_text("four")
    assert watched.current() == "four"


def test_a_parse_error_repeats_until_the_file_is_fixed(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    path.write_text("broken")

    def parse(content: bytes) -> str:
        if content == b"broken":
            raise ValueError("not valid")
        return content.decode()

    watched = WatchedFile(str(path), parse)
    for _ in range(2):
        with pytest.raises(ValueError):
            watched.current()
    atomic_write(path, b"fixed")
    assert watched.current() == "fixed"
