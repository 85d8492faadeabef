"""Acting as another local account (for tests run as root): what a site's user could reach."""

from __future__ import annotations

import os
from collections.abc import Callable

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
