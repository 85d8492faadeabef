"""The manager's node registry: `panel/nodes.json`, mode 0600 (it holds each node's API key).

Like the user store it is checked on every use and re-read after every change, so the CLI
and a running panel agree.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from sendworx.shared.durable import atomic_write
from sendworx.shared.watched_file import WatchedFile

DEFAULT_PANEL_PORT = 2443
# This server, the manager or a standalone box, is node 1, as in InterWorx's cluster (billing
# modules send node_id "1" by default); registered nodes get 2, 3, ... and never a used one.
LOCAL_NODE_NUMBER = 1


class NodeError(ValueError):
    pass


@dataclass(frozen=True)
class NodeAddress:
    node_id: str  # the host as registered, with `:port` when it is not 2443
    url: str  # where its XML-RPC API answers
    host: str
    port: int


def parse_node_address(text: str) -> NodeAddress:
    """`host`, `host:port`, or an `https://` URL; keys never travel over plain HTTP."""
    text = text.strip()
    if not text or len(text) > 300 or any(ch.isspace() or ord(ch) < 32 for ch in text):
        raise NodeError("must be a host name, host:port or https:// URL")
    parts = urlsplit(text if "://" in text else f"https://{text}")
    if parts.scheme != "https":
        raise NodeError("must use https: the node's API key must not cross the network in clear")
    try:
        host, port = parts.hostname, parts.port or DEFAULT_PANEL_PORT
    except ValueError as error:
        raise NodeError(f"has a bad port: {error}") from error
    if not host:
        raise NodeError("has no host name")
    shown_host = f"[{host}]" if ":" in host else host
    node_id = shown_host if port == DEFAULT_PANEL_PORT else f"{shown_host}:{port}"
    return NodeAddress(node_id, f"https://{shown_host}:{port}/xmlrpc", host, port)


@dataclass(frozen=True)
class Node:
    node_id: str
    url: str
    api_key: str
    certificate: str  # PEM of the certificate it presented when registered: pinned
    fingerprint: str  # SHA-256 of that certificate, for people to compare
    added: float = field(default_factory=time.time)
    # A number too, as InterWorx clients name nodes: given at registration (2 and up; 1 is
    # the manager itself), stable for the node's life, never reused.
    number: int = 0

    def public(self) -> dict[str, object]:
        """What listings show: everything but the key."""
        return {
            "node_id": self.node_id,
            "id": self.number,
            "url": self.url,
            "fingerprint": self.fingerprint,
            "added": int(self.added),
        }


@dataclass(frozen=True)
class _Registry:
    nodes: tuple[Node, ...]
    next_number: int


def node_number(node_id: str) -> int | None:
    """The number `node_id` names (`"2"`, `"02"`), or None for a name."""
    return int(node_id) if node_id.isascii() and node_id.isdigit() else None


def _parse_nodes(content: bytes) -> _Registry:
    document = json.loads(content)
    nodes = [Node(**entry) for entry in document["nodes"]]
    top = max(
        [
            LOCAL_NODE_NUMBER,
            int(document.get("next_number", 1)) - 1,
            *(node.number for node in nodes),
        ]
    )
    numbered = []
    for node in nodes:
        # nodes.json from before numbers (0), or from when the first node took 1 before the
        # manager did: the next free numbers, in the file's order (written at the next save).
        if node.number <= LOCAL_NODE_NUMBER:
            top += 1
            node = replace(node, number=top)
        numbered.append(node)
    return _Registry(tuple(numbered), top + 1)


class NodeStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = WatchedFile(str(path), _parse_nodes)  # asked on every cascade

    def _registry(self) -> _Registry:
        return self._file.current() or _Registry((), LOCAL_NODE_NUMBER + 1)

    def nodes(self) -> list[Node]:
        return list(self._registry().nodes)

    def get(self, node_id: str) -> Node | None:
        """By its id (the host, as registered) or by its number."""
        number = node_number(node_id)
        return next(
            (
                node
                for node in self.nodes()
                if node.node_id == node_id or (number is not None and node.number == number)
            ),
            None,
        )

    def add(self, node: Node) -> Node:
        """Stores `node` with the next number (replacing one registered with the same id)."""
        registry = self._registry()
        numbered = replace(node, number=registry.next_number)
        nodes = [existing for existing in registry.nodes if existing.node_id != node.node_id]
        self._save([*nodes, numbered], registry.next_number + 1)
        return numbered

    def remove(self, node_id: str) -> Node | None:
        """Forgets the node named by id or number; the one removed, or None."""
        node = self.get(node_id)
        if node is None:
            return None
        registry = self._registry()
        kept = [existing for existing in registry.nodes if existing.node_id != node.node_id]
        self._save(kept, registry.next_number)
        return node

    def _save(self, nodes: list[Node], next_number: int) -> None:
        document = {"nodes": [asdict(node) for node in nodes], "next_number": next_number}
        atomic_write(self.path, (json.dumps(document, indent=2) + "\n").encode(), mode=0o600)
        self._file.forget()
