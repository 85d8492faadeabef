"""DKIM signatures (RFC 6376; RFC 8463's ed25519-sha256): what a signature covers and how it
is written. Pure: a message's bytes in, a `DKIM-Signature:` field out. The arithmetic is the
`cryptography` package's (OpenSSL), which releases the GIL while it signs.

What we sign is what the engine will send (`transmitted`: no NUL, CRLF line ends), so the
signature made at injection holds on the wire and nothing added later breaks it (the engine
adds nothing). Canonicalization is relaxed/relaxed, without `l=`. The signed fields are RFC
6376 §5.4.1's recommended set plus the MIME and Message-ID fields OpenDKIM signs by default;
each is listed once per instance present, bottom up, and From, Subject, To, Cc and Reply-To
once more ("over-signed"), so a copy of one of them added on the way, a second From say,
breaks the signature instead of riding on it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

SIGNED_FIELDS = (
    "from", "reply-to", "subject", "date", "to", "cc", "resent-date", "resent-from",
    "resent-to", "resent-cc", "in-reply-to", "references", "list-id", "list-help",
    "list-unsubscribe", "list-subscribe", "list-post", "list-owner", "list-archive",
    "message-id", "mime-version", "content-type", "content-transfer-encoding",
)  # fmt: skip
OVERSIGNED_FIELDS = frozenset({"from", "subject", "to", "cc", "reply-to"})
LINE_WIDTH = 76  # folded fields stay within this

_LINE_END = re.compile(rb"\r\n|\r|\n")
_WHITESPACE = re.compile(rb"[ \t]+")
_FOLD = re.compile(rb"\r\n(?=[ \t])")


@dataclass(frozen=True)
class SigningKey:
    domain: str  # the d= tag: the From domain, as an A-label
    selector: str
    private_key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

    @property
    def algorithm(self) -> str:
        if isinstance(self.private_key, ed25519.Ed25519PrivateKey):
            return "ed25519-sha256"
        return "rsa-sha256"


def transmitted(content: bytes) -> bytes:
    """The message as the engine puts it on the wire (`smtp_protocol.encode_data` before
    dot-stuffing): NUL removed, every line end CRLF, ending with CRLF."""
    if b"\0" in content:
        content = content.replace(b"\0", b"")
    if b"\r" not in content:
        normalized = content.replace(b"\n", b"\r\n")
    elif content.count(b"\r") == content.count(b"\n") == content.count(b"\r\n"):
        normalized = content
    else:
        normalized = _LINE_END.sub(b"\r\n", content)
    if normalized and not normalized.endswith(b"\r\n"):
        normalized += b"\r\n"
    return normalized


def split_fields(message: bytes) -> tuple[list[tuple[str, bytes]], bytes]:
    """A CRLF message's header fields, in order, each (lower-case name, the whole field with
    its folds and final CRLF), and its body (after the empty line; empty without one)."""
    end = message.find(b"\r\n\r\n")
    if message.startswith(b"\r\n"):
        head, body = b"", message[2:]
    elif end < 0:
        head, body = message, b""
    else:
        head, body = message[: end + 2], message[end + 4 :]
    fields: list[tuple[str, bytes]] = []
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            name, text = fields[-1]
            fields[-1] = (name, text + line)
        else:
            raw_name = line.split(b":", 1)[0] if b":" in line else b""
            fields.append((raw_name.strip().decode("ascii", "replace").lower(), line))
    return fields, body


def relaxed_field(field: bytes) -> bytes:
    """RFC 6376 §3.4.2: name in lower case, folds unfolded, runs of blanks one space, none
    around the colon or at the end; then CRLF."""
    name, _, value = field.partition(b":")
    value = _WHITESPACE.sub(b" ", _FOLD.sub(b"", value).replace(b"\r\n", b"")).strip(b" ")
    return name.strip(b" \t").lower() + b":" + value + b"\r\n"


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 §3.4.4: blanks at line ends removed, runs of blanks one space, empty lines at
    the end removed; a body that is not empty ends with CRLF."""
    lines = [_WHITESPACE.sub(b" ", line).rstrip(b" ") for line in body.split(b"\r\n")]
    while lines and not lines[-1]:
        lines.pop()
    return b"".join(line + b"\r\n" for line in lines)


