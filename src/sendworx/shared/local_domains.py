"""Which domains are this host itself, whose mail is delivered to local mailboxes
(`maildir.py`) instead of going out: `localhost`, the host's name, `helo_name`, `me`, and
every line of the `locals` control file (qmail's: one domain per line). Never routed
elsewhere, not even by a catch-all `smtproutes` line, as in qmail.
"""

from __future__ import annotations

import socket
from pathlib import Path

LOCALS_FILE = "locals"


def read_locals(control_dir: Path) -> list[str]:
    """The `locals` control file's domains ([] when there is none)."""
    try:
        text = (control_dir / LOCALS_FILE).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return [line.strip().lower().rstrip(".") for line in text.splitlines() if line.strip()]


def local_domains(control_dir: Path, *names: str) -> frozenset[str]:
    """`names` (helo_name, `me`) and the host's own names, with the `locals` file's."""
    own = {"localhost", "localhost.localdomain", socket.gethostname(), *names}
    own.update(read_locals(control_dir))
    return frozenset(name.lower().rstrip(".") for name in own if name and not name.startswith("#"))


def is_local(address: str, domains: frozenset[str]) -> bool:
    return address.rpartition("@")[2].lower().rstrip(".") in domains
