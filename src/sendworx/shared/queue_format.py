"""What a queue file and a state file hold: the envelope, the delivery state, message ids,
and the encoding of each. Pure records; `queue.py` keeps them on disk.

A queue file is a `sendworx-queue 1` line, the envelope as one JSON line, then the message.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from email.header import decode_header, make_header
from enum import StrEnum

MAGIC = b"sendworx-queue 1\n"
_ID_ALPHABET = frozenset("0123456789abcdef")


class MessageKind(StrEnum):
    NORMAL = "normal"
    BOUNCE = "bounce"
    DOUBLE_BOUNCE = "double-bounce"


class CorruptMessageError(ValueError):
    """A queue file that does not start with a valid header."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Who handed a message in, beyond its envelope sender: how (`sendmail`, `smtpd`, or the
    engine itself for bounces), and the Unix account that ran sendmail (which is how a
    hosting server tells one customer from another when a PHP script sends mail) or the
    SMTP client's address. The sending policy counts by it."""

    via: str
    uid: int | None = None
    account: str | None = None
    peer: str | None = None

    def to_document(self) -> dict[str, object]:
        # Written for every message: plain attribute reads, not dataclasses.asdict's deep copy.
        document: dict[str, object] = {"via": self.via}
        for key, value in (("uid", self.uid), ("account", self.account), ("peer", self.peer)):
            if value is not None:
                document[key] = value
        return document

    @classmethod
    def from_document(cls, document: object) -> Origin | None:
        if not isinstance(document, dict) or not isinstance(document.get("via"), str):
            return None
        uid = document.get("uid")
        account, peer = document.get("account"), document.get("peer")
        return cls(
            via=document["via"],
            uid=uid if isinstance(uid, int) and not isinstance(uid, bool) else None,
            account=account if isinstance(account, str) else None,
            peer=peer if isinstance(peer, str) else None,
        )


@dataclass(frozen=True, slots=True)
class Envelope:
    sender: str
    recipients: tuple[str, ...]
    birth: float
    kind: MessageKind = MessageKind.NORMAL
    origin: Origin | None = None  # None in files written before it was recorded
    # The From domain whose DKIM key this message's origin may not use: it went unsigned
    # (dkim_signer.py); the engine counts it once, with its first attempt.
    dkim_refused: str | None = None
    # Known from the injector on: the content's size and its Message-ID header (without
    # the angle brackets), for the delivery history. 0 and "" in older files.
    size: int = 0
    message_id_header: str = ""
    # The Subject header, decoded and cut to SUBJECT_CHARS, for webhooks. "" in older files.
    subject: str = ""

    @property
    def origin_name(self) -> str:
        """Who handed it in, for people: `account alice`, `client 192.0.2.7`."""
        origin = self.origin
        if origin is None:
            return "an unknown origin"
        if origin.account:
            return f"account {origin.account}"
        if origin.peer:
            return f"client {origin.peer}"
        return f"uid {origin.uid}" if origin.uid is not None else origin.via

    def to_json(self) -> bytes:
        document: dict[str, object] = {
            "sender": self.sender,
            "recipients": list(self.recipients),
            "birth": self.birth,
            "kind": self.kind.value,
        }
        if self.origin is not None:
            document["origin"] = self.origin.to_document()
        if self.dkim_refused is not None:
            document["dkim_refused"] = self.dkim_refused
        if self.size:
            document["size"] = self.size
        if self.message_id_header:
            document["mid"] = self.message_id_header
        if self.subject:
            document["subj"] = self.subject
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Envelope:
        document = json.loads(data)
        return cls(
            sender=str(document["sender"]),
            recipients=tuple(str(recipient) for recipient in document["recipients"]),
            birth=float(document["birth"]),
            kind=MessageKind(document.get("kind", MessageKind.NORMAL)),
            origin=Origin.from_document(document.get("origin")),
            dkim_refused=_text_or_none(document.get("dkim_refused")),
            size=_count(document.get("size")),
            message_id_header=_text_or_none(document.get("mid")) or "",
            subject=_text_or_none(document.get("subj")) or "",
        )


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*<?([^\r\n<>]{1,250})>?[ \t]*\r?$", re.I | re.M)
# The Subject with its folded lines (a continuation starts with a space or a tab).
_SUBJECT = re.compile(rb"^subject:[ \t]*((?:[^\r\n]*)(?:\r?\n[ \t][^\r\n]*)*)", re.I | re.M)
HEAD_SCAN_BYTES = 65536
SUBJECT_CHARS = 250


