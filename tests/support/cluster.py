"""A manager and its nodes: separate `sendworx panel` processes with their own homes and ports."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from support.instance import SendworxHome
from support.panel import Panel

NODES = "/nodeworx/cluster/nodes"


class Cluster:
    def __init__(self, root: Path, nodes: int, *, dns_port: int, timeout: float = 3.0) -> None:
        def panel(name: str) -> Panel:
            home = SendworxHome(root / name, dns_port=dns_port)
            home.write_config(cluster={"timeout_seconds": timeout})
            return Panel(home)

        self.manager = panel("manager")
        self.nodes = [panel(f"node{index}") for index in range(1, nodes + 1)]

    @property
    def panels(self) -> list[Panel]:
        return [self.manager, *self.nodes]

    def start(self) -> Cluster:
        for panel in self.panels:
            panel.start()
        return self

    def close(self) -> None:
        for panel in self.panels:
            panel.close()
            panel.home.close()

    @staticmethod
    def node_id(node: Panel) -> str:
        return f"127.0.0.1:{node.https_port}"

    def register(self, node: Panel, *, on: Panel | None = None, key: str | None = None) -> Any:
        """Registers `node` on the manager (or on another panel acting as one)."""
        registrar = on or self.manager
        data = {"hostname": self.node_id(node), "apikey": key or node.key}
        return registrar.call("add", data, controller=NODES)

    def register_all(self) -> None:
        for node in self.nodes:
            reply = self.register(node)
            assert reply["status"] == 0, reply


@contextlib.contextmanager
def one_node_cluster(root: Path, dns_port: int) -> Iterator[tuple[Cluster, Panel, str]]:
    """A manager with one registered node: the cluster, the node and its node_id."""
    cluster = Cluster(root, 1, dns_port=dns_port).start()
    try:
        cluster.register_all()
        [node] = cluster.nodes
        yield cluster, node, Cluster.node_id(node)
    finally:
        cluster.close()
