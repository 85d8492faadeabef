"""No XML parser of ours opens a file or a URL, whatever the body's encoding.

Every hostile document names a FIFO: a parser that opens it blocks until a writer comes, so
"parsed within a few seconds" proves nothing was opened. The same documents naming a readable
file and a missing one must be refused with the same words (no file-existence oracle).
"""

from __future__ import annotations

import codecs
import functools
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from sendworx.shared.xml_guard import ForbiddenXml, utf8_without_dtd
from sendworx.shared.xmlrpc_reader import NotXmlRpc, read_response
from sendworx.transports import soap
from sendworx.transports.route_call import MalformedRequest
from sendworx.transports.xmlrpc import parse_request

XINCLUDE = "http://www.w3.org/2001/XInclude"
DOCTYPES = {
    "external subset": '<!DOCTYPE {root} SYSTEM "{url}">',
    "public external subset": '<!DOCTYPE {root} PUBLIC "-//sendworx//x//EN" "{url}">',
    "parameter entity": '<!DOCTYPE {root} [<!ENTITY % p SYSTEM "{url}"> %p;]>',
    "external entity": '<!DOCTYPE {root} [<!ENTITY e SYSTEM "{url}">]>',
}
ENCODINGS = [
    "utf-8",
    "utf-8-sig",
    "utf-16",
    "utf-16-le",
    "utf-16-be",
    "utf-32",
    "utf-32-le",
    "utf-32-be",
    "utf-7",
    "cp037",
]


def _encode(text: str, encoding: str) -> bytes:
    declared = {"utf-8-sig": "UTF-8", "cp037": "IBM037"}.get(encoding, encoding.upper())
    if encoding.endswith(("-le", "-be")):
        declared = declared[:-3]  # no byte order mark: appendix F's signature says which
    document = f'<?xml version="1.0" encoding="{declared}"?>{text}'
    if encoding == "utf-7":
        # Python writes `<` and `!` directly; a hostile client spells them out, which is
        # what hides `<!DOCTYPE` from a search of the bytes.
        encoded = document.encode("utf-7")
        return encoded.replace(b"<!", b"+ADwAIQ-")
    return codecs.encode(document, encoding)


def _call(doctype: str, value: str = "<string>x</string>") -> str:
    params = "".join(
        f"<param><value>{v}</value></param>" for v in ("key", "/nodeworx/mail/send", value)
    )
    return (
        f"{doctype}<methodCall><methodName>iworx.route</methodName>"
        f"<params>{params}</params></methodCall>"
    )


def _response(doctype: str, value: str = "<string>x</string>") -> str:
    param = f"<param><value>{value}</value></param>"
    return f"{doctype}<methodResponse><params>{param}</params></methodResponse>"


def _envelope(doctype: str, value: str = "x") -> str:
    return (
        f'{doctype}<e:Envelope xmlns:e="{soap.SOAP_11.envelope}"><e:Body><route>'
        f"<apikey>k</apikey><ctrl_name>/nodeworx/mail/send</ctrl_name><action>a</action>"
        f"<input>{value}</input></route></e:Body></e:Envelope>"
    )


def _soap(body: bytes) -> object:
    return soap.parse_request(body, "text/xml")


READERS: dict[str, tuple[Callable[..., str], str, Callable[[bytes], object]]] = {
    "xml-rpc call": (_call, "methodCall", parse_request),
    "xml-rpc response": (_response, "methodResponse", read_response),
    "soap": (_envelope, "e:Envelope", _soap),
}
REFUSALS = (MalformedRequest, NotXmlRpc, ForbiddenXml)


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def _outcome_within(seconds: float, fifo: Path, parse: Callable[[], object]) -> str:
    """What parsing says (its refusal's text, or "parsed"), failing if it opened the FIFO."""
    result: list[str] = []

    def run() -> None:
        try:
            parse()
            result.append("parsed")
        except REFUSALS as refused:
            result.append(str(refused))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # let the stuck reader go
        worker.join(5)
        pytest.fail(f"the parser opened {fifo}")
    return result[0]


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("doctype", sorted(DOCTYPES))
@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_dtd_is_refused_before_anything_is_opened_in_every_encoding(
    reader: str, doctype: str, encoding: str, fifo: Path, tmp_path: Path
) -> None:
    document, root, parse = READERS[reader]
    secret = tmp_path / "secret"
    secret.write_text("secret text\n")

    def refusal(target: Path) -> str:
        declaration = DOCTYPES[doctype].format(root=root, url=target.as_uri())
        body = _encode(document(declaration), encoding)
        return _outcome_within(5, fifo, lambda: parse(body))

    answers = {refusal(fifo), refusal(secret), refusal(tmp_path / "missing")}
    assert len(answers) == 1, answers  # the same words whether the file exists or not
    (answer,) = answers
    assert "DTDs and entity declarations are not allowed" in answer


@pytest.mark.parametrize("reader", sorted(READERS))
def test_xinclude_is_never_processed(reader: str, fifo: Path, tmp_path: Path) -> None:
    document, _, parse = READERS[reader]
    secret = tmp_path / "secret"
    secret.write_text("secret text\n")
    for target in (fifo, secret):
        include = f'<xi:include xmlns:xi="{XINCLUDE}" href="{target.as_uri()}" parse="text"/>'
        body = document("", include).encode()
        outcome = _outcome_within(5, fifo, functools.partial(parse, body))
        assert "secret text" not in outcome


def test_utf8_bodies_pass_through_unchanged() -> None:
    for body in (
        b"<methodCall/>",
        b"<?xml version='1.0'?><methodCall/>",
        b'<?xml version="1.0" encoding="UTF-8"?><methodCall/>',
        "<a>caf\u00e9</a>".encode(),
    ):
        assert utf8_without_dtd(body) is body or utf8_without_dtd(body) == body


def test_other_encodings_are_transcoded_to_utf8_without_their_declaration() -> None:
    text = "<a>caf\u00e9 \u2603</a>"
    for encoding in ("utf-16", "utf-32", "utf-16-be", "utf-7"):
        assert utf8_without_dtd(_encode(text, encoding)) == text.encode()
    with_mark = _encode(text, "utf-8-sig")
    assert utf8_without_dtd(with_mark) == with_mark[len(codecs.BOM_UTF8) :]
    latin = '<?xml version="1.0" encoding="ISO-8859-1"?><a>caf\xe9</a>'.encode("latin-1")
    assert utf8_without_dtd(latin) == "<a>caf\u00e9</a>".encode()


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0" encoding="x-no-such-encoding"?><a/>',
        b'<?xml version="1.0" encoding="UTF-16"?>',  # an odd number of bytes
        codecs.BOM_UTF16_LE + b"\x00\xd8",  # a lone surrogate
    ],
)
def test_undecodable_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(ForbiddenXml):
        utf8_without_dtd(body)


def test_a_php_latin1_call_still_reads_its_accents() -> None:
    body = _call("", "<string>caf\xe9</string>")
    request = parse_request(
        ('<?xml version="1.0" encoding="iso-8859-1"?>' + body).encode("latin-1")
    )
    assert request.call.action == "caf\u00e9"
