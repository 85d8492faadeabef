"""Settings kept as qmail control files: the five Outbound Mail settings (`/nodeworx/mail/send`)
and the bounce and general mail server settings (`/nodeworx/mail/mta`).

One table per kind drives validation, defaults, the control files and `queryUpdate`. Reading
never fails (a garbled file means its default and a log line); `control_files.py` writes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from sendworx.shared.routes import Route, RouteError, RouteTable, is_hostname, parse_route

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
MAX_ROUTES = 10_000


@dataclass(frozen=True)
class NameSetting:
    """A name control file (qmail's `me`, `bouncehost`, ...): a host name, or a mailbox."""

    input_name: str
    control_file: str
    kind: str  # "host", "local part" or "mailbox" (a local part or local@host)
    default: str  # words for people; the value comes from `MailNames`
    meaning: str


NAME_SETTINGS: tuple[NameSetting, ...] = (
    NameSetting(
        "mailserver_hostname",
        "me",
        "host",
        "helo_name",
        "the EHLO name, the Received: host and the bounces' Reporting-MTA",
    ),
    NameSetting(
        "default_domain", "defaultdomain", "host", "me", "the domain added to bare user names"
    ),
    NameSetting("bounce_from", "bouncefrom", "local part", "MAILER-DAEMON", "bounces come from"),
    NameSetting("bounce_host", "bouncehost", "host", "me", "the bounce sender's host"),
    NameSetting(
        "double_bounce_to",
        "doublebounceto",
        "mailbox",
        "delivery.double_bounce_to (postmaster)",
        "who gets bounces that could not be delivered; empty: they are dropped",
    ),
    NameSetting(
        "double_bounce_host", "doublebouncehost", "host", "me", "added to a bare double_bounce_to"
    ),
)
NAMES_BY_INPUT = {setting.input_name: setting for setting in NAME_SETTINGS}
DOUBLE_BOUNCE_MESSAGES = "double_bounce_messages"  # 0: an empty doublebounceto, as qmail reads it
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}\Z")


@dataclass(frozen=True)
class MailNames:
    """Who this server says it is, where its bounces come from and where failed ones go."""

    me: str
    default_domain: str
    bounce_from: str
    bounce_host: str
    double_bounce_to: str  # "" when double bounces are dropped
    double_bounce_host: str

    @property
    def bounce_sender(self) -> str:
        """The From: of a bounce (its envelope sender is always the null sender)."""
        return f"{self.bounce_from}@{self.bounce_host}"

    @property
    def double_bounce_recipient(self) -> str | None:
        """Where double bounces go; None: they are dropped (an empty `doublebounceto`)."""
        if not self.double_bounce_to:
            return None
        if "@" in self.double_bounce_to:
            return self.double_bounce_to
        return f"{self.double_bounce_to}@{self.double_bounce_host}"


_DEFAULTS = {setting.input_name: setting.default for setting in INTEGER_SETTINGS}


@dataclass(frozen=True)
class Settings:
    """Current values of every setting, as the engine uses them (defaults from the tables)."""

    concurrency_remote: int = _DEFAULTS["concurrency_remote"]
    timeout_remote: int = _DEFAULTS["timeout_remote"]
    timeout_connect: int = _DEFAULTS["timeout_connect"]
    queue_lifetime: int = _DEFAULTS["queue_lifetime"]
    smtp_routes: tuple[Route, ...] = field(default_factory=tuple)
    # Name control files as they are (first line); a missing file is absent.
    names: Mapping[str, str] = field(default_factory=dict)

    @cached_property
    def route_table(self) -> RouteTable:
        return RouteTable(self.smtp_routes)

    def integer_values(self) -> dict[str, int]:
        """The integer settings by input name, in the table's order."""
        return {
            setting.input_name: getattr(self, setting.input_name) for setting in INTEGER_SETTINGS
        }

    def as_inputs(self) -> dict[str, object]:
        """The five Outbound Mail settings by input name, as `queryUpdate` shows them."""
        return {**self.integer_values(), ROUTES_INPUT: [str(route) for route in self.smtp_routes]}

    def mail_names(self, helo_name: str, double_bounce_to: str = "postmaster") -> MailNames:
        """The names in force: each control file, else its default (`me` is the config's
        helo_name, and `me` is the default host of the others)."""
        me = self.names.get("mailserver_hostname") or helo_name
        double = self.names.get("double_bounce_to")
        return MailNames(
            me=me,
            default_domain=self.names.get("default_domain") or me,
            bounce_from=self.names.get("bounce_from") or "MAILER-DAEMON",
            bounce_host=self.names.get("bounce_host") or me,
            double_bounce_to=double_bounce_to if double is None else double,
            double_bounce_host=self.names.get("double_bounce_host") or me,
        )


