"""Where mail for this host's own names goes: the aliases file (`/etc/aliases` when installed,
`<home>/aliases` otherwise), in the format every Unix MTA reads.

    # comment
    postmaster: root
    root: admin@example.com, alice
    abuse:
        alice,
        bob@example.net

A name maps to local names (mailboxes, themselves aliased in turn) and to addresses elsewhere
(the engine forwards a copy there). Names are matched without case. Expansion follows names
ten deep at most; a name met again on its own path is its own mailbox. Pipes (`|command`),
files (`/path`) and `:include:` are not supported: an MTA run by customers' sites never runs
commands from a file, so such targets are ignored and reported by `newaliases`.

Without an aliases file, `mailer-daemon` and `root` are `postmaster`, as in qmail's ~alias.
Pure: parsing text, expanding names; `AliasFile` only rereads the file when it changed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_ALIASES: dict[str, tuple[str, ...]] = {
    "mailer-daemon": ("postmaster",),
    "root": ("postmaster",),
}
MAX_DEPTH = 10
MAX_FILE_BYTES = 4 * 1024 * 1024
_NAME = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,63}$")


@dataclass(frozen=True)
class Aliases:
    table: dict[str, tuple[str, ...]]
    problems: tuple[str, ...] = ()  # lines ignored, for `newaliases` to report


@dataclass(frozen=True)
class Expansion:
    mailboxes: tuple[str, ...]  # local mailbox names
    remote: tuple[str, ...]  # addresses elsewhere


def parse_aliases(text: str) -> Aliases:
    table: dict[str, tuple[str, ...]] = {}
    problems: list[str] = []
    for number, entry in _entries(text):
        name, colon, targets_text = entry.partition(":")
        name = name.strip().lower()
        if not colon or not _NAME.match(name):
            problems.append(f"line {number}: not `name: target, ...`: {entry[:60]!r}")
            continue
        targets = []
        for target in (part.strip() for part in targets_text.split(",")):
            if not target:
                continue
            if target.startswith(("|", "/", ":include:", '"|')):
                problems.append(f"line {number}: {name}: {target[:40]!r} is not supported")
                continue
            if any(ch.isspace() or ord(ch) < 32 for ch in target) or len(target) > 320:
                problems.append(f"line {number}: {name}: bad target {target[:40]!r}")
                continue
            targets.append(target.lower() if "@" not in target else target)
        if name in table:
            problems.append(f"line {number}: {name} is given again; the later line wins")
        table[name] = tuple(targets)
    return Aliases(table, tuple(problems))


def _entries(text: str) -> list[tuple[int, str]]:
    """Logical lines: continuation lines (starting with white space) joined to the line above."""
    entries: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue  # as aliases(5): only whole lines are comments
        if line[:1] in (" ", "\t") and entries:
            first, joined = entries[-1]
            entries[-1] = (first, f"{joined} {line.strip()}")
        else:
            entries.append((number, line.rstrip()))
    return entries


def expand(name: str, aliases: Aliases, local_domains: frozenset[str]) -> Expansion:
    """Where mail for the local name `name` goes, aliases followed."""
    mailboxes: list[str] = []
    remote: list[str] = []

    def follow(current: str, path: tuple[str, ...]) -> None:
        targets = aliases.table.get(current)
        if targets is None or current in path or len(path) >= MAX_DEPTH:
            mailboxes.append(current)
            return
        for target in targets:
            local, at, domain = target.rpartition("@")
            if at and domain.lower().rstrip(".") not in local_domains:
                remote.append(target)
            else:
                follow((local if at else target).lower(), (*path, current))

    follow(name.lower(), ())
    return Expansion(tuple(dict.fromkeys(mailboxes)), tuple(dict.fromkeys(remote)))


@dataclass
class AliasFile:
    """The aliases file as last read; read again when its size or time changes."""

    path: Path
    _seen: tuple[int, int, int] | None = None
    _aliases: Aliases = field(default_factory=lambda: Aliases(DEFAULT_ALIASES))

    def current(self) -> Aliases:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self._seen, self._aliases = None, Aliases(DEFAULT_ALIASES)
            return self._aliases
        seen = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if seen != self._seen:
            with self.path.open("rb") as handle:
                text = handle.read(MAX_FILE_BYTES).decode("utf-8", "replace")
            self._aliases, self._seen = parse_aliases(text), seen
        return self._aliases
