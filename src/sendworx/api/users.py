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
from dataclasses import asdict, dataclass, field, replace
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


def _check_email(email: str) -> None:
    if not _EMAIL.match(email):
        raise UserError(f"{email!r} is not an e-mail address")


def _check_permissions(permissions: list[str]) -> None:
    unknown = set(permissions) - PERMISSIONS
    if unknown:
        raise UserError(f"unknown permissions: {', '.join(sorted(unknown))}")


def _check_password(password: str) -> None:
    if len(password) < 8:
        raise UserError("password must have at least 8 characters")


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
    userid: int = 0  # stable, never reused (InterWorx clients name users by number too)
    active: bool = True  # a deactivated user cannot log in or use a key


@dataclass(frozen=True)
class _Users:
    by_email: dict[str, User]  # lower case
    by_digest: dict[str, User]  # active users' key digests
    next_userid: int  # never reused: kept in the file past deleted users


def _parse_users(content: bytes) -> _Users:
    document = json.loads(content)
    users = {entry["email"].lower(): User(**entry) for entry in document["users"]}
    # Files from before user ids: numbered in the order the users were created.
    next_id = max((user.userid for user in users.values()), default=0) + 1
    next_id = max(next_id, int(document.get("next_userid", 0)))
    for user in sorted(users.values(), key=lambda user: user.created):
        if not user.userid:
            user.userid, next_id = next_id, next_id + 1
    by_digest = {
        digest: user for user in users.values() if user.active for digest in user.key_digests
    }
    return _Users(users, by_digest, next_id)


class UserStore:
    """Reads the file on every change so the CLI and a running panel never overwrite each other."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file = WatchedFile(str(path), _parse_users)  # checked on every API request
        # Digests of key texts seen lately: the same few keys arrive on every request.
        self._digests: dict[str, str] = {}

    def _load_all(self) -> _Users:
        return self._file.current() or _Users({}, {}, 1)

    def _load(self) -> dict[str, User]:
        """Users by lowercase e-mail."""
        return self._load_all().by_email

    def _save(self, users: dict[str, User]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        next_userid = max(self._next_id(users), self._load_all().next_userid)
        document = {
            "users": [asdict(user) for user in users.values()],
            "next_userid": next_userid,
        }
        atomic_write(self.path, json.dumps(document, indent=1).encode(), mode=0o600)
        self._file.forget()

    def users(self) -> list[User]:
        return list(self._load().values())

    def get(self, email: str) -> User | None:
        return self._load().get(email.lower())

    def add(
        self, email: str, name: str, password: str, permissions: list[str], *, master: bool = False
    ) -> User:
        _check_email(email)
        _check_permissions(permissions)
        _check_password(password)
        with self._lock:
            users = dict(self._load())
            if email.lower() in users:
                raise UserError(f"user {email} exists already")
            user = User(email, name, sorted(set(permissions)), master, hash_password(password))
            user.userid = max(self._next_id(users), self._load_all().next_userid)
            users[email.lower()] = user
            self._save(users)
        return user

    def edit(
        self,
        email: str,
        *,
        name: str | None = None,
        new_email: str | None = None,
        password: str | None = None,
        permissions: list[str] | None = None,
    ) -> User:
        """Change what is given; a new password ends the user's sessions (auth.py)."""
        if new_email is not None:
            _check_email(new_email)
        if permissions is not None:
            _check_permissions(permissions)
        if password is not None:
            _check_password(password)
        with self._lock:
            users = {key: replace(user) for key, user in self._load().items()}
            user = users.pop(email.lower(), None)
            if user is None:
                raise UserError(f"no user {email}")
            if new_email is not None and new_email.lower() in users:
                raise UserError(f"user {new_email} exists already")
            if new_email is not None:
                user.email = new_email
            if name is not None:
                user.name = name
            if password is not None:
                user.password_hash = hash_password(password)
            if permissions is not None and not user.master:  # the master keeps every one
                user.permissions = sorted(set(permissions))
            users[user.email.lower()] = user
            self._save(users)
        return user

    def set_active(self, email: str, active: bool) -> None:
        with self._lock:
            users = {key: replace(user) for key, user in self._load().items()}
            user = users.get(email.lower())
            if user is None:
                raise UserError(f"no user {email}")
            if user.master and not active:
                raise UserError("the master user cannot be deactivated")
            user.active = active
            self._save(users)

    @staticmethod
    def _next_id(users: dict[str, User]) -> int:
        return max((user.userid for user in users.values()), default=0) + 1

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
        return self._load_all().by_digest.get(candidate)
