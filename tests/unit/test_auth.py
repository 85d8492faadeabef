"""Authentication against a real users file: lockouts that cannot be outrun or reset by
someone else's success, per account and per IPv6 /64, and sessions that end with the
credentials that made them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from sendworx.api import auth as auth_module
from sendworx.api.auth import Authenticator, FailureTracker, address_key
from sendworx.api.users import UserStore
from sendworx.shared.errors import AuthenticationFailed

PASSWORD = "correct horse battery"


def _authenticator(tmp_path: Path, limit: int = 5, session_seconds: float = 600) -> Authenticator:
    users = UserStore(tmp_path / "users.json")
    users.add("a@example.com", "A", PASSWORD, ["EMAIL"])
    users.add("b@example.com", "B", PASSWORD, ["EMAIL"])
    return Authenticator(
        users, session_seconds=session_seconds, failures=FailureTracker(limit, 60, 60)
    )


async def _try(authenticator: Authenticator, auth: object, peer: str = "192.0.2.1") -> str:
    try:
        caller = await authenticator.authenticate(auth, peer)
    except AuthenticationFailed as error:
        return "locked" if "too many" in str(error) else "refused"
    return caller.email


def _password(email: str, password: str = "wrong password") -> dict[str, str]:
    return {"email": email, "password": password}


def test_concurrent_guesses_cannot_outrun_the_count(tmp_path: Path) -> None:
    """30 guesses at once, the right one last: only the first 5 are checked."""
    authenticator = _authenticator(tmp_path)

    async def burst() -> list[str]:
        guesses = [_password("a@example.com") for _ in range(29)]
        guesses.append(_password("a@example.com", PASSWORD))
        return await asyncio.gather(*(_try(authenticator, guess) for guess in guesses))

    answers = asyncio.run(burst())
    assert answers.count("refused") == 5 and answers.count("locked") == 25
    assert answers[-1] == "locked"


def test_one_accounts_success_never_forgives_failures_against_another(tmp_path: Path) -> None:
    authenticator = _authenticator(tmp_path)

    async def scenario() -> list[str]:
        answers = [await _try(authenticator, _password("b@example.com")) for _ in range(4)]
        answers.append(await _try(authenticator, _password("a@example.com", PASSWORD)))
        answers.append(await _try(authenticator, _password("b@example.com")))
        answers.append(await _try(authenticator, _password("b@example.com", PASSWORD)))
        return answers

    assert asyncio.run(scenario()) == ["refused"] * 4 + ["a@example.com", "refused", "locked"]


def test_an_account_is_locked_whatever_address_the_guesses_come_from(tmp_path: Path) -> None:
    authenticator = _authenticator(tmp_path)
    key = authenticator.users.issue_key("a@example.com")

    async def scenario() -> list[str]:
        answers = [
            await _try(authenticator, _password("a@example.com"), f"198.51.100.{n}")
            for n in range(5)
        ]
        answers.append(
            await _try(authenticator, _password("a@example.com", PASSWORD), "203.0.113.9")
        )
        answers.append(
            await _try(authenticator, _password("b@example.com", PASSWORD), "203.0.113.9")
        )
        answers.append(await _try(authenticator, key, "203.0.113.9"))  # its key still works
        return answers

    assert asyncio.run(scenario()) == [
        *["refused"] * 5,
        "locked",
        "b@example.com",
        "a@example.com",
    ]


def test_an_ipv6_slash_64_counts_as_one_address(tmp_path: Path) -> None:
    assert address_key("2001:db8::1") == address_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    authenticator = _authenticator(tmp_path)

    async def scenario() -> list[str]:
        answers = [
            await _try(authenticator, {"apikey": "nonsense"}, f"2001:db8::{n}") for n in range(5)
        ]
        answers.append(await _try(authenticator, {"apikey": "nonsense"}, "2001:db8::99"))
        answers.append(await _try(authenticator, {"apikey": "nonsense"}, "2001:db8:0:1::1"))
        return answers

    assert asyncio.run(scenario()) == [*["refused"] * 5, "locked", "refused"]


def test_sessions_end_when_the_key_rotates_or_the_user_goes(tmp_path: Path) -> None:
    authenticator = _authenticator(tmp_path)
    authenticator.users.issue_key("a@example.com")
    first = authenticator.new_session("a@example.com")
    other = authenticator.new_session("b@example.com")

    async def check(session_id: str) -> str:
        return await _try(authenticator, {"sessionid": session_id})

    assert asyncio.run(check(first)) == "a@example.com"
    authenticator.users.issue_key("a@example.com")  # what `sendworx apikey` does
    assert asyncio.run(check(first)) == "refused"
    assert not authenticator.has_session(first)
    assert asyncio.run(check(other)) == "b@example.com"
    authenticator.users.remove("b@example.com")
    assert asyncio.run(check(other)) == "refused"


def test_expired_sessions_and_old_failures_are_swept_without_being_presented(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth_module, "SWEEP_SECONDS", 0.0)
    authenticator = _authenticator(tmp_path, session_seconds=0.05)
    sessions = [authenticator.new_session("a@example.com") for _ in range(100)]
    time.sleep(0.1)
    assert asyncio.run(_try(authenticator, {"apikey": "nonsense"})) == "refused"
    assert not any(authenticator.has_session(session) for session in sessions)


def test_many_concurrent_requests_with_a_valid_key_or_password_are_all_served(
    tmp_path: Path,
) -> None:
    """A billing system's parallel calls: counted attempts that turn out right are taken
    back, so they never add up to a lockout."""
    authenticator = _authenticator(tmp_path)
    key = authenticator.users.issue_key("a@example.com")

    async def burst() -> list[str]:
        keyed = [_try(authenticator, key) for _ in range(50)]
        return await asyncio.gather(*keyed)

    assert asyncio.run(burst()) == ["a@example.com"] * 50

    async def logins() -> list[str]:
        return [await _try(authenticator, _password("a@example.com", PASSWORD)) for _ in range(20)]

    assert asyncio.run(logins()) == ["a@example.com"] * 20
