"""Logging for every sendworx process: stderr plus a rotatable file under the instance.

One place decides the format so delivery lines look alike wherever they are read.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s"


def setup_logging(log_file: Path | None, *, verbose: bool = False) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.WatchedFileHandler(log_file, encoding="utf-8"))
        with contextlib.suppress(OSError):  # a log from an older version was world-readable
            log_file.chmod(0o600)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=FORMAT,
        handlers=handlers,
        force=True,
    )
