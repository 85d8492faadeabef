"""Changing the control files: every value is checked first, then all the files an update
touches are replaced together, under a lock every process that writes them takes.

The panel and the in-process command line both write here; the lock (a flock on the control
directory) serialises them across processes, so concurrent updates leave the files of exactly
one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sendworx.shared.durable import replace_together
from sendworx.shared.file_lock import FileLock
from sendworx.shared.settings import (
    DOUBLE_BOUNCE_MESSAGES,
    INTEGER_SETTINGS,
    NAMES_BY_INPUT,
    ROUTES_FILE,
    ROUTES_INPUT,
    Settings,
    SettingsError,
    read_settings,
    validate_flag,
    validate_integer,
    validate_name,
    validate_routes,
)

_INTEGERS = {setting.input_name: setting for setting in INTEGER_SETTINGS}
_DOUBLE_BOUNCE_FILE = NAMES_BY_INPUT["double_bounce_to"].control_file


def settings_lock(control_dir: Path) -> FileLock:
    """Held while a writer reads, checks and replaces the control files: a flock on the
    directory itself, so no lock file sits among the control files."""
    control_dir.mkdir(parents=True, exist_ok=True)
    return FileLock(control_dir)


def planned_files(current: Settings, changes: Mapping[str, object]) -> dict[str, bytes | None]:
    """Every change checked, and what each control file it touches will hold (None: removed,
    back to its default). SettingsError names every bad input; nothing has been written."""
    problems: dict[str, str] = {}
    files: dict[str, bytes | None] = {}
    for name, value in changes.items():
        try:
            if name == ROUTES_INPUT:
                routes = validate_routes(value)
                files[ROUTES_FILE] = "".join(f"{route}\n" for route in routes).encode()
            elif name in _INTEGERS:
                number = validate_integer(_INTEGERS[name], value)
                files[_INTEGERS[name].control_file] = f"{number}\n".encode()
            elif name in NAMES_BY_INPUT:
                text = validate_name(NAMES_BY_INPUT[name], value)
                keeps_empty = name == "double_bounce_to"  # qmail: empty means "drop them"
                data = f"{text}\n".encode() if text or keeps_empty else None
                files[NAMES_BY_INPUT[name].control_file] = data
            elif name != DOUBLE_BOUNCE_MESSAGES:
                problems[name] = "is not a setting"
        except ValueError as error:
            problems[name] = str(error)
    if DOUBLE_BOUNCE_MESSAGES in changes:
        try:
            enabled = validate_flag(changes[DOUBLE_BOUNCE_MESSAGES])
        except ValueError as error:
            problems[DOUBLE_BOUNCE_MESSAGES] = str(error)
        else:
            if not enabled:
                files[_DOUBLE_BOUNCE_FILE] = b"\n"
            elif files.get(_DOUBLE_BOUNCE_FILE, b"") == b"\n" or (
                _DOUBLE_BOUNCE_FILE not in files and current.names.get("double_bounce_to") == ""
            ):
                files[_DOUBLE_BOUNCE_FILE] = None  # turned back on: the default recipient
    if problems:
        raise SettingsError(problems)
    return files


def update_settings(control_dir: Path, changes: Mapping[str, object]) -> Settings:
    """Check every change, then replace the files together; on any bad input write nothing."""
    with settings_lock(control_dir):
        files = planned_files(read_settings(control_dir), changes)
        if files:
            replace_together(control_dir, files)
    return read_settings(control_dir)