def fields_to_sign(fields: Sequence[tuple[str, bytes]]) -> list[str]:
    """h=: each signed field once per instance present, and the over-signed ones once more."""
    present = Counter(name for name, _ in fields)
    names: list[str] = []
    for name in SIGNED_FIELDS:
        names += [name] * (present[name] + (1 if name in OVERSIGNED_FIELDS else 0))
    return names


def _selected(fields: Sequence[tuple[str, bytes]], names: Sequence[str]) -> bytes:
    """The canonical fields h= names, each instance taken from the bottom up (§5.4.2); a
    name beyond the instances present is the empty string."""
    remaining: dict[str, list[bytes]] = {}
    for name, text in fields:
        remaining.setdefault(name, []).append(text)
    selected = []
    for name in names:
        instances = remaining.get(name)
        if instances:
            selected.append(relaxed_field(instances.pop()))
    return b"".join(selected)


def _fold_tags(tags: Sequence[str], first: int) -> str:
    """Tags joined by "; ", a fold before any that would pass LINE_WIDTH."""
    lines, line = [], ""
    width = first
    for tag in tags:
        piece = tag + ";"
        if line and width + len(line) + 1 + len(piece) > LINE_WIDTH:
            lines.append(line)
            line, width = piece, 1
        else:
            line = f"{line} {piece}" if line else piece
    lines.append(line)
    return "\r\n\t".join(lines)


def _fold_value(value: str, first: int) -> str:
    """A base64 value cut into pieces that fit, each continuation on its own folded line
    (whitespace inside b= and bh= is ignored by verifiers)."""
    pieces, room = [], LINE_WIDTH - first
    while value:
        pieces.append(value[: max(room, 16)])
        value = value[max(room, 16) :]
        room = LINE_WIDTH - 1
    return "\r\n\t".join(pieces)


def signature_field(message: bytes, key: SigningKey, timestamp: int) -> bytes:
    """The `DKIM-Signature:` field (folded, ending with CRLF) for a CRLF `message`."""
    fields, body = split_fields(message)
    names = fields_to_sign(fields)
    body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest()).decode()
    tags = [
        "v=1",
        f"a={key.algorithm}",
        "c=relaxed/relaxed",
        f"d={key.domain}",
        f"s={key.selector}",
        f"t={timestamp}",
        f"h={':'.join(names)}",
    ]
    head = "DKIM-Signature: " + _fold_tags(tags, len("DKIM-Signature: "))
    head += "\r\n\tbh=" + _fold_value(body_hash, len("\tbh=")) + ";\r\n\tb="
    unsigned = head.encode()
    # The field itself is hashed last, with b= empty and no CRLF (§3.7).
    data = _selected(fields, names) + relaxed_field(unsigned + b"\r\n")[:-2]
    private = key.private_key
    if isinstance(private, ed25519.Ed25519PrivateKey):
        signature = private.sign(hashlib.sha256(data).digest())
    else:
        signature = private.sign(data, padding.PKCS1v15(), hashes.SHA256())
    encoded = base64.b64encode(signature).decode()
    return unsigned + _fold_value(encoded, len("\tb=")).encode() + b"\r\n"


def sign(content: bytes, keys: Sequence[SigningKey], timestamp: int) -> bytes:
    """`content` with one signature per key prepended, each over the message as it was (a
    second signature never covers the first). Line ends follow the content's own (the
    queue keeps what the injector got; the engine sends CRLF either way)."""
    if not keys:
        return content
    message = transmitted(content)
    added = b"".join(signature_field(message, key, timestamp) for key in keys)
    if b"\r\n" not in content[: content.find(b"\n") + 1]:
        added = added.replace(b"\r\n", b"\n")
    return added + content
