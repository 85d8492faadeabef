"""`sendworx submitd`: local submission for every account on the host, behind
`/usr/sbin/sendmail`, `mailq` and `newaliases`.

Any local account connects to `run/submit.sock` (mode 0666; installed, systemd holds it and
starts this daemon on the first connection) and sends its argv and its standard input
(`submission_protocol.py`). Who it is comes from the kernel (SO_PEERCRED): that uid, and its
account's name, are the message's origin, which the sending policy's limits and holds go by.
Nothing the caller writes can change them, and no account ever touches the queue's files: the
daemon parses what it got as untrusted input (`sendmail.compose`, the same code as
`sendworx sendmail`), queues it durably through the group committer, then answers 0.

What one account cannot do to the others: hold more than `max_connections_per_account`
connections, queue more than its hourly messages and bytes, send a message larger than
`max_message_bytes`, or stay silent longer than `idle_timeout_seconds`; nobody queues while
the queue's filesystem has less than `min_free_megabytes` free. Each refusal is a sysexits
status with one line that says why: 75 (try later: PHP's mail() returns false, cron and
scripts try again) or 65 (the message itself is refused).

`mailq` lists what the caller queued (root and the service's own account: everything);
`newaliases` checks the aliases file for root; `mailhistory` (what `sendworx history` sends
when run by an account) answers the history of the caller's own mail (account_history.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import struct
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sendworx.inject.account_history import PROGRAM as HISTORY_PROGRAM
from sendworx.inject.account_history import HistoryRefused, account_history
from sendworx.inject.account_webhooks import PROGRAM as WEBHOOKS_PROGRAM
from sendworx.inject.account_webhooks import (
    WebhooksAccess,
    WebhooksRefused,
    account_webhooks,
)
from sendworx.inject.account_webhooks import own as own_webhook
from sendworx.inject.account_webhooks import parse as parse_webhooks
from sendworx.inject.committer import GroupCommitter
from sendworx.inject.mail_queue_listing import mailq_text
from sendworx.inject.sendmail import (
    EX_DATAERR,
    EX_NOPERM,
    EX_OK,
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
    EX_USAGE,
    Refused,
    UsageError,
    account_name,
    compose,
    parse_arguments,
)
from sendworx.inject.submission_protocol import (
    MessageReader,
    ProtocolError,
    Request,
    encode_reply,
    parse_header,
)
from sendworx.shared import unix_sockets
from sendworx.shared.admission import ask_async
from sendworx.shared.aliases import AliasFile
from sendworx.shared.config import SubmissionConfig
from sendworx.shared.history import HistoryError, HistoryReader
from sendworx.shared.queue import Queue, QueueWriteError
from sendworx.shared.queue_format import new_message_id
from sendworx.shared.settings import MailNames
from sendworx.shared.webhook_probe import probe
from sendworx.shared.webhooks import WebhookStoreError

log = logging.getLogger("sendworx.submitd")
EX_SOFTWARE = 70
HEADER_TIMEOUT_SECONDS = 30.0
READ_BYTES = 256 * 1024
_PEERCRED = struct.Struct("3i")
HOUR = 3600.0


@dataclass
class _Account:
    """One uid's use of the daemon: connections now, and what it queued in the last hour."""

    connections: int = 0
    queued: deque[tuple[float, int]] = field(default_factory=deque)  # (when, bytes)
    queued_bytes: int = 0

    def forget_before(self, since: float) -> None:
        while self.queued and self.queued[0][0] <= since:
            _, size = self.queued.popleft()
            self.queued_bytes -= size


