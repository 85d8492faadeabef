"""What a change's reply means to the person who asked: a notice, with one line per node when
the change was applied to every node of the cluster (`cascade_to_nodes`)."""

from __future__ import annotations

from collections.abc import Mapping

from sendworx.shared.errors import PartialFailure
from sendworx.shared.wire import Reply
from sendworx.web.session import Notice


def _node_lines(results: Mapping[str, object]) -> tuple[str, ...]:
    lines = []
    for node, result in results.items():
        if isinstance(result, Mapping) and result.get("status") == 0:
            lines.append(f"{node}: {result.get('payload')}")
        elif isinstance(result, Mapping):
            lines.append(f"{node}: failed (status {result.get('status')}): {result.get('payload')}")
        else:
            lines.append(f"{node}: {result}")
    return tuple(lines)


def change_notice(reply: Reply, done: str) -> Notice:
    """`done` names the change in words ("Outbound Mail stopped"): the API's own payload for
    it is the same generic line for every update."""
    payload = reply.payload
    if reply.status == 0:
        if isinstance(payload, Mapping):
            return Notice("ok", f"{done} on every node.", _node_lines(payload))
        return Notice("ok", f"{done}.")
    if reply.status == PartialFailure.status and isinstance(payload, Mapping):
        return Notice("error", f"{done} here, but not on every node.", _node_lines(payload))
    return Notice("error", str(payload))


def problems_of(reply: Reply) -> str:
    """A refusal in one line: each input's problem, or the error's text."""
    return "; ".join(f"{field}: {text}" for field, text in reply.problems.items()) or str(
        reply.payload
    )
