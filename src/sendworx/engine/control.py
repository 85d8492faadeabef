"""The engine's control socket, both ends: the engine answers `status`, `retry`, `reload`,
`active` and `queue` (an operator's action on messages); the panel's backend and the command
line ask.

Kept apart from the queue manager so that asking for one status line does not load the
engine (dnspython, prometheus). One request per connection: a command name, optionally a
space and a JSON argument, on one line; one JSON line back. Only root and the instance's
owner get an answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from sendworx.shared import unix_sockets
from sendworx.shared.instance import Instance

Command = Callable[[Any], Awaitable[Mapping[str, object]]]
Admit = Callable[[int, dict[str, Any]], Awaitable[Mapping[str, object]]]
_PEERCRED = struct.Struct("3i")
COMMAND_TIMEOUT_SECONDS = 5.0
MAX_REQUEST_BYTES = 4 * 1024 * 1024  # a queue action on some thousands of ids
# The admission socket is open to every local account: small requests, few at a time.
MAX_ADMISSION_BYTES = 4096
MAX_ADMISSION_CONNECTIONS = 64


async def serve_control(path: Path, commands: Mapping[str, Command]) -> asyncio.AbstractServer:
    """Listen on `path` and answer each connection's one command with one JSON line."""

    async def respond(uid: int, line: str) -> Mapping[str, object]:
        if uid not in (0, os.getuid()):
            return {"error": "permission denied"}
        name, _, text = line.partition(" ")
        run = commands.get(name)
        if run is None:
            return {"error": f"unknown command {name[:40]!r}"}
        try:
            argument = json.loads(text) if text else None
        except ValueError:
            return {"error": "the argument is not JSON"}
        return await run(argument)

    return await _serve(path, respond, mode=0o600, limit=MAX_REQUEST_BYTES)


async def serve_admission(path: Path, admit: Admit) -> asyncio.AbstractServer:
    """Listen on `path` for injectors of every local account (`shared/admission.py`); `admit`
    gets the caller's uid, which the kernel vouches for, with its request."""

    async def respond(uid: int, line: str) -> Mapping[str, object]:
        try:
            request = json.loads(line)
        except ValueError:
            return {"error": "the request is not JSON"}
        if not isinstance(request, dict):
            return {"error": "expected {sender, account, recipients}"}
        return await admit(uid, request)

    return await _serve(
        path, respond, mode=0o666, limit=MAX_ADMISSION_BYTES, most=MAX_ADMISSION_CONNECTIONS
    )


async def _serve(
    path: Path,
    respond: Callable[[int, str], Awaitable[Mapping[str, object]]],
    *,
    mode: int,
    limit: int,
    most: int | None = None,
) -> asyncio.AbstractServer:
    """`most`: connections served at once; more are closed when accepted, so that nobody
    who may connect can spend the engine's file descriptors or memory."""
    open_now = 0

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        unix_sockets.bind(listener, path)
        os.chmod(path, mode)
    except BaseException:
        listener.close()
        raise

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_now
        if most is not None and open_now >= most:
            writer.close()  # an injector asking then goes ahead: limits fail open
            return
        open_now += 1
        try:
            peer = writer.get_extra_info("socket")
            _, uid, _ = _PEERCRED.unpack(
                peer.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            )
            async with asyncio.timeout(COMMAND_TIMEOUT_SECONDS):
                line = (await reader.readline()).decode("utf-8", "replace").strip()
            reply = await respond(uid, line)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, OSError, ValueError):
            pass  # ValueError: a line over MAX_REQUEST_BYTES
        finally:
            open_now -= 1
            writer.close()

    return await asyncio.start_unix_server(answer, sock=listener, limit=limit)


def query_engine(
    instance: Instance,
    command: str,
    timeout: float = COMMAND_TIMEOUT_SECONDS,
    argument: object = None,
) -> dict[str, Any]:
    """Ask a running engine over its control socket; raises OSError when none answers."""
    return ask_socket(instance.engine_control_socket, command, timeout, argument)


def ask_socket(
    path: Path, command: str, timeout: float = COMMAND_TIMEOUT_SECONDS, argument: object = None
) -> dict[str, Any]:
    """One command to a control socket served by `serve_control` (the engine's, the service
    supervisor's); OSError when nobody answers."""
    line = command if argument is None else f"{command} {json.dumps(argument)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        unix_sockets.connect(client, path)
        client.sendall(line.encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = client.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data:
        raise ConnectionError("the engine closed the control connection without an answer")
    answer: dict[str, Any] = json.loads(data)
    return answer