def header_notes(content: bytes) -> tuple[str, str]:
    """The Message-ID header's value without its brackets, and the Subject decoded (RFC 2047)
    and cut to SUBJECT_CHARS; "" each when missing. Looked for in the head only (up to the
    first blank line, within the first 64 KB)."""
    head = content[:HEAD_SCAN_BYTES]
    for blank in (b"\r\n\r\n", b"\n\n"):
        end = head.find(blank)
        if end >= 0:
            head = head[:end]
            break
    if not head.startswith(b"\n"):
        head = b"\n" + head
    found = _MESSAGE_ID.search(head)
    message_id = found.group(1).strip().decode("utf-8", "replace") if found else ""
    subject = _SUBJECT.search(head)
    return message_id, _decoded_subject(subject.group(1)) if subject else ""


def _decoded_subject(raw: bytes) -> str:
    text = re.sub(r"\r?\n[ \t]+", " ", raw.decode("utf-8", "replace")).strip()
    if "=?" in text:
        # An encoded word that does not decode is kept as written.
        with contextlib.suppress(ValueError, LookupError, UnicodeError):
            text = str(make_header(decode_header(text)))
    text = "".join(char if char.isprintable() else " " for char in text)
    return text[:SUBJECT_CHARS]


@dataclass(frozen=True, slots=True)
class RecipientFailure:
    """Why a recipient will not get the message: the reply or problem, and who said it."""

    recipient: str
    reply: str
    status: str
    remote: str | None = None


@dataclass(frozen=True, slots=True)
class RecipientAttempt:
    """What happened to one recipient in one attempt."""

    recipient: str
    outcome: str  # delivered, deferred or failed
    reply: str
    remote: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptLog:
    """One delivery attempt, for the operator: when, and what each recipient got."""

    at: float
    results: tuple[RecipientAttempt, ...]


HISTORY_LIMIT = 10  # attempts kept per message; a week of qmail's schedule makes about 30
# What DeliveryState.schedule_from_json looks for in a state file as to_json writes it.
_SCHEDULE = re.compile(
    rb'\{"attempts": -?\d+, "next_attempt_at": (-?\d+(?:\.\d+)?(?:e[-+]?\d+)?), '
)
_HELD = b'"held": true'


