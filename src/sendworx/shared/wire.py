"""The API's vocabulary on both sides of the wire: a call to an action, and the reply to it.

Clients build `Call`s and read `Reply`s; every wire format decodes a request into a `Request`
(the credentials and the call), and the registry answers the call with a `Reply`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sendworx.shared.errors import ApiError, ValidationFailed, error_for_reply

T = TypeVar("T")
SUCCESS_REPLY_CODE = 205
NO_INPUT: tuple[object, ...] = (None, "", [], {})  # missing, nil, empty string, array or struct


def _as_sent(payload: Any) -> Any:
    return payload


@dataclass(frozen=True)
class Call(Generic[T]):
    """One action of one controller with its input, and how a client converts the payload.

    `input` is what was sent: a struct of named inputs, or missing, nil, `{}` or `[]` for
    none; anything else is the registry's to refuse (status 11).
    """

    controller: str
    action: str
    input: Any = None
    convert: Callable[[Any], T] = field(default=_as_sent, compare=False, repr=False)

    def inputs(self) -> dict[str, Any]:
        """The input as a plain struct, for a client to send ({} for none)."""
        return dict(self.input) if isinstance(self.input, Mapping) else {}


@dataclass(frozen=True)
class Request:
    """What every wire format decodes a request into: who says they are asking, and the call."""

    auth: object
    call: Call[Any]


@dataclass(frozen=True)
class Reply:
    status: int
    payload: Any
    reply_code: int
    # Field -> message for a validation failure; the JSON API sends it structured.
    problems: Mapping[str, str] = field(default_factory=dict)
    internal: bool = False  # a bug on our side, not a failed action; HTTP adapters say 500

    @classmethod
    def internal_error(cls) -> Reply:
        return cls(1, "internal error; see the panel log", 500, internal=True)

    @classmethod
    def success(cls, payload: Any) -> Reply:
        return cls(0, payload, SUCCESS_REPLY_CODE)

    @classmethod
    def from_error(cls, error: ApiError) -> Reply:
        problems = error.problems if isinstance(error, ValidationFailed) else {}
        return cls(error.status, error.payload(), error.reply_code, problems)

    def as_struct(self) -> dict[str, Any]:
        return {"status": self.status, "payload": self.payload, "reply_code": self.reply_code}

    def payload_for(self, call: Call[T]) -> T:
        """The call's converted payload; a status other than 0 raises its ApiError subclass."""
        if self.status != 0:
            raise error_for_reply(self.status, self.payload, self.reply_code)
        return call.convert(self.payload)
