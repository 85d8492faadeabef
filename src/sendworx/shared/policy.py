"""The sending policy file (`policy.toml` in the instance): how much a sender may send, and
how fast mail may go where. docs/operations.md has worked examples.

Limits cap what one sender identity may send per hour and per day (messages and recipients).
A rule has a scope — `all` (the whole server together), `account` (the Unix account that ran
sendmail), `domain` (the envelope sender's domain) or `sender` (the address) — and either
names who it covers in `match` or, without `match`, covers each of them apart:

    [[limit]]
    name = "accounts"          # every account: 500 messages an hour, 2,000 a day, each
    scope = "account"
    messages_per_hour = 500
    messages_per_day = 2000

    [[limit]]
    name = "newsletter"        # one account that may send more
    scope = "account"
    match = ["news"]
    messages_per_hour = 20000

The most specific rule wins: one naming the sender's address, then its account, then its
domain; then the rules without `match`, in the same order; then `all`. Mail over a cap waits
in the queue (it is not attempted) until the window allows it, or with `action = "reject"` is
refused at injection. Bounces (the null sender) and the server's own postmaster are never
limited.

Breakers (`[[breaker]]`, same scopes but `all`, same specificity) put a sender on hold when
it sends more than `messages` or `recipients` (distinct) within `window_minutes`, or when
`failure_share` of its recipients are deferred or bounced over `min_attempts` or more.

`redis_url` shares the limits' and the breakers' counters and the holds with every engine
that names the same Redis (`engine/shared_state.py`).

Pacing rules shape traffic per destination. A rule matches destinations by their domain
(`example.com`, or `*.example.com` for every subdomain) or by the name of their first MX host
(`*.google.com` takes gmail.com, googlemail.com and every domain hosted by Google), so that
all the destinations one provider receives share one budget:

    [[pacing]]
    name = "google"                    # shown in logs, metrics and the engine's status
    mx = ["*.google.com"]
    connections = 10                   # open at once, all its destinations together
    messages_per_connection = 100      # then the connection is closed and a new one opened
    messages_per_minute = 0            # 0: no cap (adaptive backoff still applies)
    connection_interval_seconds = 0    # least time between two new connections

The file's rules come first; a built-in rule (`BUILT_IN`, for the largest receivers) applies
unless the file has a rule of the same name. A destination no rule matches gets the defaults:
`delivery.destination_concurrency` connections and no other cap. Unknown keys are an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sendworx.shared.config import load_toml_model
from sendworx.shared.queue_format import Envelope

Pattern = Annotated[str, Field(min_length=1, max_length=253)]


def _check_pattern(pattern: str) -> str:
    body = pattern.removeprefix("*.")
    if not body or any(ch in body for ch in "*?[] \t\r\n") or body.startswith("."):
        raise ValueError(f"{pattern!r}: a name, or *. followed by a name")
    return pattern.lower().rstrip(".")


class PacingRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    domains: list[Pattern] = Field(default_factory=list, max_length=1000)
    mx: list[Pattern] = Field(default_factory=list, max_length=1000)
    connections: int = Field(default=20, ge=1, le=1000)
    messages_per_connection: int = Field(default=0, ge=0, le=1_000_000)
    messages_per_minute: float = Field(default=0, ge=0, le=1_000_000)
    connection_interval_seconds: float = Field(default=0, ge=0, le=3600)

    @field_validator("domains", "mx")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        return [_check_pattern(pattern) for pattern in value]

    def matches(self, domain: str, mx_host: str | None) -> bool:
        if any(_match(pattern, domain) for pattern in self.domains):
            return True
        return mx_host is not None and any(_match(pattern, mx_host) for pattern in self.mx)


def _match(pattern: str, name: str) -> bool:
    return fnmatchcase(name.lower().rstrip("."), pattern)


# Starting points for the receivers that throttle hardest; adaptive backoff does the rest.
# Override one with a rule of the same name in policy.toml.
BUILT_IN = (
    PacingRule(name="google", mx=["*.google.com", "*.googlemail.com"], connections=10,
               messages_per_connection=100),
    PacingRule(name="microsoft", mx=["*.outlook.com"], connections=10,
               messages_per_connection=100),
    PacingRule(name="yahoo", mx=["*.yahoodns.net"], connections=5, messages_per_connection=20),
    PacingRule(name="apple", mx=["*.icloud.com"], connections=5, messages_per_connection=50),
)  # fmt: skip


Scope = Literal["all", "account", "domain", "sender"]
SenderScope = Literal["account", "domain", "sender"]  # what a breaker watches and holds
_SPECIFICITY: tuple[Scope, ...] = ("sender", "account", "domain")


class _SenderRule(BaseModel):
    """What limits and breakers share: a name, and who they cover (`match`, lower case;
    empty: each sender of the scope apart)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    match: list[Annotated[str, Field(min_length=1, max_length=320)]] = Field(
        default_factory=list, max_length=100_000
    )

    @field_validator("match")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [item.lower() for item in value]


class LimitRule(_SenderRule):
    scope: Scope
    messages_per_hour: int = Field(default=0, ge=0, le=100_000_000)
    messages_per_day: int = Field(default=0, ge=0, le=100_000_000)
    recipients_per_hour: int = Field(default=0, ge=0, le=100_000_000)
    recipients_per_day: int = Field(default=0, ge=0, le=100_000_000)
    # defer: accept, and keep the mail queued until the window allows it; reject: refuse it at
    # injection (smtpd answers reject_code, sendmail exits 75 for 451 and 77 for 550).
    action: Literal["defer", "reject"] = "defer"
    reject_code: Literal[451, 550] = 451

    @model_validator(mode="after")
    def _meaningful(self) -> LimitRule:
        if self.scope == "all" and self.match:
            raise ValueError("scope all covers everything: no match")
        caps = (self.messages_per_hour, self.messages_per_day)
        if not any((*caps, self.recipients_per_hour, self.recipients_per_day)):
            raise ValueError("give at least one cap (messages or recipients, per hour or day)")
        return self


