"""The engine's control socket, both ends: the engine answers `status`, `retry` and `reload`;
the panel's backend and the command line ask.

Kept apart from the queue manager so that asking for one status line does not load the
engine (dnspython, prometheus). Only root and the instance's owner get an answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
from collections.abc import Callable, Mapping
from typing import Any

from sendworx.shared.instance import Instance

Command = Callable[[], Mapping[str, object]]
_PEERCRED = struct.Struct("3i")
COMMAND_TIMEOUT_SECONDS = 5.0


async def serve_control(name: bytes, commands: Mapping[str, Command]) -> asyncio.AbstractServer:
    """Listen on `name` and answer each connection's one command with one JSON line."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(name)
    except BaseException:
        listener.close()
        raise

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer = writer.get_extra_info("socket")
            _, uid, _ = _PEERCRED.unpack(
                peer.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            )
            if uid not in (0, os.getuid()):
                writer.write(b'{"error": "permission denied"}\n')
                return
            async with asyncio.timeout(COMMAND_TIMEOUT_SECONDS):
                command = (await reader.readline()).decode("ascii", "replace").strip()
            run = commands.get(command)
            reply = run() if run is not None else {"error": f"unknown command {command[:40]!r}"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, OSError):
            pass
        finally:
            writer.close()

    return await asyncio.start_unix_server(answer, sock=listener)


def query_engine(
    instance: Instance, command: str, timeout: float = COMMAND_TIMEOUT_SECONDS
) -> dict[str, Any]:
    """Ask a running engine over its control socket; raises OSError when none answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.connect(instance.engine_control_name)
        client.sendall(command.encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = client.recv(65536)
            if not chunk:
                break
            data += chunk
    answer: dict[str, Any] = json.loads(data)
    return answer
