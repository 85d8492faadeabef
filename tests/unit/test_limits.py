"""Sending limits: sliding windows per rule and sender, and which rule covers a sender."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sendworx.engine.limits import DAY, HOUR, SendingLimits
from sendworx.shared.policy import Identity, LimitRule, Policy


def _rule(**caps: int) -> LimitRule:
    return LimitRule.model_validate({"name": "r", "scope": "account", **caps})


def test_an_hourly_cap_makes_the_next_message_wait_for_the_oldest_to_leave_the_hour() -> None:
    limits, rule = SendingLimits(), _rule(messages_per_hour=2)
    assert limits.admit(rule, "alice", 1, 1000.0) == 0
    assert limits.admit(rule, "alice", 1, 1500.0) == 0
    assert limits.admit(rule, "alice", 1, 1600.0) == 1000.0 + HOUR
    assert limits.admit(rule, "bob", 1, 1600.0) == 0  # each account counts apart
    assert limits.admit(rule, "alice", 1, 1000.0 + HOUR) == 0  # the window slid
    assert limits.admit(rule, "alice", 1, 1000.0 + HOUR + 1) == 1500.0 + HOUR


def test_recipient_caps_and_daily_caps_hold_together() -> None:
    limits = SendingLimits()
    rule = _rule(recipients_per_hour=10, messages_per_day=3)
    assert limits.admit(rule, "a", 6, 0.0) == 0
    assert limits.admit(rule, "a", 5, 10.0) == HOUR  # 6 + 5 > 10 until the first leaves
    assert limits.admit(rule, "a", 4, 20.0) == 0
    assert limits.admit(rule, "a", 50, 2 * HOUR) == 0  # larger than the cap: it goes alone
    assert limits.admit(rule, "a", 1, 3 * HOUR) == DAY  # the fourth message of the day


def test_idle_counters_are_forgotten() -> None:
    limits, rule = SendingLimits(), _rule(messages_per_hour=1)
    limits.admit(rule, "a", 1, 0.0)
    limits.forget_idle(DAY + 1)
    assert limits.admit(rule, "a", 1, DAY + 1) == 0


def test_the_most_specific_rule_covers_a_sender() -> None:
    policy = Policy(
        limit=[
            LimitRule(name="everyone", scope="all", messages_per_day=100_000),
            LimitRule(name="domains", scope="domain", messages_per_hour=1000),
            LimitRule(name="accounts", scope="account", messages_per_hour=100),
            LimitRule(name="vip", scope="account", match=["News"], messages_per_hour=10_000),
            LimitRule(name="shop", scope="domain", match=["shop.test"], messages_per_hour=50),
            LimitRule(name="ceo", scope="sender", match=["ceo@shop.test"], messages_per_hour=5),
        ]
    )

    def rule_for(sender: str | None, account: str | None, domain: str | None) -> tuple[str, str]:
        found = policy.limit_for(Identity(sender, account, domain))
        assert found is not None
        return found[0].name, found[1]

    assert rule_for("ceo@shop.test", "alice", "shop.test") == ("ceo", "ceo@shop.test")
    assert rule_for("x@shop.test", "news", "shop.test") == ("vip", "news")
    assert rule_for("x@shop.test", "alice", "shop.test") == ("shop", "shop.test")
    assert rule_for("x@other.test", "alice", "other.test") == ("accounts", "alice")
    assert rule_for("x@other.test", None, "other.test") == ("domains", "other.test")
    assert Policy(limit=[policy.limit[0]]).limit_for(Identity("a@b", None, "b")) == (
        policy.limit[0],
        "*",
    )
    assert Policy().limit_for(Identity("a@b", "a", "b")) is None


@pytest.mark.parametrize(
    ("rule", "complaint"),
    [
        ({"name": "x", "scope": "all", "match": ["a"], "messages_per_hour": 1}, "no match"),
        ({"name": "x", "scope": "account"}, "at least one cap"),
        ({"name": "x", "scope": "mailbox", "messages_per_hour": 1}, "scope"),
        ({"name": "x", "scope": "account", "messages_per_hour": -1}, "messages_per_hour"),
    ],
)
def test_a_limit_rule_says_what_is_wrong(rule: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        Policy.model_validate({"limit": [rule]})
