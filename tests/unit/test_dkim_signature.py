"""DKIM signatures as dkimpy, the reference Python implementation, verifies them: every shape
of message a site sends, each key kind, both at once; and what a key store refuses."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from sendworx.shared.dkim_keys import InputError, KeyStore, Origins
from sendworx.shared.dkim_signature import (
    SigningKey,
    relaxed_body,
    relaxed_field,
    sign,
    transmitted,
)

MESSAGES = {
    "plain": b"From: a@example.com\nTo: b@example.net\nSubject: hi\n\nhello\n",
    "crlf": b"From: a@example.com\r\nSubject: x\r\n\r\nline\r\n",
    "trailing blanks and blank lines": b"From: a@example.com\nSubject: x\n\nbody \t \n\n\n\n",
    "no body": b"From: a@example.com\nSubject: x\n",
    "folded and long": b"From: a@example.com\nSubject: " + b"word " * 60 + b"\n\tfolded\n\nx\n",
    "duplicate headers": b"From: a@example.com\nTo: x@y.test\nTo: z@y.test\nSubject: x\n\nb\n",
    "display name and comment": b'From: "Shop, Inc." (orders) <a@example.com>\nSubject: x\n\nb\n',
    "8-bit": "From: a@example.com\nSubject: été\n\ncafé ☕\n".encode(),
    "already signed": b"DKIM-Signature: v=1; a=rsa-sha256; d=other.test; s=x; h=from; bh=a; b=b\n"
    b"From: a@example.com\nSubject: x\n\nb\n",
    "dot lines": b"From: a@example.com\nSubject: x\n\n.\n..hidden\n",
    "100 kB header": b"From: a@example.com\nSubject: " + b"x" * 100_000 + b"\n\nb\n",
}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    store = KeyStore(tmp_path_factory.mktemp("dkim"))
    made = {
        "rsa2048": store.add("example.com", selector="big"),
        "rsa1024": store.add("example.com", selector="small", bits=1024, pending=False),
        "ed25519": store.add("example.com", selector="ed", algorithm="ed25519", pending=False),
    }
    return {"store": store, **made}


def _verify(wire: bytes, keys: dict[str, object], count: int) -> list[bool]:
    store: KeyStore = keys["store"]  # type: ignore[assignment]
    records = {key.record_name + ".": key.record_text for key in store.all_keys()}

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name.decode(), "").encode()

    checker = dkim.DKIM(wire)
    results = []
    for index in range(count):
        try:
            results.append(bool(checker.verify(idx=index, dnsfunc=dns)))
        except dkim.ValidationError:  # dkimpy raises for some failures (a body hash)
            results.append(False)
    return results


@pytest.mark.parametrize("shape", MESSAGES)
@pytest.mark.parametrize(
    "which", [("rsa2048",), ("rsa1024",), ("ed25519",), ("rsa2048", "ed25519")]
)
def test_every_shape_verifies_with_dkimpy(
    shape: str, which: tuple[str, ...], keys: dict[str, object]
) -> None:
    store: KeyStore = keys["store"]  # type: ignore[assignment]
    signing = [store.signing_key(keys[name]) for name in which]  # type: ignore[arg-type]
    signed = sign(MESSAGES[shape], signing, int(time.time()))
    assert _verify(transmitted(signed), keys, len(which)) == [True] * len(which)
    ours = signed[: len(signed) - len(MESSAGES[shape])]  # what signing prepended
    assert max(len(line) for line in ours.splitlines()) <= 78  # folded


def test_a_change_on_the_way_breaks_the_signature(keys: dict[str, object]) -> None:
    store: KeyStore = keys["store"]  # type: ignore[assignment]
    key = store.signing_key(keys["rsa2048"])  # type: ignore[arg-type]
    signed = transmitted(sign(MESSAGES["plain"], [key], int(time.time())))
    assert _verify(signed, keys, 1) == [True]
    assert _verify(signed.replace(b"hello", b"HELLO"), keys, 1) == [False]
    # Over-signed: a second From (or a Cc nobody signed) added by someone on the way.
    assert _verify(signed.replace(b"To: ", b"From: evil@bad.test\r\nTo: "), keys, 1) == [False]
    assert _verify(signed.replace(b"To: ", b"Cc: extra@bad.test\r\nTo: "), keys, 1) == [False]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.text(alphabet=" \tabc.é", max_size=30), max_size=6),
    st.sampled_from([b"\n", b"\r\n"]),
)
def test_any_body_verifies(lines: list[str], end: bytes) -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    record = f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}".encode()
    body = end.join(line.encode() for line in lines)
    message = b"From: a@example.com" + end + b"Subject: x" + end + end + body
    signed = transmitted(sign(message, [SigningKey("example.com", "h", private)], int(time.time())))
    assert dkim.DKIM(signed).verify(dnsfunc=lambda name, timeout=5: record)


def test_canonical_forms() -> None:
    assert relaxed_field(b"SubJect :  a \t b  \r\n\tc \r\n") == b"subject:a b c\r\n"
    assert relaxed_body(b"a \t\r\n\r\n\r\n") == b"a\r\n"
    assert relaxed_body(b"") == b""
    assert transmitted(b"a\nb\r\nc\rd\0") == b"a\r\nb\r\nc\r\nd\r\n"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"domain": "exa\x01mple.com"}, "domain"),
        ({"domain": "../etc/passwd"}, "domain"),
        ({"domain": "[127.0.0.1]"}, "domain"),
        ({"selector": "../x"}, "selector"),
        ({"selector": "a b"}, "selector"),
        ({"bits": 512}, "bits"),
        ({"bits": 8192}, "bits"),
        ({"algorithm": "dsa"}, "algorithm"),
        ({"pem": b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"}, "key"),
        ({"origins": "x"}, "origins"),
    ],
)
def test_the_store_refuses_bad_input_and_changes_nothing(
    tmp_path: Path, change: dict[str, object], field: str
) -> None:
    store = KeyStore(tmp_path / "dkim")
    arguments: dict[str, object] = {"domain": "example.com", **change}
    domain = arguments.pop("domain")
    if field == "origins":
        with pytest.raises(InputError) as refused:
            Origins.from_document(arguments.pop("origins"))
    else:
        with pytest.raises(InputError) as refused:
            store.add(str(domain), **arguments)  # type: ignore[arg-type]
    assert refused.value.field == field
    assert store.all_keys() == []
    assert not (tmp_path / "dkim").exists() or not any((tmp_path / "dkim").rglob("*.pem"))


def test_records_fit_dns_strings_and_rotation_keeps_a_key_signing(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "dkim")
    first = store.add("example.com", bits=4096, testing=True, now=1_000)
    assert first.state == "active" and "t=y" in first.record_text
    assert all(len(piece.encode()) <= 255 for piece in first.record_strings)
    assert "".join(first.record_strings) == first.record_text
    second = store.add("example.com", now=2_000)
    assert second.state == "pending" and second.selector != first.selector
    assert [key.state for key in store.of_domain("example.com")] == ["active", "pending"]
    store.activate("example.com", second.selector, retire_after_seconds=100, now=3_000)
    assert [key.state for key in store.of_domain("example.com")] == ["retiring", "active"]
    assert store.retire_due(now=3_050) == []
    assert [key.selector for key in store.retire_due(now=3_101)] == [first.selector]
    assert (tmp_path / "dkim" / "keys.json").stat().st_mode & 0o777 == 0o600
    assert store.key_path(second).stat().st_mode & 0o777 == 0o600


def test_origins_compare_a_dual_stack_listeners_view_of_an_ipv4_client() -> None:
    """A listener on :: sees an IPv4 client as ::ffff:a.b.c.d; its network still matches,
    as for smtpd's relay_networks."""
    origins = Origins.checked((), ("192.0.2.0/24",), anyone=False)
    assert origins.allow(None, "192.0.2.7")
    assert origins.allow(None, "::ffff:192.0.2.7")
    assert not origins.allow(None, "198.51.100.1")
    assert not origins.allow(None, "not an address")


def test_concurrent_changes_from_many_writers_lose_nothing(tmp_path: Path) -> None:
    """Each writer has a store of its own, as the panel, the CLI and the engine do: only the
    store's file lock keeps their read-modify-writes of keys.json apart."""
    import threading

    def writer(number: int) -> None:
        store = KeyStore(tmp_path)
        for index in range(6):
            store.add(f"d{index}.w{number}.example", algorithm="ed25519")

    threads = [threading.Thread(target=writer, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(KeyStore(tmp_path).all_keys()) == 48
