"""Acting as another local account (for tests run as root): what a site's user could reach."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from support.instance import SendworxHome

NOBODY = 65534


def as_user(uid: int, work: Callable[[], str]) -> str:
    """Run `work` in a child process that has become `uid` and return what it said (or
    "error <ExceptionName>"). Open what must be reached through ancestors the account may
    not cross (a 0700 test directory) before calling."""
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child process)
        try:
            os.setuid(uid)
            os.write(writer, work().encode())
        except BaseException as error:
            os.write(writer, f"error {type(error).__name__}".encode())
        finally:
            os._exit(0)
    os.close(writer)
    os.waitpid(child, 0)
    answer = os.read(reader, 1000).decode()
    os.close(reader)
    return answer


def run_client(
    home: SendworxHome,
    client: Path,
    *arguments: str,
    message: bytes = b"Subject: hi\n\nhello\n",
    uid: int = 0,
    program: str = "sendmail",
) -> subprocess.CompletedProcess[bytes]:
    """The compiled sendmail client (or mailq, newaliases) run as `uid` against `home`'s
    submission daemon, as a site's PHP runs /usr/sbin/sendmail."""
    return subprocess.run(
        [program, *arguments],
        executable=client,
        input=message,
        capture_output=True,
        env={"SENDWORX_SUBMIT_SOCKET": str(home.instance.submission_socket)},
        user=uid,
        timeout=30,
    )
