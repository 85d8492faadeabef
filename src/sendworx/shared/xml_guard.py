"""Turns any XML body into UTF-8 bytes without a DTD, or refuses it, before a parser sees it.

Every XML parser of ours (the XML-RPC reader for requests and for cluster nodes' replies, the
SOAP reader) parses `utf8_without_dtd(body)`, forced to UTF-8. A DTD is the only door through
which a parser opens a file or a URL (external subsets, external and parameter entities), and
a byte search for `<!DOCTYPE` only sees one in an ASCII-compatible encoding: in UTF-16, UTF-32
or UTF-7 (`+ADwAIQ-DOCTYPE`) the parser would find and load it first. So the encoding is read
here (byte order mark, XML 1.0 appendix F signature, or the declaration), the body is
transcoded by Python when it is not UTF-8 already, and the search runs on exactly the bytes
the parser will read. Parsers add their own refusal as a second line (an entity resolver that
refuses every load); XInclude is never processed.
"""

from __future__ import annotations

import codecs
import re

# Byte order marks, longest first: UTF-32-LE's starts with UTF-16-LE's.
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
)
# XML 1.0 appendix F: how `<` or `<?` looks in the first four bytes without a mark.
_SIGNATURES = {
    b"\x00\x00\x00<": "utf-32-be",
    b"<\x00\x00\x00": "utf-32-le",
    b"\x00<\x00?": "utf-16-be",
    b"<\x00?\x00": "utf-16-le",
    b"\x4c\x6f\xa7\x94": "cp037",  # EBCDIC
}
_DECLARATION_BYTES = 200
_DECLARATION = re.compile(rb"<\?xml[^>]{0,%d}?\?>" % _DECLARATION_BYTES)
_DECLARED_ENCODING = re.compile(rb"""\sencoding\s*=\s*["']([A-Za-z][A-Za-z0-9._-]{0,39})["']""")
_TEXT_DECLARATION = re.compile(r"<\?xml[^>]{0,200}?\?>")
UTF8_NAMES = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})


class ForbiddenXml(ValueError):
    """The body declares a DTD (in any encoding), or comes in an encoding we cannot read."""


def _transcoded(body: bytes, encoding: str) -> bytes:
    """`body` decoded from `encoding`, as UTF-8 without its XML declaration."""
    try:
        text = codecs.decode(body, encoding)
    except LookupError as error:
        raise ForbiddenXml(f"unsupported encoding {encoding[:40]!r}") from error
    except UnicodeDecodeError as error:
        raise ForbiddenXml(f"not {encoding}: {error.reason}") from error
    # The declaration names the old encoding; UTF-8 needs none.
    declaration = _TEXT_DECLARATION.match(text)
    if declaration is not None:
        text = text[declaration.end() :]
    return text.encode("utf-8", "surrogatepass")


def _encoding_of(body: bytes) -> tuple[str, int]:
    """The encoding and the length of a byte order mark to skip."""
    # Nearly every request: ASCII-compatible, no mark, and a declaration that names no
    # encoding (Python's xmlrpc.client never does) or none at all. Checked first, cheaply.
    if body.startswith(b"<?xml"):
        if body.find(b"encoding", 5, body.find(b"?>", 5, _DECLARATION_BYTES)) == -1:
            return "utf-8", 0
    elif body.startswith(b"<") and not body.startswith(b"<\x00"):
        return "utf-8", 0
    for mark, encoding in _BYTE_ORDER_MARKS:
        if body.startswith(mark):
            return encoding, len(mark)
    signature = _SIGNATURES.get(body[:4])
    if signature is not None:
        return signature, 0
    declaration = _DECLARATION.match(body)
    if declaration is not None:
        declared = _DECLARED_ENCODING.search(declaration.group(0))
        if declared is not None:
            return declared.group(1).decode("ascii").lower(), 0
    return "utf-8", 0


def utf8_without_dtd(body: bytes) -> bytes:
    """The body as the UTF-8 bytes a parser must read (forced to UTF-8); ForbiddenXml if it
    declares a DTD or cannot be decoded. UTF-8 bodies (nearly all) come back unchanged."""
    encoding, mark = _encoding_of(body)
    data = body[mark:] if encoding in UTF8_NAMES else _transcoded(body[mark:], encoding)
    if b"<!" in data and (b"<!DOCTYPE" in data or b"<!ENTITY" in data):
        raise ForbiddenXml("DTDs and entity declarations are not allowed")
    return data
