"""NodeWorx users and their API keys, stored hashed in one atomically written JSON file.

Passwords are scrypt hashes; keys are kept only as SHA-256 digests of their normalised text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sendworx.shared.durable import atomic_write
from sendworx.shared.watched_file import WatchedFile

KEY_HEADER = "-----BEGIN INTERWORX API KEY-----"
KEY_FOOTER = "-----END INTERWORX API KEY-----"
PERMISSIONS = frozenset({"EMAIL", "SERVICES", "CLUSTER"})
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_CACHED_KEYS = 256
_CACHED_KEY_CHARS = 1024  # an armored key is about 330; longer texts are never stored
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


class UserError(ValueError):
    """A user management request that cannot be done; the message says why."""


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    encoded = [base64.b64encode(part).decode() for part in (salt, digest)]
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${encoded[0]}${encoded[1]}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        candidate = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=32,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(candidate, base64.b64decode(digest))


def new_api_key() -> str:
    """An armored key like InterWorx's: a base64 block between BEGIN and END lines."""
    body = base64.b64encode(secrets.token_bytes(192)).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join([KEY_HEADER, *lines, KEY_FOOTER]) + "\n"


def key_digest(text: str) -> str:
    """Digest of a key after dropping all whitespace, so CRLF and re-wrapping do not matter."""
    normalized = "".join(text.split())
    return hashlib.sha256(normalized.encode("utf-8", "replace")).hexdigest()


@dataclass
class User:
    email: str
    name: str
    permissions: list[str]
    master: bool = False
    password_hash: str = ""
    key_digests: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)


def _parse_users(content: bytes) -> tuple[dict[str, User], dict[str, User]]:
    document = json.loads(content)
    users = {entry["email"].lower(): User(**entry) for entry in document["users"]}
    by_digest = {digest: user for user in users.values() for digest in user.key_digests}
    return users, by_digest


class UserStore:
    """Reads the file on every change so the CLI and a running panel never overwrite each other."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file = WatchedFile(str(path), _parse_users)  # checked on every API request
        # Digests of key texts seen lately: the same few keys arrive on every request.
        self._digests: dict[str, str] = {}

    def _load_both(self) -> tuple[dict[str, User], dict[str, User]]:
        """Users by lowercase e-mail, and by key digest."""
        return self._file.current() or ({}, {})

    def _load(self) -> dict[str, User]:
        return self._load_both()[0]

    def _save(self, users: dict[str, User]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        document = {"users": [asdict(user) for user in users.values()]}
        atomic_write(self.path, json.dumps(document, indent=1).encode(), mode=0o600)
        self._file.forget()

    def users(self) -> list[User]:
        return list(self._load().values())

    def get(self, email: str) -> User | None:
        return self._load().get(email.lower())

    def add(
        self, email: str, name: str, password: str, permissions: list[str], *, master: bool = False
    ) -> User:
        if not _EMAIL.match(email):
            raise UserError(f"{email!r} is not an e-mail address")
        unknown = set(permissions) - PERMISSIONS
        if unknown:
            raise UserError(f"unknown permissions: {', '.join(sorted(unknown))}")
        if len(password) < 8:
            raise UserError("password must have at least 8 characters")
        with self._lock:
            users = dict(self._load())
            if email.lower() in users:
                raise UserError(f"user {email} exists already")
            user = User(email, name, sorted(set(permissions)), master, hash_password(password))
            users[email.lower()] = user
            self._save(users)
        return user

    def remove(self, email: str) -> None:
        with self._lock:
            users = dict(self._load())
            user = users.get(email.lower())
            if user is None:
                raise UserError(f"no user {email}")
            if user.master:
                raise UserError("the master user cannot be removed")
            del users[email.lower()]
            self._save(users)

    def issue_key(self, email: str, *, replace: bool = True) -> str:
        """A new key for `email`; with `replace`, earlier keys stop working."""
        key = new_api_key()
        with self._lock:
            users = dict(self._load())
            user = users.get(email.lower())
            if user is None:
                raise UserError(f"no user {email}")
            user.key_digests = (
                [key_digest(key)] if replace else [*user.key_digests, key_digest(key)]
            )
            self._save(users)
        return key

    def user_for_key(self, key_text: str) -> User | None:
        """Looked up by the SHA-256 digest of the key: the time a lookup takes depends on the
        digest of what the caller sent, never on how much of a stored key it matched."""
        candidate = self._digests.get(key_text)
        if candidate is None:
            candidate = key_digest(key_text)
            if len(key_text) <= _CACHED_KEY_CHARS:
                if len(self._digests) >= _CACHED_KEYS:
                    self._digests.clear()  # many different keys: someone is guessing
                self._digests[key_text] = candidate
        return self._load_both()[1].get(candidate)
