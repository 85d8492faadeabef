"""Printing payloads: plain text as InterWorx's `nodeworx` prints, JSON, or rich tables for people.

Plain text: scalars bare (booleans as 1 and 0), lists one item per line, structs as
`key: value` lines (a list inside a struct repeats its key; nested structs use dotted keys).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from rich.console import Console
from rich.table import Table


def plain_lines(payload: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(payload, Mapping):
        for key, value in payload.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, Mapping | list):
                yield from plain_lines(value, name)
            else:
                yield f"{name}: {_scalar(value)}"
    elif isinstance(payload, list):
        for item in payload:
            if prefix and not isinstance(item, Mapping | list):
                yield f"{prefix}: {_scalar(item)}"
            else:
                yield from plain_lines(item, prefix)
    else:
        yield _scalar(payload)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return "" if value is None else str(value)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def fancy() -> bool:
    """Rich output only for a person at a terminal; pipes and scripts get plain text."""
    return sys.stdout.isatty()


def print_table(title: str, rows: Mapping[str, Any]) -> None:
    if not fancy():
        for line in plain_lines(dict(rows)):
            print(line)
        return
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows.items():
        text = (
            "\n".join(plain_lines(value)) if isinstance(value, Mapping | list) else _scalar(value)
        )
        table.add_row(key, text or "-")
    Console().print(table)


def printable(text: str) -> str:
    """Shown at a terminal: no escape sequence from a hostile sender reaches it."""
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
