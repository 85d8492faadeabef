"""CPU time a process has used, for the benchmarks' per-request and per-cascade figures."""

from __future__ import annotations

import contextlib
from pathlib import Path


def process_cpu_ns(pid: int) -> int:
    """CPU time all of a process's threads have run so far (from schedstat, ns precision)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread just ended
            total += int((task / "schedstat").read_text().split()[0])
    return total
