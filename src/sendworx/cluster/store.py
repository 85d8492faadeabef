"""The manager's node registry: `panel/nodes.json`, mode 0600 (it holds each node's API key).

Like the user store it is checked on every use and re-read after every change, so the CLI
and a running panel agree.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from sendworx.shared.durable import atomic_write
from sendworx.shared.watched_file import WatchedFile

DEFAULT_PANEL_PORT = 2443


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

    def public(self) -> dict[str, object]:
        """What listings show: everything but the key."""
        return {
            "node_id": self.node_id,
            "url": self.url,
            "fingerprint": self.fingerprint,
            "added": int(self.added),
        }


def _parse_nodes(content: bytes) -> tuple[Node, ...]:
    return tuple(Node(**entry) for entry in json.loads(content)["nodes"])


class NodeStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = WatchedFile(str(path), _parse_nodes)  # asked on every cascade

    def nodes(self) -> list[Node]:
        return list(self._file.current() or ())

    def get(self, node_id: str) -> Node | None:
        return next((node for node in self.nodes() if node.node_id == node_id), None)

    def add(self, node: Node) -> None:
        nodes = [existing for existing in self.nodes() if existing.node_id != node.node_id]
        self._save([*nodes, node])

    def remove(self, node_id: str) -> bool:
        nodes = self.nodes()
        kept = [node for node in nodes if node.node_id != node_id]
        if len(kept) == len(nodes):
            return False
        self._save(kept)
        return True

    def _save(self, nodes: list[Node]) -> None:
        document = {"nodes": [asdict(node) for node in nodes]}
        atomic_write(self.path, (json.dumps(document, indent=2) + "\n").encode(), mode=0o600)
        self._file.forget()
