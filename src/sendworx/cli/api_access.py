"""How the command line reaches the API: in-process as the local master user, or over the
network with sendworx.client. Both answer a Call with a Reply, so commands do not care which."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, Protocol

from sendworx.api.controllers import api_for
from sendworx.api.registry import Caller
from sendworx.shared.instance import Instance
from sendworx.shared.wire import Call, Reply


class AccessDenied(Exception):
    pass


class ApiAccess(Protocol):
    def reply(self, call: Call[Any]) -> Reply: ...

    def close(self) -> None: ...


class LocalApi:
    """Runs actions in this process as the master user, as InterWorx's own `nodeworx -u` does.

    Only root and the instance's owner may: they can read the master key anyway, and they act
    with full rights on an instance that has no master user yet.
    """

    def __init__(self, instance: Instance) -> None:
        try:
            owner: int | None = instance.home.stat().st_uid
        except FileNotFoundError:
            owner = os.geteuid()
        except PermissionError:
            owner = None  # we cannot even look: certainly not the owner
        if os.geteuid() not in (0, owner):
            raise AccessDenied(
                f"run as root or as the owner of {instance.home}, or pass --url and --key-file"
            )
        self._api = api_for(instance)
        users = self._api.authenticator.users.users()
        master = next((user for user in users if user.master), None)
        # Before `sendworx init` there is no master user; the owner acts with full rights
        # anyway (the queue commands have always worked on a bare instance).
        name = master.email if master is not None else f"local operator (uid {os.geteuid()})"
        self._caller = Caller(name, frozenset(master.permissions if master else ()), True, "cli")
        # One event loop for every call, so connections to cluster nodes are reused and
        # closed by close(), before the loop ends.
        self._runner = asyncio.Runner()

    def reply(self, call: Call[Any]) -> Reply:
        return self._runner.run(self._api.registry.run(self._caller, call))

    def close(self) -> None:
        try:
            self._runner.run(self._api.cluster.aclose())
        finally:
            self._runner.close()

    def __enter__(self) -> LocalApi:
        return self

    def __exit__(self, *exception: object) -> None:
        self.close()


class RemoteApi:
    """A panel elsewhere, reached with an API key file (and a CA file for HTTPS)."""

    def __init__(self, url: str, key_file: Path, ca_file: Path | None) -> None:
        # The HTTP client loads here, not for the commands that act in this process.
        from sendworx.client import Client, ca_context

        verify = ca_context(str(ca_file)) if ca_file else True
        self._client = Client(url, key_file.read_text(), verify=verify)

    def reply(self, call: Call[Any]) -> Reply:
        return self._client.reply(call)

    def close(self) -> None:
        self._client.close()


class Refused(Exception):
    """A local call that failed; its message is what to print."""


def call_locally(instance: Instance, call: Call[Any], label: str) -> Any:
    """The payload of `call` run in this process as the local operator; Refused with the
    line to print (`sendworx <label>: <why>`) if it fails."""
    from sendworx.shared.errors import ApiError

    try:
        with LocalApi(instance) as api:
            return api.reply(call).payload_for(call)
    except (AccessDenied, ApiError, OSError) as error:
        raise Refused(f"sendworx {label}: {error}") from error
