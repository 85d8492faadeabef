"""The `sendworx smtpd` listener: SMTP submission into the queue.

The conversation is `smtp_session.py`'s; this module moves its bytes (one asyncio protocol per
connection) and queues what it hands out through the group committer.

A 250 after DATA means the message is on disk and fsynced. Peers outside `relay_networks`
cannot relay; a full disk answers 452 so the client keeps the message and tries later.
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import ipaddress
import json
import logging
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

from sendworx.inject.committer import GroupCommitter
from sendworx.inject.connection_limits import ConnectionLimits
from sendworx.inject.peer_account import is_loopback, peer_uid
from sendworx.inject.sendmail import account_name
from sendworx.inject.smtp_session import Message, ServerSession, SessionSettings, Step
from sendworx.shared.addresses import client_address
from sendworx.shared.admission import ask_async
from sendworx.shared.config import InstanceConfig
from sendworx.shared.queue import Queue, QueueWriteError
from sendworx.shared.queue_format import Envelope, Origin, new_message_id
from sendworx.shared.settings import MailNames

log = logging.getLogger("sendworx.smtpd")
BIND_PATIENCE_SECONDS = 3.0


def received_header(
    *, helo: str | None, peer: str, host: str, message_id: str, protocol: str, now: float
) -> bytes:
    helo_text = "".join(ch for ch in (helo or "unknown") if ch.isprintable() and ch != ";")[:200]
    stamp = email.utils.formatdate(now, localtime=False)
    return (
        f"Received: from {helo_text} ({peer})\r\n"
        f"\tby {host} (sendworx) with {protocol} id {message_id};\r\n"
        f"\t{stamp}\r\n"
    ).encode("utf-8", "replace")


class Submission:
    """What a worker's connections share: the session settings, who may relay, the
    connection caps and the idle timeout; and what is done with a finished message: ask the
    engine about `reject` limits, then queue it durably, the reply saying which."""

    def __init__(
        self,
        committer: GroupCommitter,
        config: InstanceConfig,
        host: str,
        admission: Path | None = None,
    ) -> None:
        self._committer = committer
        self.host = host  # `me`: named in Received: headers; changed on SIGHUP
        # Where to ask the engine about `reject` limits, while the policy has some (SIGHUP).
        self.admission = admission
        self._config = config
        self.idle_timeout = config.smtpd.idle_timeout_seconds  # RFC 5321 4.5.3.2: 5 minutes
        self.connections = ConnectionLimits(
            config.smtpd.max_connections, config.smtpd.max_connections_per_address
        )
        self._relay_networks = [
            ipaddress.ip_network(network, strict=False) for network in config.smtpd.relay_networks
        ]
        self.settings = self._settings()

    def _settings(self) -> SessionSettings:
        return SessionSettings(
            hostname=self.host,
            max_message_bytes=self._config.smtpd.max_message_bytes,
            max_recipients=self._config.smtpd.max_recipients,
        )

    def reload(self, host: str, admission: Path | None) -> None:
        """For the sessions that start afterwards (SIGHUP)."""
        self.host, self.admission = host, admission
        self.settings = self._settings()

    def may_relay(self, peer: str) -> bool:
        address = client_address(peer)
        return address is not None and any(address in net for net in self._relay_networks)

    async def queue(
        self, message: Message, peer: str, uid: int | None = None, account: str | None = None
    ) -> str:
        """The reply to the message: 250 once it is on disk and fsynced. `uid` and `account`:
        the local account the kernel says owns the client's socket (loopback clients)."""
        message_id = new_message_id()
        now = time.time()
        header = received_header(
            helo=message.helo,
            peer=peer,
            host=self.host,
            message_id=message_id,
            protocol="ESMTP" if message.extended else "SMTP",
            now=now,
        )
        sender = message.sender
        if self.admission is not None and sender:
            refusal = await ask_async(self.admission, sender, account, len(message.recipients))
            if refusal is not None:
                log.info(
                    "refused from=%s peer=%s: limit %s", json.dumps(sender), peer, refusal.rule
                )
                return refusal.smtp_reply()
        origin = Origin("smtpd", uid=uid, account=account, peer=peer)
        queued = Envelope(sender, message.recipients, now, origin=origin)
        try:
            await self._committer.inject(queued, header + message.content, message_id)
        except QueueWriteError as error:
            log.error("message from %s not queued: %s", peer, error)
            return "452 4.3.1 Insufficient system storage; try again later"
        log.info(
            "queued id=%s from=%s rcpts=%d size=%d peer=%s%s",
            message_id,
            json.dumps(sender),  # a JSON string, as in send.log: nothing raw reaches a terminal
            len(message.recipients),
            len(message.content),
            peer,
            "" if uid is None else f" uid={uid} account={json.dumps(account)}",
        )
        return f"250 2.0.0 Ok: queued as {message_id}"


