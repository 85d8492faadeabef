"""The five Outbound Mail settings: one table drives validation, defaults and control files.

Settings are qmail-style control files (one value and a newline; routes one per line),
written atomically, so a real qmail pointed at the same directory behaves the same.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from sendworx.shared.durable import atomic_write
from sendworx.shared.routes import Route, RouteError, RouteTable, parse_route

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IntegerSetting:
    """An integer control file with inclusive bounds."""

    input_name: str
    control_file: str
    default: int
    minimum: int
    maximum: int
    meaning: str


INTEGER_SETTINGS: tuple[IntegerSetting, ...] = (
    IntegerSetting(
        "concurrency_remote",
        "concurrencyremote",
        255,
        0,
        1000,
        "most simultaneous outbound SMTP connections; 0 holds remote delivery",
    ),
    IntegerSetting(
        "timeout_remote",
        "timeoutremote",
        600,
        1,
        86_400,
        "seconds to wait for each read or write with a remote server",
    ),
    IntegerSetting(
        "timeout_connect",
        "timeoutconnect",
        60,
        1,
        3_600,
        "seconds to wait for a TCP connect",
    ),
    IntegerSetting(
        "queue_lifetime",
        "queuelifetime",
        604_800,
        0,
        31_536_000,
        "seconds a message may stay queued before it is bounced",
    ),
)
ROUTES_INPUT = "smtp_routes"
ROUTES_FILE = "smtproutes"


_DEFAULTS = {setting.input_name: setting.default for setting in INTEGER_SETTINGS}


@dataclass(frozen=True)
class Settings:
    """Current values of every setting, as the engine uses them (defaults from the table)."""

    concurrency_remote: int = _DEFAULTS["concurrency_remote"]
    timeout_remote: int = _DEFAULTS["timeout_remote"]
    timeout_connect: int = _DEFAULTS["timeout_connect"]
    queue_lifetime: int = _DEFAULTS["queue_lifetime"]
    smtp_routes: tuple[Route, ...] = field(default_factory=tuple)

    @cached_property
    def route_table(self) -> RouteTable:
        return RouteTable(self.smtp_routes)

    def integer_values(self) -> dict[str, int]:
        """The integer settings by input name, in the table's order."""
        return {
            setting.input_name: getattr(self, setting.input_name) for setting in INTEGER_SETTINGS
        }

    def as_inputs(self) -> dict[str, object]:
        """Every setting by input name, as `queryUpdate` shows them."""
        return {**self.integer_values(), ROUTES_INPUT: [str(route) for route in self.smtp_routes]}


class SettingsError(ValueError):
    """One or more inputs are invalid; `problems` maps input name to a message."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        super().__init__("; ".join(f"{name}: {message}" for name, message in problems.items()))
        self.problems = dict(problems)


def validate_integer(setting: IntegerSetting, value: object) -> int:
    """Accept an int or a numeric string (PHP clients send both), or a whole float (JSON from
    JavaScript cannot tell 5 from 5.0); raise ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("must be an integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit() and value.isascii():
        number = int(value.strip())
    else:
        raise ValueError("must be an integer")
    if not setting.minimum <= number <= setting.maximum:
        raise ValueError(f"must be between {setting.minimum} and {setting.maximum}")
    return number


def validate_routes(value: object) -> tuple[Route, ...]:
    """Accept an array, a struct of strings, or one newline-separated string (a textarea)."""
    if isinstance(value, str):
        lines = [line.strip() for line in value.replace("\r\n", "\n").split("\n")]
    elif isinstance(value, Mapping):
        lines = list(value.values())
    elif isinstance(value, list | tuple):
        lines = list(value)
    else:
        raise ValueError("must be a list of routes")
    routes = []
    for number, line in enumerate(lines, start=1):
        if not isinstance(line, str):
            raise ValueError(f"route {number} must be a string")
        line = line.strip()
        if line == "":
            continue
        try:
            routes.append(parse_route(line))
        except RouteError as error:
            raise ValueError(f"route {number} ({line!r}): {error}") from error
    return tuple(routes)


def _read_integer(path: Path, setting: IntegerSetting) -> int:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return setting.default
    except (OSError, UnicodeDecodeError) as error:
        log.warning(
            "control file %s unreadable (%s); using default %d", path, error, setting.default
        )
        return setting.default
    first_line = text.split("\n", 1)[0].strip()
    try:
        return validate_integer(setting, first_line)
    except ValueError as error:
        log.warning(
            "control file %s holds %r (%s); using default %d",
            path,
            first_line[:80],
            error,
            setting.default,
        )
        return setting.default


def _read_routes(path: Path) -> tuple[Route, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ()
    except (OSError, UnicodeDecodeError) as error:
        log.warning("control file %s unreadable (%s); using no routes", path, error)
        return ()
    routes = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            routes.append(parse_route(line))
        except RouteError as error:
            log.warning("control file %s line %d skipped: %s", path, number, error)
    return tuple(routes)


def read_settings(control_dir: Path) -> Settings:
    """Read every control file; anything missing or garbled falls back to its default (logged)."""
    values: dict[str, int] = {
        setting.input_name: _read_integer(control_dir / setting.control_file, setting)
        for setting in INTEGER_SETTINGS
    }
    return Settings(**values, smtp_routes=_read_routes(control_dir / ROUTES_FILE))


def write_settings(control_dir: Path, changes: Mapping[str, object]) -> Settings:
    """Validate every change, then write the control files; on any bad input write nothing."""
    by_name = {setting.input_name: setting for setting in INTEGER_SETTINGS}
    problems: dict[str, str] = {}
    integers: dict[str, int] = {}
    routes: tuple[Route, ...] | None = None
    for name, value in changes.items():
        try:
            if name == ROUTES_INPUT:
                routes = validate_routes(value)
            elif name in by_name:
                integers[name] = validate_integer(by_name[name], value)
            else:
                problems[name] = "is not a setting"
        except ValueError as error:
            problems[name] = str(error)
    if problems:
        raise SettingsError(problems)
    control_dir.mkdir(parents=True, exist_ok=True)
    for name, number in integers.items():
        atomic_write(control_dir / by_name[name].control_file, f"{number}\n".encode())
    if routes is not None:
        atomic_write(control_dir / ROUTES_FILE, "".join(f"{route}\n" for route in routes).encode())
    return read_settings(control_dir)
