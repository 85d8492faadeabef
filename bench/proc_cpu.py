"""CPU time a process has used, for the benchmarks' per-request and per-cascade figures, and
a process tree's (`python3 bench/proc_cpu.py PID` prints its user and system clock ticks, for
`postfix_relay.sh`)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path


def process_cpu_ns(pid: int) -> int:
    """CPU time all of a process's threads have run so far (from schedstat, ns precision)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread just ended
            total += int((task / "schedstat").read_text().split()[0])
    return total


def tree_ticks(pid: int) -> tuple[int, int]:
    """User and system clock ticks of a process and everything under it, reaped included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    user, system = int(fields[11]) + int(fields[13]), int(fields[12]) + int(fields[14])
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            more = tree_ticks(int(child))
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile: counted in its parent's once reaped
        user, system = user + more[0], system + more[1]
    return user, system


if __name__ == "__main__":
    print(*tree_ticks(int(sys.argv[1])))
