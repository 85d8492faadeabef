"""Root, on an installed server, acts as the service's account: whatever the command line
writes (control files, queue state, keys) stays the service's, as its own processes write it.
"""

from __future__ import annotations

import os
import pwd


def become(user: str) -> None:
    """Drop root for `user`'s uid, gid and no supplementary groups."""
    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.environ["HOME"] = entry.pw_dir
