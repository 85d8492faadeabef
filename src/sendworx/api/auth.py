"""Turns the `auth` argument of `iworx.route` into a Caller, or refuses with status 401.

Forms: the armored key string, {apikey}, {sessionid}, {email, password}. SiteWorx forms
(with `domain`) are refused here: server-wide mail settings need a NodeWorx user.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from sendworx.api.registry import Caller
from sendworx.api.users import User, UserStore, check_password
from sendworx.shared.errors import AuthenticationFailed


@dataclass
class Session:
    email: str
    expires_at: float


class FailureTracker:
    """Locks an address out for a while after too many failed authentications."""

    def __init__(self, limit: int, window: float, lockout: float) -> None:
        self._limit, self._window, self._lockout = limit, window, lockout
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}

    def locked_for(self, peer: str, now: float) -> float:
        return max(0.0, self._locked_until.get(peer, 0.0) - now)

    def failed(self, peer: str, now: float) -> None:
        recent = self._failures.setdefault(peer, deque())
        recent.append(now)
        while recent and recent[0] < now - self._window:
            recent.popleft()
        if len(recent) >= self._limit:
            self._locked_until[peer] = now + self._lockout
            recent.clear()

    def succeeded(self, peer: str) -> None:
        self._failures.pop(peer, None)


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

    def new_session(self, email: str) -> str:
        session_id = secrets.token_urlsafe(32)
        self._sessions[session_id] = Session(email, time.time() + self._session_seconds)
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
        wait = self._failures.locked_for(peer, now)
        if wait > 0:
            raise AuthenticationFailed(
                f"too many failed attempts from {peer}; try again in {int(wait) + 1} seconds"
            )
        user = await self._user_for(auth, now)
        if user is None:
            self._failures.failed(peer, now)
            raise AuthenticationFailed("authentication failed")
        self._failures.succeeded(peer)
        return Caller(user.email, frozenset(user.permissions), user.master, peer)

    async def _user_for(self, auth: object, now: float) -> User | None:
        if isinstance(auth, str):
            return self.users.user_for_key(auth)
        if not isinstance(auth, Mapping):
            return None
        if "domain" in auth:
            raise AuthenticationFailed(
                "SiteWorx credentials cannot control server-wide mail settings; use a NodeWorx user"
            )
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
        if session.expires_at < now:
            del self._sessions[session_id]
            return None
        session.expires_at = now + self._session_seconds
        return self.users.get(session.email)


_DUMMY_HASH = (
    "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
)
