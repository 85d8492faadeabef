"""Answers one call for whoever is asking: authenticate, run it through the registry, and write
the audit line. Every interface (XML-RPC, SOAP, JSON, the web pages) calls through here.
"""

from __future__ import annotations

import logging
from typing import Any

from sendworx.api.auth import Authenticator
from sendworx.api.registry import Caller, Registry
from sendworx.shared import wire
from sendworx.shared.errors import ApiError
from sendworx.shared.wire import Call, Reply

log = logging.getLogger("sendworx.panel")
READ_ONLY_PREFIXES = ("is", "list", "query", "getSession")


class Dispatcher:
    def __init__(
        self, registry: Registry, authenticator: Authenticator, max_request_bytes: int
    ) -> None:
        self.registry = registry
        self.authenticator = authenticator
        self.max_request_bytes = max_request_bytes  # the largest request body any format reads

    async def dispatch(self, request: wire.Request, peer: str, transport: str) -> Reply:
        try:
            caller = await self.authenticator.authenticate(request.auth, peer)
        except ApiError as error:
            reply = Reply.from_error(error)
        except Exception:
            # A broken users file must still answer in the API's format, not as an HTTP 500.
            log.exception("authentication failed unexpectedly")
            reply = Reply.internal_error()
        else:
            return await self.run(caller, request.call, transport)
        _audit(reply, request.call, peer, "-", transport)
        return reply

    async def run(self, caller: Caller, call: Call[Any], transport: str) -> Reply:
        """The call for a caller already authenticated (a web page's session)."""
        reply = await self.registry.run(caller, call)
        _audit(reply, call, caller.peer, caller.email, transport)
        return reply


def _audit(reply: Reply, call: Call[Any], peer: str, email: str, transport: str) -> None:
    # Monitoring polls (successful reads) at DEBUG; changes and failures are the audit trail.
    quiet = reply.status == 0 and call.action.startswith(READ_ONLY_PREFIXES)
    level = logging.DEBUG if quiet else logging.INFO
    if not log.isEnabledFor(level):  # the usual case for a poll: no arguments to build
        return
    log.log(
        level,
        "api %s peer=%s user=%s controller=%r action=%r status=%d",
        transport,
        peer,
        email,
        call.controller[:100],
        call.action[:100],
        reply.status,
    )
