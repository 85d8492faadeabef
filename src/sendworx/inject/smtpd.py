"""The `sendworx smtpd` listener: SMTP submission into the queue, built on aiosmtpd.

A 250 after DATA means the message is on disk and fsynced. Peers outside `relay_networks`
cannot relay; a full disk answers 452 so the client keeps the message and tries later.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import logging
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from aiosmtpd.smtp import SMTP, Session, syntax
from aiosmtpd.smtp import Envelope as SMTPEnvelope

from sendworx.inject.committer import GroupCommitter
from sendworx.inject.smtp_data import DataState, read_data
from sendworx.shared.addresses import AddressError, check_domain, domain_of, has_control_characters
from sendworx.shared.admission import ask_async
from sendworx.shared.config import InstanceConfig
from sendworx.shared.queue import Queue, QueueWriteError
from sendworx.shared.queue_format import Envelope, Origin, new_message_id
from sendworx.shared.settings import MailNames

log = logging.getLogger("sendworx.smtpd")


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


def _deliverable(address: str) -> bool:
    try:
        check_domain(domain_of(address))
    except AddressError:
        return False
    return True


class _NamesForAiosmtpd:
    """aiosmtpd's SMTP.__init__ finds its command, hook and AUTH tables with `dir()` and
    `inspect.getmembers()` on the protocol and on the handler, for every connection: a third
    of the listener's CPU per message in profiles (smtp-source opens one connection per
    message). Those tables only look at names with these prefixes, so `dir()` answers just
    them, computed once per class."""

    _TABLE_PREFIXES = ("smtp_", "auth_", "handle_")
    _names_by_class: ClassVar[dict[type, list[str]]] = {}

    def __dir__(self) -> list[str]:
        names = self._names_by_class.get(type(self))
        if names is None:
            every = object.__dir__(self)
            names = sorted(name for name in every if name.startswith(self._TABLE_PREFIXES))
            self._names_by_class[type(self)] = names
        return names


class SubmissionHandler(_NamesForAiosmtpd):
    """aiosmtpd hooks: relay policy and recipient limit at RCPT, durable queueing at DATA."""

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
        self._max_recipients = config.smtpd.max_recipients
        self._relay_networks = [
            ipaddress.ip_network(network, strict=False) for network in config.smtpd.relay_networks
        ]

    def _may_relay(self, session: Session) -> bool:
        peer = session.peer
        if not isinstance(peer, tuple):
            return True  # a Unix socket peer is local by construction
        try:
            address = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self._relay_networks)

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: SMTPEnvelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if has_control_characters(address):
            return "501 5.1.7 Sender address contains control characters"
        if address != "<>" and "@" in address and not _deliverable(address):
            # Bounces to it could go nowhere; the address is never echoed (it is hostile).
            return "501 5.1.7 Sender domain is not a host name or an address literal"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: SMTPEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not self._may_relay(session):
            return "554 5.7.1 Relay access denied"
        if has_control_characters(address):
            return "501 5.1.3 Recipient address contains control characters"
        if "@" not in address or address.startswith("@") or address.endswith("@"):
            return "553 5.1.3 Recipient address must be user@domain"
        if not _deliverable(address):
            return "501 5.1.3 Recipient domain is not a host name or an address literal"
        if len(envelope.rcpt_tos) >= self._max_recipients:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SMTPEnvelope) -> str:
        message_id = new_message_id()
        now = time.time()
        peer = session.peer[0] if isinstance(session.peer, tuple) else "local"
        protocol = "ESMTP" if session.extended_smtp else "SMTP"
        content: bytes = envelope.original_content or b""
        header = received_header(
            helo=session.host_name,
            peer=str(peer),
            host=self.host,
            message_id=message_id,
            protocol=protocol,
            now=now,
        )
        # aiosmtpd reports the null sender as the literal "<>".
        sender = "" if envelope.mail_from in (None, "<>") else envelope.mail_from
        if self.admission is not None and sender:
            refusal = await ask_async(self.admission, sender, None, len(envelope.rcpt_tos))
            if refusal is not None:
                log.info(
                    "refused from=%s peer=%s: limit %s", json.dumps(sender), peer, refusal.rule
                )
                return refusal.smtp_reply()
        origin = Origin("smtpd", peer=str(peer))
        queued = Envelope(sender, tuple(envelope.rcpt_tos), now, origin=origin)
        try:
            await self._committer.inject(queued, header + content, message_id)
        except QueueWriteError as error:
            log.error("message from %s not queued: %s", peer, error)
            return "452 4.3.1 Insufficient system storage; try again later"
        log.info(
            "queued id=%s from=%s rcpts=%d size=%d peer=%s",
            message_id,
            json.dumps(sender),  # a JSON string, as in send.log: nothing raw reaches a terminal
            len(envelope.rcpt_tos),
            len(content),
            peer,
        )
        return f"250 2.0.0 Ok: queued as {message_id}"


class SubmissionSMTP(_NamesForAiosmtpd, SMTP):
    """aiosmtpd with Postfix's tolerance for long lines.

    RFC 5321 caps lines at 1000 octets and aiosmtpd answers longer ones with a permanent
    500, but generated mail (HTML from billing systems) often has longer lines and Postfix
    accepts them; refusing would bounce mail our users' integrations send today.
    """

    line_length_limit = 64 * 1024

    # aiosmtpd parses every MAIL/RCPT address with the email header parser and defines a
    # typing.Protocol class per call: a fifth of a listener's CPU in profiles. The result
    # depends only on the argument and the local-part limit, and bulk mail repeats senders.
    _address_cache: ClassVar[dict[tuple[str, int], tuple[str | None, str | None]]] = {}
    _ADDRESS_CACHE_SIZE = 10_000

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, reading the data in a few large reads (`smtp_data.py`)."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            content, state = await read_data(
                self._reader, self.data_size_limit, self.line_length_limit
            )
        except asyncio.CancelledError:
            self._writer.close()  # the connection was lost during DATA, as aiosmtpd does
            raise
        if state is not DataState.NOMINAL:
            too_long = state is DataState.TOO_LONG
            await self.push(
                "500 Line too long (see RFC5321 4.5.3.1.6)"
                if too_long
                else "552 Error: Too much mail data"
            )
            self._set_post_data_state()  # type: ignore[no-untyped-call]  # aiosmtpd: no hints
            return
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        key = (arg, self.local_part_limit)
        cached = self._address_cache.get(key)
        if cached is None:
            cached = super()._getaddr(arg)
            if len(self._address_cache) >= self._ADDRESS_CACHE_SIZE:
                self._address_cache.clear()
            self._address_cache[key] = cached
        return cached


def bind_listeners(config: InstanceConfig) -> list[socket.socket]:
    """Bind before forking, so every worker accepts on the same sockets."""
    listeners = []
    for address in config.smtpd.listen:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        listener = socket.create_server((address, config.smtpd.port), family=family, backlog=1024)
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
    handler = SubmissionHandler(committer, config, read_names().me, admission())

    def reload() -> None:
        handler.host = read_names().me
        handler.admission = admission()

    def factory() -> SMTP:
        return SubmissionSMTP(
            handler,
            hostname=handler.host,
            ident="sendworx ESMTP",
            data_size_limit=config.smtpd.max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            timeout=300,
        )

    servers = [await loop.create_server(factory, sock=listener) for listener in listeners]
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    await stopped.wait()
    for server in servers:
        server.close()
    committer.close()
