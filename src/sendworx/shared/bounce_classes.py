"""Why mail failed or waits, in a word: a class for every deferral and failure, from its
enhanced status code and its reply, by rules in a file (built in: bounce_rules.toml; an
operator's file, read first, overrides them), as KumoMTA's classifier does with its IANA
table. Pure: no I/O but reading the rules.

    invalid_recipient, bad_domain, mailbox_full, inactive_mailbox, spam_block, reputation,
    policy, rate_limited, authentication, tls_failure, connection, expired, routing, other
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from sendworx.shared.config import ConfigError

CLASSES = (
    "invalid_recipient", "bad_domain", "mailbox_full", "inactive_mailbox", "spam_block",
    "reputation", "policy", "rate_limited", "authentication", "tls_failure", "connection",
    "expired", "routing", "other",
)  # fmt: skip
# Our own failures and the receivers' limits: never a reason to give up on an address.
OUR_SIDE = frozenset({"tls_failure", "connection", "rate_limited", "routing", "expired", "other"})
MAX_RULES = 1000
_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True)
class Rule:
    bounce_class: str
    status: str | None  # a prefix of the enhanced code; None: any
    text: re.Pattern[str] | None

    def matches(self, status: str, reply: str) -> bool:
        if self.status is not None and not _code_starts_with(status, self.status):
            return False
        return self.text is None or self.text.search(reply) is not None


def _code_starts_with(status: str, prefix: str) -> bool:
    """ "5.7.1" starts with "5.7" and "5", not with "5.7.10"'s "5.7.1" (whole parts only)."""
    if not prefix:
        return True
    return status == prefix or status.startswith(prefix + ".")


def parse_rules(text: str, origin: str) -> list[Rule]:
    """The rules of one file; ConfigError naming the rule at fault."""
    try:
        document = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as error:
        raise ConfigError(f"{origin}: {error}") from error
    entries = document.get("rule", [])
    if not isinstance(entries, list) or len(entries) > MAX_RULES:
        raise ConfigError(f"{origin}: [[rule]] tables, at most {MAX_RULES}")
    rules = []
    for number, entry in enumerate(entries, 1):
        where = f"{origin}: rule {number}"
        if not isinstance(entry, dict) or entry.get("class") not in CLASSES:
            raise ConfigError(f"{where}: class must be one of {', '.join(CLASSES)}")
        status, pattern = entry.get("status"), entry.get("text")
        if status is not None and (not isinstance(status, str) or not _STATUS.fullmatch(status)):
            raise ConfigError(f"{where}: status must be a code or its start, like 5.7 or 4.2.2")
        try:
            compiled = re.compile(pattern, re.IGNORECASE) if pattern is not None else None
        except (re.error, TypeError) as error:
            raise ConfigError(f"{where}: text is not a regular expression: {error}") from error
        rules.append(Rule(entry["class"], status, compiled))
    return rules


_STATUS = re.compile(r"|[245](\.\d{1,3}){0,2}")


def built_in_rules() -> list[Rule]:
    text = resources.files("sendworx.shared").joinpath("bounce_rules.toml").read_text()
    return parse_rules(text, "built-in bounce_rules.toml")


class Classifier:
    """The operator's rules (if any) before the built-in ones."""

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules

    @classmethod
    def load(cls, operator_file: Path | None = None) -> Classifier:
        rules: list[Rule] = []
        if operator_file is not None and operator_file.exists():
            rules = parse_rules(operator_file.read_text(), str(operator_file))
        return cls(rules + built_in_rules())

    def classify(self, status: str, reply: str) -> str:
        """The class of a deferral or failure. `status` is its enhanced code when known;
        one found in the reply's text serves otherwise."""
        code = status or _code_in(reply)
        for rule in self.rules:
            if rule.matches(code, reply):
                return rule.bounce_class
        return "other"


def _code_in(reply: str) -> str:
    found = _ENHANCED.search(reply[:200])
    return ".".join(found.groups()) if found else ""
