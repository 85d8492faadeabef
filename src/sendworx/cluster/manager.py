"""The manager's side of clustering: register nodes, run an action on one, or cascade it to all.

Nodes are reached through their own XML-RPC API with sendworx.client, each pinned to the
certificate it presented when it was registered. Nothing here rolls back: a cascade reports.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from typing import TYPE_CHECKING, Any

from sendworx.client import calls
from sendworx.client.errors import ClientError
from sendworx.cluster.errors import (
    KeyNotAccepted,
    NodeRefusedKey,
    NodeUnreachable,
    RegistrationRefused,
    UnknownNode,
)
from sendworx.cluster.store import (
    LOCAL_NODE_NUMBER,
    Node,
    NodeError,
    NodeStore,
    node_number,
    parse_node_address,
)
from sendworx.shared.wire import Call, Reply

if TYPE_CHECKING:
    from sendworx.client.clients import AsyncClient

log = logging.getLogger("sendworx.cluster")
# The node refused our credentials: worth telling apart from the caller's own 401/403.
CREDENTIAL_STATUSES = (401, 403)


def fingerprint(certificate_pem: str) -> str:
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(certificate_pem)).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


class ClusterManager:
    def __init__(self, store: NodeStore, local_node: str, timeout: float) -> None:
        self.store = store
        self.local_node = local_node
        self.timeout = timeout
        # One client per node as registered (key and pinned certificate included), so calls
        # in a burst reuse a TLS connection and re-registering starts afresh. The clients
        # belong to the event loop that made them: one manager serves one loop.
        self._clients: dict[Node, AsyncClient] = {}

    def _client(self, node: Node) -> AsyncClient:
        from sendworx.client.clients import AsyncClient, pinned_context  # aiohttp: when needed

        client = self._clients.get(node)
        if client is None:
            client = AsyncClient(
                node.url,
                node.api_key,
                verify=pinned_context(node.certificate),
                timeout=self.timeout,
            )
            self._clients[node] = client
        return client

    async def aclose(self) -> None:
        """Closes every connection kept to a node (before the event loop ends)."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    def is_local(self, node_id: str) -> bool:
        """Whether `node_id` names this server: empty, its name, or its number (1)."""
        return node_id in ("", self.local_node) or node_number(node_id) == LOCAL_NODE_NUMBER

    def node(self, node_id: str) -> Node:
        node = self.store.get(node_id)
        if node is None:
            raise UnknownNode(f"no node {node_id[:100]!r} is registered")
        return node

    async def call(self, node: Node, call: Call[Any]) -> Reply:
        """One call to one node within the timeout; ClientError when it gives no reply."""
        try:
            return await asyncio.wait_for(self._client(node).reply(call), self.timeout)
        except TimeoutError as error:
            raise ClientError(f"no answer within {self.timeout:g} s") from error

    async def forget(self, node_id: str) -> Node | None:
        """Removes the node (by id or number), and closes the connections kept open to it."""
        removed = self.store.remove(node_id)
        if removed is not None:
            for node in [node for node in self._clients if node.node_id == removed.node_id]:
                await self._clients.pop(node).aclose()
        return removed

    async def run_on(self, node_id: str, call: Call[Any]) -> Reply:
        """What the node answered, as if it had been asked directly (`xxxOnNode`)."""
        node = self.node(node_id)
        try:
            reply = await self.call(node, call)
        except ClientError as error:
            raise NodeUnreachable(f"node {node_id}: {error}") from error
        if reply.status in CREDENTIAL_STATUSES:
            raise NodeRefusedKey(
                f"node {node_id} refused the registered API key ({reply.status}: {reply.payload})"
            )
        return reply

    async def cascade(self, local_payload: Any, call: Call[Any]) -> dict[str, Any]:
        """Replays `call` (never itself cascaded) on every node in parallel, after it succeeded
        here: {node_id: {status, payload}}, this node first."""
        nodes = self.store.nodes()
        async with asyncio.TaskGroup() as calls_in_flight:
            asked = [calls_in_flight.create_task(self._outcome(node, call)) for node in nodes]
        outcomes = [task.result() for task in asked]
        results: dict[str, Any] = {self.local_node: {"status": 0, "payload": local_payload}}
        results.update(zip((node.node_id for node in nodes), outcomes, strict=True))
        return results

    async def _outcome(self, node: Node, call: Call[Any]) -> dict[str, Any]:
        try:
            reply = await self.call(node, call)
        except ClientError as error:
            return {"status": 1, "payload": str(error)}
        if reply.status in CREDENTIAL_STATUSES:
            return {
                "status": reply.status,
                "payload": f"the node refused the registered API key: {reply.payload}",
            }
        return {"status": reply.status, "payload": reply.payload}

    async def register(self, address_text: str, api_key: str) -> Node:
        """Checks that the node answers with this key, and pins the certificate it presents."""
        try:
            address = parse_node_address(address_text)
        except NodeError as error:
            raise RegistrationRefused(str(error)) from error
        if address.node_id == self.local_node:
            raise RegistrationRefused("is this node itself")
        if self.store.get(address.node_id) is not None:
            raise RegistrationRefused(f"{address.node_id} is already registered")
        # One reason for every way of not being a sendworx node that takes this key: the
        # caller must not learn which ports are closed, open or speaking another protocol
        # (the details go to the log, for the operator).
        refused = RegistrationRefused(
            f"{address.node_id} is not a sendworx node answering over TLS (see the panel log)"
        )
        try:
            presented = await self._certificate(address.host, address.port)
        except (OSError, TimeoutError, ValueError, ssl.SSLError) as error:
            log.info("node %s: no TLS certificate: %s", address.node_id, error or "timed out")
            raise refused from error
        node = Node(address.node_id, address.url, api_key, presented, fingerprint(presented))
        try:
            reply = await self.call(node, calls.is_running())
        except ClientError as error:
            log.info("node %s: no API answer: %s", address.node_id, error)
            raise refused from error
        if reply.status in CREDENTIAL_STATUSES:
            raise KeyNotAccepted(f"{address.node_id} refused this key ({reply.payload})")
        if reply.status != 0:
            log.info("node %s: isRunning answered status %d", address.node_id, reply.status)
            raise refused
        return self.store.add(node)

    async def _certificate(self, host: str, port: int) -> str:
        """The certificate the node presents, fetched on the event loop (a thread for each
        would let a few slow nodes starve the pool the API's own work runs in)."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # we pin what it presents; trust comes later
        async with asyncio.timeout(self.timeout):
            _, writer = await asyncio.open_connection(host, port, ssl=context)
        try:
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        finally:
            writer.close()
        if not der:
            raise ValueError("no certificate presented")
        return ssl.DER_cert_to_PEM_cert(der)

    async def status(self, local: dict[str, Any]) -> list[dict[str, Any]]:
        """Every node's state, the manager first: for `sendworx status --cluster`."""
        nodes = self.store.nodes()
        async with asyncio.TaskGroup() as calls_in_flight:
            asked = [calls_in_flight.create_task(self._service_info(node)) for node in nodes]
        answers = [task.result() for task in asked]
        manager = {"node_id": self.local_node, "id": LOCAL_NODE_NUMBER, "role": "manager"}
        return [{**manager, **local}, *answers]

    async def _service_info(self, node: Node) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "node_id": node.node_id,
            "id": node.number,
            "role": "node",
            "url": node.url,
        }
        try:
            reply = await self.call(node, calls.service_info())
        except ClientError as error:
            return {**entry, "reachable": False, "running": None, "error": str(error)}
        if reply.status != 0 or not isinstance(reply.payload, dict):
            return {
                **entry,
                "reachable": True,
                "running": None,
                "error": f"status {reply.status}: {reply.payload}",
            }
        running = bool(reply.payload.get("is_running"))
        return {**entry, "reachable": True, "running": running, "error": ""}
