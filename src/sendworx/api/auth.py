"""Turns the `auth` argument of `iworx.route` into a Caller, or refuses with status 401.

Forms: the armored key string, {apikey}, {sessionid}, {email, password}; and SiteWorx's,
the same with `domain` ({domain, apikey}, {domain, email, password}): a NodeWorx user acting
for that one domain, on SiteWorx controllers only (the registry checks which panel).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import secrets
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from sendworx.api.registry import Caller
from sendworx.api.users import User, UserStore, check_password
from sendworx.shared.addresses import client_address
from sendworx.shared.dkim_keys import InputError, normalize_domain
from sendworx.shared.errors import AuthenticationFailed

SWEEP_SECONDS = 60.0  # ended sessions and old failure counts are dropped this often


@dataclass
class Session:
    email: str
    expires_at: float
    credentials: str  # the user's credentials when it began: it ends when they change


def _credentials(user: User) -> str:
    """A fingerprint of what proves a user: a new key or password, or a deactivation, ends
    their sessions."""
    material = "\n".join([user.password_hash, str(user.active), *sorted(user.key_digests)])
    return hashlib.sha256(material.encode()).hexdigest()


def address_key(peer: str) -> str:
    """Who a failure is counted against: the address, or its /64 for IPv6 (one subscriber
    usually holds a whole /64)."""
    address = client_address(peer)
    if address is None:
        return peer
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class FailureTracker:
    """Locks out an address (and, for passwords, an account) for a while after too many
    failed authentications within a window.

    An attempt is counted *before* it is checked (`count`), so concurrent guesses cannot
    outrun the limit, and a success takes back only its own count (`forgive`): one account's
    success never forgives failures against another."""

    def __init__(self, limit: int, window: float, lockout: float) -> None:
        self._limit, self._window, self._lockout = limit, window, lockout
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}

    def locked_for(self, keys: list[str], now: float) -> float:
        """Seconds `keys` are refused for: locked out, or as many attempts under way or
        failed in the window as the limit allows."""
        wait = 0.0
        for key in keys:
            wait = max(wait, self._locked_until.get(key, 0.0) - now)
            if len(self._recent(key, now)) >= self._limit:
                wait = max(wait, self._lockout)
        return wait

    def count(self, keys: list[str], now: float) -> None:
        """An attempt under way: it counts as a failure until `forgive` takes it back."""
        for key in keys:
            self._recent(key, now).append(now)

    def forgive(self, keys: list[str], at: float) -> None:
        """Take back the attempt counted at `at` (it was right)."""
        for key in keys:
            recent = self._failures.get(key)
            if recent is not None and at in recent:
                recent.remove(at)

    def failed(self, keys: list[str], now: float) -> None:
        """A counted attempt failed: at the limit, the key is locked out."""
        for key in keys:
            recent = self._recent(key, now)
            if len(recent) >= self._limit:
                self._locked_until[key] = now + self._lockout
                recent.clear()

    def _recent(self, key: str, now: float) -> deque[float]:
        recent = self._failures.setdefault(key, deque())
        while recent and recent[0] < now - self._window:
            recent.popleft()
        return recent

    def sweep(self, now: float) -> None:
        for key, recent in list(self._failures.items()):
            while recent and recent[0] < now - self._window:
                recent.popleft()
            if not recent:
                del self._failures[key]
        for key in [key for key, until in self._locked_until.items() if until <= now]:
            del self._locked_until[key]


class Authenticator:
    def __init__(
        self,
        users: UserStore,
        *,
        session_seconds: float,
        failures: FailureTracker,
    ) -> None:
        self.users = users
        self._session_seconds = session_seconds
        self._sessions: dict[str, Session] = {}
        self._failures = failures
        self._next_sweep = 0.0

    def new_session(self, email: str) -> str:
        user = self.users.get(email)
        if user is None:
            raise AuthenticationFailed("authentication failed")
        session_id = secrets.token_urlsafe(32)
        now = time.time()
        self._sessions[session_id] = Session(
            user.email, now + self._session_seconds, _credentials(user)
        )
        self._sweep(now)
        return session_id

    def has_session(self, session_id: str) -> bool:
        return session_id in self._sessions

    def end_session(self, session_id: str) -> None:
        """Log out: the session stops working at once."""
        self._sessions.pop(session_id, None)

    def session_caller(self, session_id: str, peer: str) -> Caller | None:
        """Who a live session belongs to (a web page's cookie), or None once it has ended.
        Session ids are unguessable, so an ended one is not counted as a failed attempt."""
        user = self._session_user(session_id, time.time())
        if user is None:
            return None
        return Caller(user.email, frozenset(user.permissions), user.master, peer)

    async def authenticate(self, auth: object, peer: str) -> Caller:
        now = time.time()
        self._sweep(now)
        keys = [address_key(peer)]
        account = _password_account(auth)
        if account is not None:
            keys.append("account " + account)
        wait = self._failures.locked_for(keys, now)
        if wait > 0:
            raise AuthenticationFailed(
                f"too many failed attempts from {peer} or for this account; "
                f"try again in {int(wait) + 1} seconds"
            )
        # Counted before it is checked (a password costs a scrypt in a thread meanwhile), so
        # concurrent guesses see each other; taken back only if it was right.
        self._failures.count(keys, now)
        user = await self._user_for(auth, now)
        if user is None or not user.active:
            self._failures.failed(keys, now)
            raise AuthenticationFailed("authentication failed")
        self._failures.forgive(keys, now)
        domain = _siteworx_domain(auth)
        return Caller(user.email, frozenset(user.permissions), user.master, peer, domain)

    def _sweep(self, now: float) -> None:
        """Drop expired sessions and old failure counts, now and then (not a task of its own:
        the panel and the CLI both use this class)."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_SECONDS
        for session_id in [sid for sid, s in self._sessions.items() if s.expires_at < now]:
            del self._sessions[session_id]
        self._failures.sweep(now)

    async def _user_for(self, auth: object, now: float) -> User | None:
        if isinstance(auth, str):
            return self.users.user_for_key(auth)
        if not isinstance(auth, Mapping):
            return None
        if "domain" in auth and _siteworx_domain(auth) is None:
            return None
        if isinstance(auth.get("apikey"), str):
            return self.users.user_for_key(auth["apikey"])
        if isinstance(auth.get("sessionid"), str):
            return self._session_user(auth["sessionid"], now)
        email, password = auth.get("email"), auth.get("password")
        if isinstance(email, str) and isinstance(password, str):
            user = self.users.get(email)
            stored = user.password_hash if user else _DUMMY_HASH
            # Always pay for one scrypt, known user or not, so timing says nothing.
            matches = await asyncio.to_thread(check_password, password, stored)
            return user if matches and user is not None else None
        return None

    def _session_user(self, session_id: str, now: float) -> User | None:
        session = self._sessions.get(session_id)
        if session is None:
            return None
        user = self.users.get(session.email)
        if session.expires_at < now or user is None or _credentials(user) != session.credentials:
            # Expired, the user removed, or their key or password changed since it began.
            del self._sessions[session_id]
            return None
        session.expires_at = now + self._session_seconds
        return user


def _siteworx_domain(auth: object) -> str | None:
    """The domain a SiteWorx-style login acts for, as DKIM keys file it, or None."""
    if not isinstance(auth, Mapping) or not isinstance(auth.get("domain"), str):
        return None
    try:
        return normalize_domain(auth["domain"][:300])
    except InputError:
        return None


def _password_account(auth: object) -> str | None:
    """The account a password attempt is for (counted per account as well as per address)."""
    if isinstance(auth, Mapping) and "apikey" not in auth:
        email, password = auth.get("email"), auth.get("password")
        if isinstance(email, str) and isinstance(password, str) and "sessionid" not in auth:
            return email.strip().lower()[:320]
    return None


_DUMMY_HASH = (
    "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
)