class SubmissionService:
    def __init__(
        self,
        queue: Queue,
        config: SubmissionConfig,
        names: MailNames,
        *,
        aliases: Path,
        admission: Path | None,
        service_uid: int,
        history: HistoryReader | None = None,
        webhooks: WebhooksAccess | None = None,
    ) -> None:
        self._queue = queue
        self._history_reader = history
        self._webhooks = webhooks
        self._config = config
        self.names = names  # rereading them (SIGHUP) changes only later submissions
        self._aliases = AliasFile(aliases)
        self.admission = admission
        self._service_uid = service_uid
        self._accounts: defaultdict[int, _Account] = defaultdict(_Account)
        self._committer: GroupCommitter | None = None
        self._answering = 0

    async def serve(self, listener: socket.socket) -> asyncio.AbstractServer:
        self._committer = GroupCommitter(self._queue)
        listener.setblocking(False)
        return await asyncio.start_unix_server(self._connection, sock=listener, limit=READ_BYTES)

    async def close(self, grace: float = 30.0) -> None:
        """Once the connections under way are answered (at most `grace` seconds)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                while self._answering:  # noqa: ASYNC110 - a count, no event to wait on
                    await asyncio.sleep(0.05)
        if self._committer is not None:
            self._committer.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("socket")
        _, uid, _ = _PEERCRED.unpack(
            peer.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        )
        account = self._accounts[uid]
        account.connections += 1
        self._answering += 1
        try:
            if account.connections > self._config.max_connections_per_account:
                reply = encode_reply(
                    EX_TEMPFAIL,
                    stderr="sendmail: too many sendmail commands of this account at once; "
                    "try again later\n",
                )
            else:
                reply = await self._answer(reader, uid)
            writer.write(reply)
            await writer.drain()
        except (OSError, TimeoutError):
            pass  # the client went away: nothing it was told "queued" is lost
        finally:
            self._answering -= 1
            account.connections -= 1
            if not account.connections and not account.queued:
                self._accounts.pop(uid, None)
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, uid: int) -> bytes:
        buffer = bytearray()
        try:
            async with asyncio.timeout(HEADER_TIMEOUT_SECONDS):
                while (parsed := parse_header(buffer)) is None:
                    chunk = await reader.read(READ_BYTES)
                    if not chunk:
                        return encode_reply(EX_USAGE, stderr="sendmail: request cut short\n")
                    buffer += chunk
        except ProtocolError as error:
            return encode_reply(EX_USAGE, stderr=f"sendmail: {error}\n")
        request, used = parsed
        rest = bytes(buffer[used:])
        program = request.program
        if program == "mailq" or "-bp" in request.arguments:
            return await self._mailq(uid)
        if program == "newaliases" or "-bi" in request.arguments:
            return self._newaliases(uid)
        if program == HISTORY_PROGRAM:
            return await self._history(uid, list(request.arguments))
        if program == WEBHOOKS_PROGRAM:
            return await self._account_webhooks(uid, list(request.arguments))
        return await self._sendmail(request, rest, reader, uid)

    async def _sendmail(
        self, request: Request, rest: bytes, reader: asyncio.StreamReader, uid: int
    ) -> bytes:
        try:
            invocation = parse_arguments(request.arguments)
        except UsageError as error:
            return encode_reply(EX_USAGE, stderr=f"sendmail: {error}\n")
        refusal = self._over_cap(uid)
        if refusal is not None:
            return encode_reply(EX_TEMPFAIL, stderr=f"sendmail: {refusal}; not queued\n")
        message = MessageReader(invocation.dot_ends_input, self._config.max_message_bytes)
        try:
            done = message.feed(rest) if rest else False
            while not done:
                async with asyncio.timeout(self._config.idle_timeout_seconds):
                    chunk = await reader.read(READ_BYTES)
                if not chunk:
                    message.finish()
                    break
                done = message.feed(chunk)
        except TimeoutError:
            return encode_reply(EX_TEMPFAIL, stderr="sendmail: no input for too long\n")
        if message.too_large:
            limit = self._config.max_message_bytes
            text = f"sendmail: message too large (the limit is {limit} bytes); not queued\n"
            return encode_reply(EX_DATAERR, stderr=text)
        now, message_id = time.time(), new_message_id()
        try:
            envelope, content = compose(
                invocation,
                message.content,
                uid=uid,
                names=self.names,
                now=now,
                message_id=message_id,
            )
        except Refused as refused:
            return encode_reply(refused.status, stderr=f"sendmail: {refused.text}\n")
        account = envelope.origin.account if envelope.origin is not None else None
        if self.admission is not None and envelope.sender:
            limited = await ask_async(
                self.admission, envelope.sender, account, len(envelope.recipients)
            )
            if limited is not None:
                status = EX_TEMPFAIL if limited.code == 451 else EX_NOPERM
                return encode_reply(status, stderr=f"sendmail: {limited.text()}; not queued\n")
        assert self._committer is not None
        try:
            await self._committer.inject(envelope, content, message_id)
        except QueueWriteError as error:
            log.error("message from uid %d not queued: %s", uid, error)
            return encode_reply(EX_TEMPFAIL, stderr=f"sendmail: {error}; not queued\n")
        self._count(uid, len(content), now)
        log.info(
            "queued id=%s from=%s rcpts=%d size=%d uid=%d account=%s",
            message_id,
            json.dumps(envelope.sender),
            len(envelope.recipients),
            len(content),
            uid,
            json.dumps(account),
        )
        return encode_reply(EX_OK)

    def _over_cap(self, uid: int) -> str | None:
        """Why this account may not queue now, if it may not."""
        config, now = self._config, time.time()
        free = _free_megabytes(self._queue.path)
        if free is not None and free < config.min_free_megabytes:
            return "insufficient system storage for the mail queue; try again later"
        if uid in (0, self._service_uid):
            return None  # the system's own mail (cron, bounces) is not capped
        account = self._accounts[uid]
        account.forget_before(now - HOUR)
        most = config.messages_per_hour_per_account
        if most and len(account.queued) >= most:
            return f"this account queued {most} messages in the last hour, its cap; try later"
        most_bytes = config.megabytes_per_hour_per_account * 1024 * 1024
        if most_bytes and account.queued_bytes >= most_bytes:
            megabytes = config.megabytes_per_hour_per_account
            return f"this account queued {megabytes} MB in the last hour, its cap; try later"
        return None

    def _count(self, uid: int, size: int, now: float) -> None:
        if uid in (0, self._service_uid):
            return
        account = self._accounts[uid]
        account.queued.append((now, size))
        account.queued_bytes += size

    async def _mailq(self, uid: int) -> bytes:
        everything = uid in (0, self._service_uid)
        text = await asyncio.to_thread(mailq_text, self._queue, None if everything else uid)
        return encode_reply(EX_OK, stdout=text)

    async def _history(self, uid: int, arguments: list[str]) -> bytes:
        """The caller's own mail's history (root and the service: everyone's), as JSON."""
        if self._history_reader is None:
            return encode_reply(EX_UNAVAILABLE, stderr=f"{HISTORY_PROGRAM}: no history kept\n")
        everything = uid in (0, self._service_uid)
        account = None if everything else (account_name(uid) or f"uid {uid}")
        try:
            text = await asyncio.to_thread(
                account_history, self._history_reader, account, arguments
            )
        except HistoryRefused as refused:
            return encode_reply(EX_USAGE, stderr=f"{refused}\n")
        except HistoryError as error:
            return encode_reply(EX_UNAVAILABLE, stderr=f"{HISTORY_PROGRAM}: {error}\n")
        return encode_reply(EX_OK, stdout=text)

    async def _account_webhooks(self, uid: int, arguments: list[str]) -> bytes:
        """The caller's own endpoints, for its own mail (account_webhooks.py)."""
        access = self._webhooks
        if access is None:
            return encode_reply(EX_UNAVAILABLE, stderr=f"{WEBHOOKS_PROGRAM}: webhooks are off\n")
        account = account_name(uid)
        if account is None or uid in (0, self._service_uid):
            why = "an account with a name" if account is None else "a site's account"
            return encode_reply(EX_USAGE, stderr=f"{WEBHOOKS_PROGRAM}: for {why} only\n")
        try:
            asked = parse_webhooks(arguments)
            if asked.action == "test":
                text = await self._test_webhook(access, account, asked.target)
            else:
                text = await asyncio.to_thread(
                    account_webhooks, access.store, access.guard, account, asked
                )
        except WebhooksRefused as refused:
            return encode_reply(EX_USAGE, stderr=f"{refused}\n")
        except WebhookStoreError as error:
            return encode_reply(EX_UNAVAILABLE, stderr=f"{WEBHOOKS_PROGRAM}: {error}\n")
        return encode_reply(EX_OK, stdout=text)

    async def _test_webhook(self, access: WebhooksAccess, account: str, target: str) -> str:
        """A sample event posted by the sender now; what the receiver answered."""
        endpoint = await asyncio.to_thread(own_webhook, access.store, account, target)
        answer = await probe(
            access.store,
            endpoint,
            access.node,
            trigger=access.trigger,
            sender_pid_file=access.sender_pid_file,
            wait_seconds=access.wait_seconds,
        )
        return json.dumps(answer)

    def _newaliases(self, uid: int) -> bytes:
        if uid not in (0, self._service_uid):
            return encode_reply(EX_NOPERM, stderr="newaliases: only root may do that\n")
        try:
            aliases = self._aliases.current()
        except OSError as error:
            return encode_reply(EX_SOFTWARE, stderr=f"newaliases: {error}\n")
        where = f"newaliases: {self._aliases.path}"
        problems = "".join(f"{where}: {line}\n" for line in aliases.problems)
        said = f"{where}: {len(aliases.table)} aliases\n"
        return encode_reply(EX_OK, stdout=said, stderr=problems)


def _free_megabytes(path: Path) -> int | None:
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize // (1024 * 1024)


def bind_listener(path: Path) -> socket.socket:
    """The developer's instance: our own socket, open to every account (mode 0666)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix_sockets.bind(listener, path)
    os.chmod(path, 0o666)
    listener.listen(1024)
    return listener


async def serve(
    service: SubmissionService,
    listener: socket.socket,
    reload: Callable[[], None],
    ready: Callable[[], None],
) -> None:
    """Until SIGTERM/SIGINT; SIGHUP calls `reload`; `ready` once connections are served.
    Connections under way are answered before it returns."""
    loop = asyncio.get_running_loop()
    server = await service.serve(listener)
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})  # see cli/processes.py
    ready()
    await stopped.wait()
    server.close()
    await service.close()
