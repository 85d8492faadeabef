"""Root, on an installed server, acts as the service's account: whatever the command line
writes (control files, queue state, keys) stays the service's, as its own processes write it.
"""

from __future__ import annotations

import os
import pwd

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
