"""The local submission client in Python: what the compiled `/usr/sbin/sendmail` does, for
`sendworx sendmail` on an installed server (any account) and for tests to hold the compiled
one against. It carries argv and standard input to `run/submit.sock` and prints the answer;
it decides nothing (`submission_protocol.py`).
"""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from sendworx.inject.submission_protocol import ProtocolError, decode_reply, encode_request
from sendworx.shared import unix_sockets

EX_TEMPFAIL = 75
CHUNK = 64 * 1024
TIMEOUT_SECONDS = 600.0


def submit(
    path: Path, argv: Sequence[str], stdin: BinaryIO, stdout: BinaryIO, stderr: BinaryIO
) -> int:
    """The exit status; the daemon's words go to `stdout` and `stderr`."""
    program = os.path.basename(argv[0]) if argv else "sendmail"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            unix_sockets.connect(connection, path)
            reply = _exchange(connection, list(argv), stdin)
    except (OSError, TimeoutError) as error:
        stderr.write(
            f"{program}: the local mail submission service does not answer ({path}: "
            f"{error.strerror if isinstance(error, OSError) and error.strerror else error}); "
            "nothing was queued\n".encode()
        )
        return EX_TEMPFAIL
    try:
        status, out, err = decode_reply(reply)
    except ProtocolError:
        stderr.write(f"{program}: the submission service gave no answer; not queued\n".encode())
        return EX_TEMPFAIL
    stdout.write(out)
    stderr.write(err)
    return status


def _exchange(connection: socket.socket, argv: list[str], stdin: BinaryIO) -> bytes:
    """Send argv, then standard input until it ends or the answer starts coming; the answer.
    A daemon that has answered closes its end, so a send it no longer reads fails at once
    (EPIPE) instead of blocking."""
    connection.settimeout(TIMEOUT_SECONDS)
    connection.sendall(encode_request(argv))
    input_fd = stdin.fileno()
    while True:
        readable, _, _ = select.select([connection.fileno(), input_fd], [], [], TIMEOUT_SECONDS)
        if not readable:
            raise TimeoutError("no answer")
        if connection.fileno() in readable:
            break
        data = os.read(input_fd, CHUNK)
        if not data:
            connection.shutdown(socket.SHUT_WR)
            break
        try:
            connection.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            break
    reply = bytearray()
    while chunk := connection.recv(CHUNK):
        reply += chunk
    return bytes(reply)
