"""A search page's round trip: the filters asked in the query string and the page number,
one call to the API's listing action, and what the template needs of its answer (the
problems at their fields, or why there is no answer, and the links to the pages around)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

from sendworx.shared.errors import ValidationFailed
from sendworx.web.page import Page


async def run_search(
    page: Page, path: str, controller: str, action: str, names: Iterable[str], per_page: int
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The API's payload (None when it refused) and the template's context: `wanted`,
    `problems`, `unavailable`, `page_number`, `previous` and `next`."""
    params = page.request.query_params
    wanted = {name: params.get(name, "").strip() for name in names}
    wanted = {name: value for name, value in wanted.items() if value}
    asked = params.get("page", "1")
    number = max(int(asked), 1) if asked.isdigit() else 1
    reply = await page.call(controller, action, {**wanted, "page": number, "per_page": per_page})
    payload = reply.payload if reply.status == 0 else None
    refused = reply.status not in (0, ValidationFailed.status)

    def link(to: int) -> str:
        return f"{path}?{urlencode({**wanted, 'page': to})}"

    return payload, {
        "wanted": wanted,
        "problems": dict(reply.problems) if reply.status == ValidationFailed.status else {},
        "unavailable": str(reply.payload) if refused else "",
        "page_number": number,
        "previous": link(number - 1) if number > 1 else "",
        "next": link(number + 1) if payload is not None and payload.get("more") else "",
    }
