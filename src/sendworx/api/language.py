"""InterWorx language tokens (`##LG_...##`) and their English text.

XML-RPC and SOAP return tokens verbatim; the JSON API adds their text beside them for people.
"""

from __future__ import annotations

import re
from typing import Any

ENGLISH = {
    "##LG_OUTBOUND_MAIL##": "Outbound Mail",
    "##LG_NOT_APPLICABLE##": "Not applicable",
}
_TOKEN = re.compile(r"##LG_[A-Z0-9_]+##")


def tokens_in(payload: Any) -> dict[str, str]:
    """Every token in the payload's strings that we can translate, with its text."""
    found: dict[str, str] = {}
    stack = [payload]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            found.update(
                (token, ENGLISH[token]) for token in _TOKEN.findall(value) if token in ENGLISH
            )
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return found
