"""Runs the panel: HTTPS and plain HTTP listeners for the same application in one process."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Iterator

import uvicorn

from sendworx.api.controllers import api_for
from sendworx.panel.app import create_app
from sendworx.panel.connection_guard import Limits, guarded_protocol
from sendworx.panel.queue_metrics import serve_queue_metrics
from sendworx.panel.tls import TlsFiles, ensure_certificates, host_names
from sendworx.shared.instance import Instance
from sendworx.shared.queue_index import QueueIndex
from sendworx.shared.queue_watch import QueueWatcher

log = logging.getLogger("sendworx.panel")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Two servers share one process; `serve_panel` handles the signals for both.
        yield


def tls_files(instance: Instance) -> TlsFiles:
    panel = instance.config.panel
    if panel.certificate is not None and panel.private_key is not None:
        return TlsFiles(panel.certificate, panel.private_key, None)
    return ensure_certificates(instance.tls_dir, host_names([instance.config.helo_name]))


async def _follow_queue(index: QueueIndex, instance: Instance) -> None:
    """Keep the queue index current while the panel runs (without it, every queue question
    would read the whole queue again)."""
    try:
        watcher = QueueWatcher(index, instance.control_dir)
    except OSError as error:
        log.error("cannot watch the queue (%s); each queue question reads it whole", error)
        return
    await watcher.run()


async def serve_panel(instance: Instance) -> None:
    panel = instance.config.panel
    api = api_for(instance)
    app = create_app(api.registry, api.authenticator, panel.max_request_bytes, instance.node_id)
    limits = Limits(
        header_seconds=panel.header_timeout_seconds,
        body_seconds=panel.body_timeout_seconds,
        max_connections=panel.max_connections,
        max_per_address=panel.max_connections_per_address,
    )
    common = {
        "host": panel.listen,
        # uvicorn's httptools protocol, with deadlines and connection caps (connection_guard)
        "http": guarded_protocol(limits),
        "log_level": "warning",
        "access_log": False,
        "lifespan": "off",
        # The peer address decides lockouts and goes into the audit log: believe a forwarded
        # one only from a proxy the operator named (uvicorn would trust any local client).
        "proxy_headers": bool(panel.trusted_proxies),
        "forwarded_allow_ips": panel.trusted_proxies or None,
    }
    servers = []
    if panel.https_port:
        tls = tls_files(instance)
        servers.append(
            _Server(
                uvicorn.Config(
                    app,
                    port=panel.https_port,
                    ssl_certfile=str(tls.certificate),
                    ssl_keyfile=str(tls.private_key),
                    **common,  # type: ignore[arg-type]
                )
            )
        )
    if panel.http_port:
        servers.append(_Server(uvicorn.Config(app, port=panel.http_port, **common)))  # type: ignore[arg-type]
    metrics = instance.config.metrics
    serve_queue_metrics(api.queue_index, metrics.listen, metrics.panel_port)
    # Everything built so far lives as long as the process: keep the cyclic GC from
    # re-scanning it on every collection (measured: a large share of per-request cost).
    gc.collect()
    gc.freeze()
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    # Blocked until now (cli/processes.py). The panel has nothing a SIGHUP rereads: one is
    # noted, not fatal, and the processes it starts (an engine) do not inherit the block.
    loop.add_signal_handler(signal.SIGHUP, lambda: log.info("SIGHUP: nothing to reread"))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    log.info(
        "panel listening on %s: https %s, http %s",
        panel.listen,
        panel.https_port or "off",
        panel.http_port or "off",
    )
    try:
        async with asyncio.TaskGroup() as tasks:
            watcher = tasks.create_task(_follow_queue(api.queue_index, instance))
            listeners = [tasks.create_task(server.serve()) for server in servers]
            await asyncio.wait(listeners)  # until both listeners have stopped
            watcher.cancel()
    finally:
        await api.cluster.aclose()  # connections to nodes belong to this loop
        await asyncio.to_thread(api.queue_index.close)
    log.info("panel stopped")
