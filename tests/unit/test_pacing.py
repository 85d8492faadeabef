"""The pure parts of scheduling: fair slots, paces and their adaptive backoff, pacing rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from sendworx.engine.pacing import MIN_RATE, RECOVERY_SECONDS, Pace, is_rate_signal, says_rate
from sendworx.engine.scheduler import Waiting, should_yield
from sendworx.shared.config import ConfigError
from sendworx.shared.policy import BUILT_IN, PacingRule, Policy, load_policy


def _pace(rate: float = 0, connections: int = 5, per_connection: int = 0) -> Pace:
    pace = Pace("test", shared=True)
    pace.configure(
        connections=connections,
        messages_per_connection=per_connection,
        messages_per_minute=rate,
        connection_interval=0,
    )
    return pace


def test_waiting_serves_the_fewest_sessions_first_and_round_robin_among_equals() -> None:
    waiting: Waiting[str] = Waiting()
    waiting.add("a", 2)
    waiting.add("b", 0)
    waiting.add("c", 0)
    waiting.add("b", 0)  # already there with that count: keeps its place
    assert waiting.fewest() == 0 and len(waiting) == 3
    assert [waiting.pop(), waiting.pop(), waiting.pop(), waiting.pop()] == ["b", "c", "a", None]
    waiting.add("a", 1)
    waiting.discard("a")
    assert "a" not in waiting and waiting.fewest() is None


@pytest.mark.parametrize(
    ("own", "fewest", "expected"),
    [(1, None, False), (1, 0, True), (5, 0, True), (5, 3, True), (5, 4, False), (2, 1, False)],
)
def test_a_session_yields_only_to_a_starved_or_clearly_poorer_destination(
    own: int, fewest: int | None, expected: bool
) -> None:
    assert should_yield(own, fewest) is expected


def test_a_rate_spaces_messages_evenly() -> None:
    pace = _pace(rate=120)
    assert pace.message_wait(100.0) == 0
    pace.message_sent(100.0)
    assert pace.message_wait(100.0) == pytest.approx(0.5)
    assert pace.message_wait(100.5) == 0
    pace.message_sent(100.6)
    assert pace.message_wait(100.6) == pytest.approx(0.5)


def test_connections_per_pace_and_messages_per_connection() -> None:
    pace = _pace(connections=2, per_connection=3)
    pace.connection_opened(0.0)
    pace.connection_opened(0.0)
    assert not pace.may_connect(0.0)
    pace.connection_closed()
    assert pace.may_connect(0.0)
    assert not pace.connection_spent(2) and pace.connection_spent(3)
    pace.configure(
        connections=2, messages_per_connection=0, messages_per_minute=0, connection_interval=5
    )
    pace.connection_opened(10.0)
    assert pace.connection_wait(12.0) == pytest.approx(3.0) and not pace.may_connect(12.0)


def test_slow_down_halves_the_rate_and_it_grows_back_after_quiet_minutes() -> None:
    pace = _pace(rate=100)
    pace.slow_down(0.0)
    assert pace.rate == 50 and pace.adapted and pace.backoffs == 1
    assert pace.message_wait(RECOVERY_SECONDS - 1) > 0 or pace.rate == 50
    pace.message_wait(RECOVERY_SECONDS)
    assert pace.rate == 75
    pace.message_wait(3 * RECOVERY_SECONDS)
    assert pace.rate == 100 and not pace.adapted


def test_without_a_configured_rate_the_cut_starts_from_what_was_observed() -> None:
    pace = _pace()
    for tick in range(30):  # 30 messages in 3 s: 600 a minute
        pace.message_sent(tick / 10)
    pace.slow_down(3.0)
    assert pace.rate == pytest.approx(300, rel=0.05)
    for _ in range(4):
        pace.slow_down(3.0)
    assert pace.rate is not None and pace.rate >= MIN_RATE
    pace.message_wait(3.0 + 20 * RECOVERY_SECONDS)
    assert pace.rate is None and not pace.adapted  # the cap is lifted again


def test_a_reload_keeps_a_backoff_in_force_but_never_above_the_new_rate() -> None:
    pace = _pace(rate=100)
    pace.slow_down(0.0)
    pace.configure(
        connections=5, messages_per_connection=0, messages_per_minute=20, connection_interval=0
    )
    assert pace.rate == 20 and pace.configured_rate == 20


@pytest.mark.parametrize(
    ("code", "text", "signal", "rate"),
    [
        (421, "4.3.2 Service shutting down", True, False),
        (421, "4.7.0 Too many connections from your IP", True, True),
        (450, "4.7.28 rate limited", True, True),
        (451, "4.7.500 Server busy. Please try again later", True, False),
        (421, "4.7.0 [TSS04] temporarily deferred due to unexpected volume", True, True),
        (451, "4.7.1 greylisted, try again later", False, False),
        (450, "4.2.1 mailbox busy", False, False),
        (550, "5.7.1 rate of spam too high", False, False),
        (250, "ok", False, False),
    ],
)
def test_which_replies_ask_to_slow_down(code: int, text: str, signal: bool, rate: bool) -> None:
    assert is_rate_signal(code, text) is signal
    assert says_rate(code, text) is rate


def test_rules_match_domains_and_mx_hosts_and_the_file_overrides_built_ins(
    tmp_path: Path,
) -> None:
    policy = Policy()
    assert policy.pacing_for("gmail.com", "gmail-smtp-in.l.google.com") == BUILT_IN[0]
    assert policy.pacing_for("example.org", "mx.example.org") is None
    path = tmp_path / "policy.toml"
    path.write_text(
        '[[pacing]]\nname = "google"\nmx = ["*.GOOGLE.com."]\nconnections = 2\n\n'
        '[[pacing]]\nname = "partner"\ndomains = ["*.partner.test", "partner.test"]\n'
        "messages_per_minute = 30\n"
    )
    loaded = load_policy(path)
    google = loaded.pacing_for("hosted.test", "aspmx.l.google.com")
    assert google is not None and google.connections == 2
    assert [rule.name for rule in loaded.pacing_rules()].count("google") == 1
    partner = loaded.pacing_for("mail.partner.test", None)
    assert partner is not None and partner.messages_per_minute == 30
    assert loaded.pacing_for("partner.test", None) == partner
    assert loaded.pacing_for("notpartner.test", None) is None


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('[[pacing]]\nname = "x"\nconnections = 0\n', "pacing.0.connections"),
        ('[[pacing]]\nname = "x"\nmx = ["*"]\n', "pacing.0.mx"),
        ('[[pacing]]\nname = "x y"\n', "pacing.0.name"),
        ('[[pacing]]\nname = "x"\n[[pacing]]\nname = "x"\n', "unique"),
        ('[[pacing]]\nname = "x"\nspeed = 1\n', "speed"),
        ("[[pacing]\n", "not valid TOML"),
    ],
)
def test_a_bad_policy_file_names_every_problem(tmp_path: Path, text: str, complaint: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=complaint.replace(".", r"\.")):
        load_policy(path)


def test_rule_patterns_are_names_or_star_dot_names() -> None:
    assert PacingRule(name="ok", domains=["Example.COM."]).domains == ["example.com"]
    with pytest.raises(ValueError, match="name"):
        PacingRule(name="bad", domains=["ex*ample.com"])
