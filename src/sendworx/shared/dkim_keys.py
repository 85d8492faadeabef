"""DKIM keys: which domains sign, with which selector and key, for whom, and the DNS record
each needs. Kept under `<state>/dkim/`: `keys.json` (0600, written atomically) lists every key
with its state and allowed origins; each private key is `<domain>/<selector>.pem` (0600, in
0700 directories), written once and never shown by the API or logged.

A key's life (rotation with no gap, as Postal's maintainers describe it):

    pending  --(its record is seen in DNS: activate)-->  active
    active   --(a newer key of the domain activates)-->  retiring (until `retire_after`:
             mail signed with it may still be queued or verified again later)
    retiring --(time passes)-->  retired (listed, never used; its record may go)

A domain's first key is active at once (there is no gap to bridge); a rotation's new key is
pending until the DNS check sees its record. Only an active key signs.

Who may use a key (`Origins`): the Unix accounts named (sendmail, and SMTP on loopback, whose
account the kernel names), the client networks named (SMTP from elsewhere), or anyone (`any`,
for a single-tenant host). The host itself (root, the service's account, the engine's own
bounces and notices) may always use its keys. Mail whose origin may not use the From domain's
key goes out unsigned: a hacked site on account A gets no valid signature for B's domain.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import functools
import ipaddress
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from sendworx.shared.addresses import (
    AddressError,
    check_domain,
    client_address,
    has_control_characters,
)
from sendworx.shared.dkim_signature import SigningKey
from sendworx.shared.durable import atomic_write
from sendworx.shared.file_lock import FileLock

RSA_BITS = (1024, 4096)  # accepted sizes; 2048 by default
DEFAULT_BITS = 2048
ALGORITHMS = ("rsa", "ed25519")
STATES = ("pending", "active", "retiring", "retired")
DNS_STRING_BYTES = 255
P = ParamSpec("P")
R = TypeVar("R")


class InputError(ValueError):
    """A request about keys that cannot be done; `field` names the input at fault (the API
    answers status 11 with it)."""

    def __init__(self, message: str, field: str = "domain") -> None:
        super().__init__(message)
        self.field = field


_SELECTOR = re.compile(
    r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)


@dataclass(frozen=True)
class Origins:
    accounts: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    any: bool = False

    def to_document(self) -> dict[str, Any]:
        return {"accounts": list(self.accounts), "networks": list(self.networks), "any": self.any}

    @classmethod
    def from_document(cls, document: Any) -> Origins:
        if not isinstance(document, dict):
            raise InputError("expected an object with accounts, networks and any", "origins")
        accounts = tuple(str(name) for name in document.get("accounts", ()))
        networks = tuple(str(network) for network in document.get("networks", ()))
        return cls.checked(accounts, networks, bool(document.get("any", False)))

    @classmethod
    def checked(cls, accounts: Iterable[str], networks: Iterable[str], anyone: bool) -> Origins:
        names = tuple(accounts)
        for name in names:
            if not re.fullmatch(r"[a-z_][a-z0-9_.-]{0,31}\$?", name):
                raise InputError(f"{name[:40]!r} is not a Unix account name", "origins")
        normalized = []
        for network in networks:
            try:
                normalized.append(str(ipaddress.ip_network(network, strict=False)))
            except ValueError:
                raise InputError(f"{network[:60]!r} is not a network", "origins") from None
        return cls(names, tuple(normalized), anyone)

    def allow(self, account: str | None, peer: str | None) -> bool:
        if self.any:
            return True
        if account is not None and account in self.accounts:
            return True
        address = client_address(peer) if peer is not None and self.networks else None
        if address is None:
            return False
        return any(address in ipaddress.ip_network(network) for network in self.networks)


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    algorithm: str  # "rsa" or "ed25519"
    bits: int  # 256 for ed25519
    state: str
    origins: Origins
    testing: bool = False  # t=y in the record (InterWorx's testing_mode)
    public_key: str = ""  # the record's p= value
    created: float = 0.0
    activated: float | None = None
    retire_after: float | None = None  # while retiring: when it becomes retired

    def to_document(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "selector": self.selector,
            "algorithm": self.algorithm,
            "bits": self.bits,
            "state": self.state,
            "origins": self.origins.to_document(),
            "testing": self.testing,
            "public_key": self.public_key,
            "created": self.created,
            "activated": self.activated,
            "retire_after": self.retire_after,
        }

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> DkimKey:
        return cls(
            domain=str(document["domain"]),
            selector=str(document["selector"]),
            algorithm=str(document["algorithm"]),
            bits=int(document["bits"]),
            state=str(document["state"]),
            origins=Origins.from_document(document.get("origins", {})),
            testing=bool(document.get("testing", False)),
            public_key=str(document.get("public_key", "")),
            created=float(document.get("created", 0.0)),
            activated=document.get("activated"),
            retire_after=document.get("retire_after"),
        )

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def record_text(self) -> str:
        kind = "ed25519" if self.algorithm == "ed25519" else "rsa"
        testing = "; t=y" if self.testing else ""
        return f"v=DKIM1; k={kind}{testing}; p={self.public_key}"

    @property
    def record_strings(self) -> list[str]:
        """The TXT record's character-strings: DNS carries at most 255 bytes in each."""
        text = self.record_text
        return [text[i : i + DNS_STRING_BYTES] for i in range(0, len(text), DNS_STRING_BYTES)]

    @property
    def zone_line(self) -> str:
        quoted = " ".join(f'"{piece}"' for piece in self.record_strings)
        return f"{self.record_name}. 3600 IN TXT ( {quoted} )"


