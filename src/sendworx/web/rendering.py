"""Templates and the filters they format with: ages, times, sizes and counts for people.

Autoescaping is on everywhere; templates never mark text safe.
"""

from __future__ import annotations

import time
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from sendworx.api.language import ENGLISH


def age(seconds: float | int | None) -> str:
    """3 d 4 h, 2 h 5 min, 12 min, 40 s."""
    if seconds is None:
        return ""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"


def when(epoch: float | int | None) -> str:
    """A moment in UTC, the way the logs write it."""
    if not epoch:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def iso(epoch: float | int | None) -> str:
    if not epoch:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def size(count: int | None) -> str:
    value = float(count or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def number(count: int | None) -> str:
    return f"{count or 0:,}"


def words(token: object) -> str:
    """A language token (##LG_OUTBOUND_MAIL##) in English; other text as it is."""
    text = str(token)
    return ENGLISH.get(text, text)


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("sendworx.web", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    filters: dict[str, Any] = {
        "age": age,
        "when": when,
        "iso": iso,
        "size": size,
        "number": number,
        "words": words,
    }
    env.filters.update(filters)
    return env