@lru_cache(maxsize=4096)  # bulk mail repeats its senders; asked several times per message
def _identity(sender: str, account: str | None) -> Identity:
    lowered = sender.lower()
    return Identity(sender=lowered, account=account, domain=lowered.rpartition("@")[2] or None)


class BreakerRule(_SenderRule):
    """Holds a sender's mail when it sends like a compromised account: more than `messages`
    messages or `recipients` distinct recipients within `window_minutes`, or a share of
    deferred and bounced recipients of at least `failure_share` over `min_attempts` or more."""

    scope: SenderScope
    window_minutes: float = Field(default=60, gt=0, le=7 * 24 * 60)
    messages: int = Field(default=0, ge=0, le=100_000_000)
    recipients: int = Field(default=0, ge=0, le=100_000_000)
    failure_share: float = Field(default=0, ge=0, le=1)
    min_attempts: int = Field(default=50, ge=1, le=100_000_000)
    notify: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$", max_length=320)

    @model_validator(mode="after")
    def _meaningful(self) -> BreakerRule:
        if not (self.messages or self.recipients or self.failure_share):
            raise ValueError("give at least one threshold: messages, recipients or failure_share")
        return self


@dataclass(frozen=True, slots=True)
class Identity:
    """Who sent a message, as limits see it (lower case; None where unknown)."""

    sender: str | None
    account: str | None
    domain: str | None

    @staticmethod
    def of(envelope: Envelope) -> Identity:
        # The account is the kernel's word: the uid that ran sendmail, or that owns a
        # loopback SMTP client's socket (recorded by the injector, never said by the client).
        origin = envelope.origin
        account = origin.account if origin is not None and origin.via != "engine" else None
        return _identity(envelope.sender, account)

    def value(self, scope: Scope) -> str | None:
        return "*" if scope == "all" else getattr(self, scope)


R = TypeVar("R", LimitRule, BreakerRule)


class _ScopedRules(Generic[R]):
    """Rules by who they cover, looked up for every message by name, never by walking a
    thousand rules: one naming the sender's address, then its account, then its domain; then
    the rules without `match` in the same order; then `all`."""

    def __init__(self, rules: list[R]) -> None:
        self._named: dict[tuple[str, str], R] = {}
        self._defaults: dict[str, R] = {}
        for rule in rules:
            for value in rule.match:
                self._named.setdefault((rule.scope, value), rule)
            if not rule.match:
                self._defaults.setdefault(rule.scope, rule)

    def rule_for(self, identity: Identity) -> tuple[R, str] | None:
        for scope in _SPECIFICITY:
            value = identity.value(scope)
            if value is not None and (rule := self._named.get((scope, value))) is not None:
                return rule, value
        for scope in _SPECIFICITY:
            value = identity.value(scope)
            if value is not None and (rule := self._defaults.get(scope)) is not None:
                return rule, value
        rule = self._defaults.get("all")
        return (rule, "*") if rule is not None else None


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: list[LimitRule] = Field(default_factory=list, max_length=10_000)
    breaker: list[BreakerRule] = Field(default_factory=list, max_length=10_000)
    pacing: list[PacingRule] = Field(default_factory=list, max_length=10_000)
    # Counters and holds shared by every node (redis://host:port/db); none: this engine's own.
    redis_url: str | None = Field(default=None, pattern=r"^rediss?://\S+$", max_length=2048)

    @field_validator("pacing", "limit", "breaker")
    @classmethod
    def _unique(cls, rules: list[Any]) -> list[Any]:
        names = [rule.name for rule in rules]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique: {', '.join(duplicates)}")
        return rules

    # Built once, looked up for every message (a plain attribute after the first use).
    @cached_property
    def _limits(self) -> _ScopedRules[LimitRule]:
        return _ScopedRules(self.limit)

    @cached_property
    def _breakers(self) -> _ScopedRules[BreakerRule]:
        return _ScopedRules(self.breaker)

    @property
    def rejects(self) -> bool:
        """Some limit refuses mail at injection (the injectors then ask the engine)."""
        return any(rule.action == "reject" for rule in self.limit)

    def limit_for(self, identity: Identity) -> tuple[LimitRule, str] | None:
        """The rule that caps `identity`, and the key its counters go by."""
        return self._limits.rule_for(identity)

    def breaker_for(self, identity: Identity) -> tuple[BreakerRule, str] | None:
        """The circuit breaker that watches `identity`, and the key it counts by."""
        return self._breakers.rule_for(identity)

    def pacing_rules(self) -> list[PacingRule]:
        """The file's rules, then the built-in ones it does not replace."""
        mine = {rule.name for rule in self.pacing}
        return [*self.pacing, *(rule for rule in BUILT_IN if rule.name not in mine)]

    def pacing_for(self, domain: str, mx_host: str | None) -> PacingRule | None:
        for rule in self.pacing_rules():
            if rule.matches(domain, mx_host):
                return rule
        return None


def load_policy(path: Path) -> Policy:
    """The policy file, or the built-in policy when there is none."""
    return load_toml_model(path, Policy)
