"""Who runs the command line. Root, on an installed server, acts as the service's account:
whatever it writes (control files, queue state, keys) stays the service's, as its own
processes write it. A site's account reads nothing of the instance: its commands
(`sendworx history`, `sendworx webhooks`) are answered by the submission daemon.
"""

from __future__ import annotations

import io
import json
import os
import pwd
import sys
from typing import Any

from sendworx.shared.instance import Instance


def become(user: str) -> None:
    """Drop root for `user`'s uid, gid and no supplementary groups."""
    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.environ["HOME"] = entry.pw_dir


def by_an_account(instance: Instance) -> bool:
    """Whether the caller is a local account, not root nor the instance's owner: such a
    caller may not even read the configuration, and is answered by the submission daemon,
    for its own mail only (`sendworx history`, `sendworx webhooks`)."""
    try:
        owner = instance.home.stat().st_uid
    except OSError:
        return True
    return os.geteuid() not in (0, owner)


def ask_submission_daemon(instance: Instance, argv: list[str]) -> dict[str, Any] | int:
    """What the submission daemon answers `argv` (a request with no input) as JSON, or the
    exit status when it refused (it said why on stderr)."""
    from sendworx.inject.submit_client import submit

    answer = io.BytesIO()
    with open(os.devnull, "rb") as nothing:
        status = submit(instance.submission_socket, argv, nothing, answer, sys.stderr.buffer)
    if status != 0:
        return status
    payload: dict[str, Any] = json.loads(answer.getvalue())
    return payload