def normalize_domain(domain: str) -> str:
    """A From domain as keys are filed: lower case, no final dot, A-labels; InputError for
    anything that is not a host name (a path, control characters, a literal)."""
    text = domain.strip().lower().rstrip(".")
    if not text or has_control_characters(text) or "/" in text or text.startswith("["):
        raise InputError(f"domain {domain[:80]!r} is not a host name")
    try:
        if not text.isascii():
            text = text.encode("idna").decode("ascii")
        check_domain(text)
    except (AddressError, UnicodeError):
        raise InputError(f"domain {domain[:80]!r} is not a host name") from None
    if not re.fullmatch(r"[a-z0-9_-]+(\.[a-z0-9_-]+)+", text):
        raise InputError(f"domain {domain[:80]!r} is not a host name")
    return text


def check_selector(selector: str) -> str:
    text = selector.strip().lower()
    if not _SELECTOR.fullmatch(text) or len(text) > 63:
        raise InputError(
            f"{selector[:80]!r}: letters, digits and hyphens in dot-separated labels",
            "selector",
        )
    return text


def new_selector(now: float, taken: Iterable[str]) -> str:
    """Date-based, as Google's and Postal's are: sw202612, then sw202612b, c..."""
    base = "sw" + datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y%m")
    used = set(taken)
    if base not in used:
        return base
    for letter in "bcdefghijklmnopqrstuvwxyz":
        if base + letter not in used:
            return base + letter
    return f"{base}-{int(now)}"