class SettingsError(ValueError):
    """One or more inputs are invalid; `problems` maps input name to a message."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        super().__init__("; ".join(f"{name}: {message}" for name, message in problems.items()))
        self.problems = dict(problems)


# -- validation of one value ----------------------------------------------------------------


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
    """Accept an array, a struct of strings, or one newline-separated string (a textarea).
    Each route keeps the text it was given; at most MAX_ROUTES of them."""
    if isinstance(value, str):
        lines: list[object] = list(value.replace("\r\n", "\n").split("\n"))
    elif isinstance(value, Mapping):
        lines = list(value.values())
    elif isinstance(value, list | tuple):
        lines = list(value)
    else:
        raise ValueError("must be a list of routes")
    if len(lines) > MAX_ROUTES:
        raise ValueError(f"at most {MAX_ROUTES} routes")
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
            raise ValueError(f"route {number} ({line[:80]!r}): {error}") from error
    return tuple(routes)


def validate_name(setting: NameSetting, value: object) -> str:
    """A host name, local part or mailbox; "" means "back to the default" (the file goes),
    except for double_bounce_to, where "" means double bounces are dropped."""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    text = value.strip()
    if text == "":
        return ""
    if setting.kind == "host":
        if not is_hostname(text.rstrip(".")):
            raise ValueError("must be a host name")
        return text.lower().rstrip(".")
    local, at, host = text.rpartition("@") if setting.kind == "mailbox" else ("", "", "")
    if at:
        if not _LOCAL_PART.match(local) or not is_hostname(host):
            raise ValueError("must be a user name or user@host")
        return f"{local}@{host.lower()}"
    if not _LOCAL_PART.match(text):
        raise ValueError("must be a user name (letters, digits and . _ - + without spaces)")
    return text


def validate_flag(value: object) -> bool:
    """0 or 1, as an int, a numeric string or a boolean (PHP clients send all three)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return value.strip() == "1"
    raise ValueError("must be 0 or 1")


# -- reading ---------------------------------------------------------------------------------


def _read_text(path: Path) -> str | None:
    """The file's text; None when it is missing or unreadable (logged)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        log.warning("control file %s unreadable (%s); using its default", path, error)
        return None


def _read_integer(path: Path, setting: IntegerSetting) -> int:
    text = _read_text(path)
    if text is None:
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
    text = _read_text(path)
    if text is None:
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


def _read_names(control_dir: Path) -> dict[str, str]:
    names: dict[str, str] = {}
    for setting in NAME_SETTINGS:
        path = control_dir / setting.control_file
        text = _read_text(path)
        if text is None:
            continue
        first_line = text.split("\n", 1)[0].strip()
        try:
            names[setting.input_name] = validate_name(setting, first_line)
        except ValueError as error:
            log.warning("control file %s holds %r (%s); using its default", path, text[:80], error)
    return names


def read_settings(control_dir: Path) -> Settings:
    """Read every control file; anything missing or garbled falls back to its default (logged)."""
    values: dict[str, int] = {
        setting.input_name: _read_integer(control_dir / setting.control_file, setting)
        for setting in INTEGER_SETTINGS
    }
    routes = _read_routes(control_dir / ROUTES_FILE)
    return Settings(**values, smtp_routes=routes, names=_read_names(control_dir))