class SubmissionProtocol(asyncio.Protocol):
    """One client connection: moves bytes between the socket and its `ServerSession`.

    Reading pauses while a message is being queued (the session keeps what was pipelined
    behind it) and while the client does not read our replies, so a connection holds at most
    a read's worth of input beyond what the session bounds."""

    def __init__(self, submission: Submission) -> None:
        self._submission = submission
        self._transport: asyncio.Transport | None = None
        self._session: ServerSession | None = None
        self._peer = "unknown"
        self._queueing: asyncio.Task[None] | None = None
        self._last_input = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._writing_paused = False
        self._admitted: bool | None = None  # counted by the limits (its exemption), or not
        self._uid: int | None = None  # the local account of a loopback client, by the kernel
        self._account: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP transport (uvloop's are not asyncio.Transport subclasses, but have its API).
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if isinstance(peer, tuple) else "local"
        submission = self._submission
        may_relay = not isinstance(peer, tuple) or submission.may_relay(self._peer)
        if not submission.connections.admit(self._peer, exempt=may_relay):
            busy = f"421 4.7.0 {submission.host} Error: too many connections\r\n"
            transport.write(busy.encode())
            transport.close()
            return
        self._admitted = may_relay
        if isinstance(peer, tuple) and is_loopback(self._peer):
            self._uid = _local_account(peer, transport.get_extra_info("sockname"))
            self._account = account_name(self._uid) if self._uid is not None else None
        self._session = ServerSession(submission.settings, may_relay=may_relay)
        transport.write(self._session.greeting())
        loop = asyncio.get_running_loop()
        self._last_input = loop.time()
        self._timer = loop.call_later(submission.idle_timeout, self._check_idle)

    def data_received(self, data: bytes) -> None:
        if self._session is None:
            return  # refused at the door, closing
        self._last_input = asyncio.get_running_loop().time()
        self._act(self._session.receive(data))

    def eof_received(self) -> bool | None:
        return False  # the client is done sending: close (mail not yet answered is not 250)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._admitted is not None:
            self._submission.connections.release(self._peer, exempt=self._admitted)
        self._transport = None
        # A message being queued is queued anyway: the client may retry it (no 250 seen).

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._update_reading()

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._writing_paused or self._queueing is not None:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _act(self, step: Step) -> None:
        transport = self._transport
        if transport is None:
            return
        if step.output:
            transport.write(step.output)
        if step.close:
            transport.close()
        elif step.message is not None:
            self._queueing = asyncio.ensure_future(self._queue(step.message))
            self._update_reading()

    async def _queue(self, message: Message) -> None:
        try:
            reply = await self._submission.queue(message, self._peer, self._uid, self._account)
        except Exception:  # a defect: the client keeps its message and tries later
            log.exception("message from %s not queued", self._peer)
            reply = "451 4.3.0 Error: internal error; try again later"
        self._queueing = None
        if self._transport is None:
            return
        assert self._session is not None
        self._update_reading()
        self._act(self._session.answered(reply))

    def _check_idle(self) -> None:
        assert self._session is not None
        loop = asyncio.get_running_loop()
        idle, limit = loop.time() - self._last_input, self._submission.idle_timeout
        if self._queueing is not None or idle < limit:
            self._timer = loop.call_later(max(limit - idle, 0.1), self._check_idle)
            return
        log.info("%s connection timed out", self._peer)
        self._act(self._session.timed_out())
        transport = self._transport
        if transport is not None and transport.get_write_buffer_size():
            transport.abort()  # replies it has not read: the close would wait on them for ever


def _local_account(peer: tuple[object, ...], local: object) -> int | None:
    """Who runs the loopback client: the kernel's word (`peer_account.py`); None if it
    cannot say (the client already gone)."""
    if not isinstance(local, tuple):
        return None
    try:
        return peer_uid((str(peer[0]), int(str(peer[1]))), (str(local[0]), int(str(local[1]))))
    except (OSError, ValueError) as error:
        log.warning("cannot tell which account runs %s: %s", peer[0], error)
        return None


def bind_listeners(
    config: InstanceConfig, patience: float = BIND_PATIENCE_SECONDS
) -> list[socket.socket]:
    """Bind before forking, so every worker accepts on the same sockets.

    A port still held is waited for, up to `patience` seconds: after a kill -9 of the
    listener, its workers close the sockets they share as they die, a moment after the pid
    lock (the parent's) is free. A port held longer belongs to someone else: OSError."""
    listeners: list[socket.socket] = []
    deadline = time.monotonic() + patience
    for address in config.smtpd.listen:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        said = False
        while True:
            try:
                listener = socket.create_server(
                    (address, config.smtpd.port), family=family, backlog=1024
                )
                break
            except OSError as error:
                if error.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                    for bound in listeners:
                        bound.close()
                    raise
                if not said:
                    log.warning(
                        "%s port %d is in use; waiting up to %.0f s for it to be let go",
                        address,
                        config.smtpd.port,
                        patience,
                    )
                    said = True
                time.sleep(0.02)
        listener.setblocking(False)
        listeners.append(listener)
    return listeners


async def serve(
    queue: Queue,
    config: InstanceConfig,
    listeners: list[socket.socket],
    read_names: Callable[[], MailNames],
    admission: Callable[[], Path | None] = lambda: None,
) -> None:
    """Serve until SIGTERM/SIGINT; sessions in progress are cut, unacknowledged mail is retried.
    SIGHUP rereads the name control files (`me`) and the sending policy (`admission`: where to
    ask about `reject` limits, None without any) for the sessions that start afterwards."""
    loop = asyncio.get_running_loop()
    committer = GroupCommitter(queue)
    submission = Submission(committer, config, read_names().me, admission())

    def reload() -> None:
        submission.reload(read_names().me, admission())

    def factory() -> SubmissionProtocol:
        return SubmissionProtocol(submission)

    servers = [await loop.create_server(factory, sock=listener) for listener in listeners]
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    # Blocked since before the pid lock was taken (cli/processes.py), and in a pre-forked
    # worker since its fork (workers.py): one sent meanwhile is delivered now, to the handler.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    await stopped.wait()
    for server in servers:
        server.close()
    committer.close()