def _public_value(private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    public = private.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        raw = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return base64.b64encode(raw).decode()


def load_private_key(pem: bytes) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    """A PEM private key we can sign with; InputError naming what is wrong otherwise."""
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InputError("the key is not an unencrypted PEM private key", "key") from None
    if isinstance(private, rsa.RSAPrivateKey):
        if not RSA_BITS[0] <= private.key_size <= RSA_BITS[1]:
            raise InputError(f"RSA keys of {RSA_BITS[0]} to {RSA_BITS[1]} bits are accepted", "key")
        return private
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return private
    raise InputError("only RSA and Ed25519 keys sign DKIM", "key")


def _serialized(change: Callable[P, R]) -> Callable[P, R]:
    """A KeyStore change, read-modify-write under the store's lock."""

    @functools.wraps(change)
    def locked(*arguments: P.args, **keywords: P.kwargs) -> R:
        store = arguments[0]
        assert isinstance(store, KeyStore)
        with store.changing():
            return change(*arguments, **keywords)

    return locked


class KeyStore:
    """The keys of one instance, on disk. Every change is written before it is answered, and
    changes take turns (`changing`): the panel's threads, the CLI and the engine's retiring
    of keys each read keys.json, change it and write it whole, so one at a time."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.index_path = directory / "keys.json"
        self._thread_lock = threading.RLock()
        self._file_lock = FileLock(directory / ".lock")
        self._depth = 0

    @contextlib.contextmanager
    def changing(self) -> Iterator[None]:
        """Held around a change, or a check and the change it allows (a domain without keys
        gets its first): other threads and processes wait. Reentrant within a thread."""
        with self._thread_lock:
            if self._depth == 0:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._file_lock.acquire()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._file_lock.release()

    # --- reading -----------------------------------------------------------------------------

    def all_keys(self) -> list[DkimKey]:
        try:
            document = json.loads(self.index_path.read_bytes())
        except FileNotFoundError:
            return []
        return [DkimKey.from_document(entry) for entry in document.get("keys", [])]

    def of_domain(self, domain: str) -> list[DkimKey]:
        wanted = normalize_domain(domain)
        return [key for key in self.all_keys() if key.domain == wanted]

    def key_path(self, key: DkimKey) -> Path:
        return self.directory / key.domain / f"{key.selector}.pem"

    def signing_key(self, key: DkimKey) -> SigningKey:
        return SigningKey(
            key.domain, key.selector, load_private_key(self.key_path(key).read_bytes())
        )

    # --- changing ----------------------------------------------------------------------------

    def _write(self, keys: list[DkimKey]) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        document = {"version": 1, "keys": [key.to_document() for key in keys]}
        atomic_write(self.index_path, json.dumps(document, indent=1).encode() + b"\n", 0o600)

    def _store_private(
        self, key: DkimKey, private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ) -> None:
        folder = self.directory / key.domain
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        atomic_write(self.key_path(key), pem, 0o600)

    @_serialized
    def add(
        self,
        domain: str,
        *,
        selector: str | None = None,
        algorithm: str = "rsa",
        bits: int = DEFAULT_BITS,
        origins: Origins | None = None,
        testing: bool = False,
        pem: bytes | None = None,
        pending: bool | None = None,
        now: float | None = None,
    ) -> DkimKey:
        """A new key for `domain`: generated, or imported from `pem`. Active when it is the
        domain's first usable key, pending otherwise (unless `pending` says)."""
        moment = time.time() if now is None else now
        name = normalize_domain(domain)
        keys = self.all_keys()
        mine = [key for key in keys if key.domain == name]
        chosen = (
            check_selector(selector)
            if selector
            else new_selector(moment, (k.selector for k in mine))
        )
        if any(key.selector == chosen for key in mine):
            raise InputError(f"{name} already has a key with selector {chosen!r}", "selector")
        if pem is not None:
            private = load_private_key(pem)
        elif algorithm == "ed25519":
            private = ed25519.Ed25519PrivateKey.generate()
        elif algorithm == "rsa":
            if not RSA_BITS[0] <= bits <= RSA_BITS[1] or bits % 8:
                raise InputError(f"{RSA_BITS[0]} to {RSA_BITS[1]}, a multiple of 8", "bits")
            private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        else:
            raise InputError(f"one of {', '.join(ALGORITHMS)}", "algorithm")
        is_ed = isinstance(private, ed25519.Ed25519PrivateKey)
        live = [key for key in mine if key.state in ("pending", "active")]
        wait = pending if pending is not None else bool(live)
        key = DkimKey(
            domain=name,
            selector=chosen,
            algorithm="ed25519" if is_ed else "rsa",
            bits=256 if is_ed else private.key_size,  # type: ignore[union-attr]
            state="pending" if wait else "active",
            origins=origins or Origins(),
            testing=testing,
            public_key=_public_value(private),
            created=moment,
            activated=None if wait else moment,
        )
        self._store_private(key, private)
        self._write([*keys, key])
        return key

    @_serialized
    def update(
        self, domain: str, *, origins: Origins | None = None, testing: bool | None = None
    ) -> list[DkimKey]:
        """Change the allowed origins or the testing flag of every key of `domain`."""
        name = normalize_domain(domain)
        keys = self.all_keys()
        if not any(key.domain == name for key in keys):
            raise InputError(f"no DKIM key for {name}")
        changed = [
            replace(
                key,
                origins=origins if origins is not None else key.origins,
                testing=testing if testing is not None else key.testing,
            )
            if key.domain == name
            else key
            for key in keys
        ]
        self._write(changed)
        return [key for key in changed if key.domain == name]

    @_serialized
    def activate(
        self, domain: str, selector: str, retire_after_seconds: float, now: float | None = None
    ) -> DkimKey:
        """Sign with this key from now on; the domain's active key of the same algorithm
        starts retiring (a domain signing with RSA and Ed25519 rotates each on its own)."""
        moment = time.time() if now is None else now
        name, chosen = normalize_domain(domain), check_selector(selector)
        keys = self.all_keys()
        target = next((k for k in keys if k.domain == name and k.selector == chosen), None)
        if target is None:
            raise InputError(f"{name} has no key with selector {chosen!r}")
        if target.state not in ("pending", "active"):
            raise InputError(f"{name} {chosen}: a {target.state} key cannot be made active")
        found = replace(target, state="active", activated=target.activated or moment)
        changed = []
        for key in keys:
            if key is target:
                key = found
            elif key.domain == name and key.state == "active" and key.algorithm == found.algorithm:
                key = replace(key, state="retiring", retire_after=moment + retire_after_seconds)
            changed.append(key)
        self._write(changed)
        return found

    @_serialized
    def abort(self, domain: str) -> list[DkimKey]:
        """Drop the domain's pending keys (a rotation given up); the active one stays."""
        name = normalize_domain(domain)
        keys = self.all_keys()
        dropped = [key for key in keys if key.domain == name and key.state == "pending"]
        if not dropped:
            raise InputError(f"{name} has no rotation in progress")
        self._write([key for key in keys if key not in dropped])
        for key in dropped:
            self.key_path(key).unlink(missing_ok=True)
        return dropped

    @_serialized
    def retire_due(self, now: float | None = None) -> list[DkimKey]:
        """Retiring keys whose time has come become retired; those are returned."""
        moment = time.time() if now is None else now
        keys, done = [], []
        for key in self.all_keys():
            if key.state == "retiring" and (key.retire_after or 0) <= moment:
                key = replace(key, state="retired")
                done.append(key)
            keys.append(key)
        if done:
            self._write(keys)
        return done

    def export(self, domain: str) -> list[dict[str, Any]]:
        """The domain's keys with their private keys (`pem`): what a cluster's manager pushes
        to its nodes over the pinned API, so that they sign with the same keys. Never an
        API answer, never logged."""
        return [
            {**key.to_document(), "pem": self.key_path(key).read_text()}
            for key in self.of_domain(domain)
        ]

    @_serialized
    def replace_domain(self, domain: str, documents: list[dict[str, Any]]) -> list[DkimKey]:
        """The domain's keys become exactly these (`export`'s, from the manager), checked
        whole before anything is written: InputError and no change if any is wrong."""
        name = normalize_domain(domain)
        incoming = []
        for document in documents:
            try:
                key = DkimKey.from_document(document)
                private = load_private_key(str(document["pem"]).encode())
            except (KeyError, TypeError, ValueError) as error:
                if isinstance(error, InputError):
                    raise
                raise InputError(f"not a key as a manager sends it: {error}", "keys") from None
            check_selector(key.selector)
            if key.domain != name or key.state not in STATES or key.algorithm not in ALGORITHMS:
                raise InputError(f"key {key.selector!r} is not one of {name}'s", "keys")
            if _public_value(private) != key.public_key:
                raise InputError(f"key {key.selector!r}: its private key is another", "keys")
            incoming.append((key, private))
        keys = self.all_keys()
        for key, private in incoming:
            self._store_private(key, private)
        kept = [key for key, _ in incoming]
        self._write([key for key in keys if key.domain != name] + kept)
        selectors = {key.selector for key in kept}
        for key in keys:
            if key.domain == name and key.selector not in selectors:
                self.key_path(key).unlink(missing_ok=True)
        return kept

    @_serialized
    def delete(self, domain: str) -> list[DkimKey]:
        """Every key of `domain`, and their files."""
        name = normalize_domain(domain)
        keys = self.all_keys()
        gone = [key for key in keys if key.domain == name]
        if not gone:
            raise InputError(f"no DKIM key for {name}")
        self._write([key for key in keys if key.domain != name])
        for key in gone:
            self.key_path(key).unlink(missing_ok=True)
        folder = self.directory / name
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        return gone


@dataclass
class SignerCache:
    """What the signer needs, read again only when keys.json changes: per domain, its active
    keys as parsed private keys (parsing a PEM costs more than signing with it)."""

    store: KeyStore
    _seen: tuple[int, int, int] | None = None
    _active: dict[str, list[tuple[DkimKey, SigningKey]]] = field(default_factory=dict)

    def active(self, domain: str) -> list[tuple[DkimKey, SigningKey]]:
        self._refresh()
        return self._active.get(domain, [])

    def any(self) -> bool:
        """Whether any key signs at all (the common case of none costs one stat)."""
        self._refresh()
        return bool(self._active)

    def _refresh(self) -> None:
        try:
            stat = os.stat(self.store.index_path)
            seen: tuple[int, int, int] | None = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        except FileNotFoundError:
            seen = None
        if seen == self._seen:
            return
        self._active = {}
        for key in self.store.all_keys() if seen else []:
            if key.state == "active":
                try:
                    pair = (key, self.store.signing_key(key))
                except (OSError, InputError):
                    continue  # a missing or broken key file signs nothing
                self._active.setdefault(key.domain, []).append(pair)
        self._seen = seen
