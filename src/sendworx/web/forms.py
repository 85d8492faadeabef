"""A submitted form: the urlencoded body, read with the panel's size cap, as ordered fields.

Repeated names (checkboxes, the rows of the routes table) keep their order.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.requests import Request

from sendworx.transports.http_body import read_capped

MAX_FIELDS = 5_000  # 1,000 selected messages and the search beside them; routes have their own cap


class FormRefused(Exception):
    """The body is not a form this panel reads; the message says why."""


@dataclass(frozen=True)
class Form:
    fields: tuple[tuple[str, str], ...]

    def get(self, name: str, default: str = "") -> str:
        for key, value in self.fields:
            if key == name:
                return value
        return default

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.fields if key == name]

    def has(self, name: str) -> bool:
        return any(key == name for key, _ in self.fields)

    def subset(self, names: tuple[str, ...]) -> dict[str, str]:
        """The named fields that were sent (an unsent one is left to the API's default)."""
        return {name: self.get(name) for name in names if self.has(name)}


async def read_form(request: Request, limit: int) -> Form:
    """The form in the body; FormRefused for another content type or too many fields.
    TooLarge (from the body reader) for a body over `limit`."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise FormRefused("the pages send application/x-www-form-urlencoded forms")
    body = await read_capped(request, limit)
    try:
        fields = parse_qsl(
            body.decode("utf-8", "replace"),
            keep_blank_values=True,
            max_num_fields=MAX_FIELDS,
        )
    except ValueError as error:
        raise FormRefused(f"at most {MAX_FIELDS} fields") from error
    return Form(tuple(fields))