@dataclass(slots=True)
class DeliveryState:
    """Progress of a message that has been tried (or held, or expired by an operator) and is
    not finished yet. Held time does not count towards the queue lifetime."""

    attempts: int = 0
    next_attempt_at: float = 0.0
    delivered: list[str] = field(default_factory=list)
    failed: list[RecipientFailure] = field(default_factory=list)
    last_errors: dict[str, str] = field(default_factory=dict)
    held: bool = False  # never attempted until released
    held_since: float = 0.0
    held_seconds: float = 0.0  # time spent held before, added to the lifetime
    held_by: str = ""  # the sending-policy hold that held it ("account:alice"); "" by hand
    expire: bool = False  # an operator asked: bounce what is left at the next run
    history: list[AttemptLog] = field(default_factory=list)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False).encode()

    @staticmethod
    def schedule_from_json(data: bytes) -> tuple[float, bool]:
        """Only when the message is due next and whether it is held: what the engine needs of
        each state file at start (a million of them), without parsing the whole document.

        `to_json` writes the fields in a fixed order with ", " and ": " between them, so the
        file starts `{"attempts": N, "next_attempt_at": T` and says `"held": true` when held:
        inside a JSON string a quote is escaped, so no text a peer sent can spell either. A
        file in any other shape is parsed in full."""
        found = _SCHEDULE.match(data)
        if found is not None:
            return float(found[1]), _HELD in data
        document = json.loads(data)
        if not isinstance(document, dict):
            raise ValueError("a state file holds a JSON object")
        return float(document.get("next_attempt_at", 0.0)), bool(document.get("held", False))

    @classmethod
    def from_json(cls, data: bytes) -> DeliveryState:
        document = json.loads(data)
        return cls(
            attempts=int(document.get("attempts", 0)),
            next_attempt_at=float(document.get("next_attempt_at", 0.0)),
            delivered=[str(item) for item in document.get("delivered", [])],
            failed=[RecipientFailure(**item) for item in document.get("failed", [])],
            last_errors={str(k): str(v) for k, v in document.get("last_errors", {}).items()},
            held=bool(document.get("held", False)),
            held_since=float(document.get("held_since", 0.0)),
            held_seconds=float(document.get("held_seconds", 0.0)),
            held_by=str(document.get("held_by", "")),
            expire=bool(document.get("expire", False)),
            history=[
                AttemptLog(
                    float(entry["at"]),
                    tuple(RecipientAttempt(**result) for result in entry["results"]),
                )
                for entry in document.get("history", [])
            ],
        )

    def finished_recipients(self) -> set[str]:
        return set(self.delivered) | {failure.recipient for failure in self.failed}

    def last_attempt(self, recipient: str) -> RecipientAttempt | None:
        """The latest thing that happened to `recipient`, from the history."""
        for entry in reversed(self.history):
            for result in entry.results:
                if result.recipient == recipient:
                    return result
        return None

    # -- what an operator does (pure: a new state; the queue writes it) ----------------------

    def on_hold(self, now: float, by: str = "") -> DeliveryState:
        if self.held:
            return self
        return replace(self, held=True, held_since=now, held_by=by, expire=False)

    def released(self, now: float) -> DeliveryState:
        """Due at once; the time it spent held is added to its lifetime."""
        if not self.held:
            return self
        held_for = max(0.0, now - self.held_since)
        return replace(
            self,
            held=False,
            held_since=0.0,
            held_by="",
            held_seconds=self.held_seconds + held_for,
            next_attempt_at=0.0,
        )

    def to_expire(self) -> DeliveryState:
        """Bounce every recipient still to do at the next run (a held message included)."""
        return replace(
            self, expire=True, held=False, held_since=0.0, held_by="", next_attempt_at=0.0
        )

    def due_now(self) -> DeliveryState:
        return replace(self, next_attempt_at=0.0)


def new_message_id() -> str:
    """Sortable by injection time, unique across processes, safe as a file name."""
    return f"{time.time_ns() // 1000:014x}{secrets.token_hex(5)}"


def is_message_id(text: str) -> bool:
    return 16 <= len(text) <= 40 and set(text) <= _ID_ALPHABET


def encode_message(envelope: Envelope, content: bytes) -> bytes:
    return b"".join((MAGIC, envelope.to_json(), b"\n", content))


def _envelope_end(data: bytes) -> int:
    """Where the envelope line of a queue file ends (its newline)."""
    if not data.startswith(MAGIC):
        raise CorruptMessageError("missing queue header")
    end = data.find(b"\n", len(MAGIC))
    if end == -1:
        raise CorruptMessageError("truncated envelope")
    return end


def decode_message(data: bytes) -> tuple[Envelope, bytes]:
    end = _envelope_end(data)
    try:
        envelope = Envelope.from_json(data[len(MAGIC) : end])
    except (ValueError, KeyError, TypeError) as error:
        raise CorruptMessageError(f"bad envelope: {error}") from error
    return envelope, data[end + 1 :]


def message_content(data: bytes) -> bytes:
    """The message of a queue file without its envelope, which is not parsed (for a reader
    that has it already)."""
    return data[_envelope_end(data) + 1 :]
