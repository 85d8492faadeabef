"""Many files made durable together (bulk holds and releases of state files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sendworx.shared.durable import SYNC_WORKERS, write_all_synced


@pytest.mark.parametrize("count", [3, 4 * SYNC_WORKERS])  # one by one, and by the workers
def test_every_file_is_written_or_none_is_left(tmp_path: Path, count: int) -> None:
    files = [(tmp_path / f"f{n}", f"state {n}".encode()) for n in range(count)]
    write_all_synced(files)
    assert [path.read_bytes() for path, _ in files] == [data for _, data in files]
    assert {oct(path.stat().st_mode & 0o777) for path, _ in files} == {"0o600"}
    for path, _ in files:
        path.unlink()
    # One that cannot be written (its directory is missing): the error is raised and the
    # others written meanwhile are gone, so nothing half-done is renamed into place.
    broken = [*files[:-1], (tmp_path / "missing" / "f", b"x")]
    with pytest.raises(FileNotFoundError):
        write_all_synced(broken)
    assert sorted(tmp_path.iterdir()) == []
