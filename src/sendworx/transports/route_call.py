"""What XML-RPC and SOAP decode: `route(auth, controller, action, input)` into a Request.

Both formats share the arity and type rules here; each reports a violation in its own form.
"""

from __future__ import annotations

from collections.abc import Sequence

from sendworx.shared.wire import Call, Request

FAULT_PARSE = -32700
FAULT_METHOD = -32601
FAULT_PARAMS = -32602
FAULT_TOO_LARGE = -32000


class MalformedRequest(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def route_request(params: Sequence[object]) -> Request:
    """Three or four positional parameters; a missing `input` means no input."""
    if not 3 <= len(params) <= 4:
        raise MalformedRequest(
            FAULT_PARAMS, "route takes 4 parameters (auth, controller, action, input)"
        )
    auth, controller, action = params[:3]
    if not isinstance(controller, str) or not isinstance(action, str):
        raise MalformedRequest(FAULT_PARAMS, "controller and action must be strings")
    return Request(auth, Call(controller, action, params[3] if len(params) == 4 else None))
