"""The sending policy file (`policy.toml` in the instance): how fast mail may go where.

Today it holds per-destination pacing rules. A rule matches destinations by their domain
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

from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sendworx.shared.config import load_toml_model

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


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pacing: list[PacingRule] = Field(default_factory=list, max_length=10_000)

    @field_validator("pacing")
    @classmethod
    def _unique(cls, rules: list[PacingRule]) -> list[PacingRule]:
        names = [rule.name for rule in rules]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique: {', '.join(duplicates)}")
        return rules

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
