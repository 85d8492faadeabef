"""Bounce classes: real receivers' replies (their postmaster pages' own words) get the class an
operator would give them; an operator's rules come first; a broken rule file is named."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from sendworx.shared.bounce_classes import CLASSES, Classifier, parse_rules
from sendworx.shared.config import ConfigError

CORPUS = tomllib.loads((Path(__file__).parent / "data" / "bounce_replies.toml").read_text())
CLASSIFIER = Classifier.load()


@pytest.mark.parametrize(
    "reply",
    CORPUS["reply"],
    ids=[f"{r['source'].split()[0]}-{r['class']}" for r in CORPUS["reply"]],
)
def test_real_replies_get_their_class(reply: dict[str, str]) -> None:
    assert CLASSIFIER.classify(reply["status"], reply["text"]) == reply["class"], reply["source"]


def test_the_corpus_covers_the_receivers_and_most_classes() -> None:
    sources = " ".join(reply["source"] for reply in CORPUS["reply"])
    for receiver in ("Gmail", "Outlook", "Yahoo", "iCloud", "GMX", "Comcast", "Mail.ru"):
        assert receiver in sources
    covered = {reply["class"] for reply in CORPUS["reply"]}
    assert set(CLASSES) - covered <= {"tls_failure", "other"}


def test_an_operators_rules_come_first(tmp_path: Path) -> None:
    rules = tmp_path / "bounce_rules.toml"
    rules.write_text('[[rule]]\nclass = "reputation"\ntext = "blocked by our partner list"\n')
    mine = Classifier.load(rules)
    reply = "550 5.1.1 blocked by our partner list"
    assert mine.classify("5.1.1", reply) == "reputation"
    assert CLASSIFIER.classify("5.1.1", reply) == "invalid_recipient"


def test_codes_match_whole_parts_and_unknown_ones_are_other() -> None:
    assert CLASSIFIER.classify("5.2.2", "") == "mailbox_full"
    assert CLASSIFIER.classify("5.1.10", "") == "invalid_recipient"
    assert CLASSIFIER.classify("5.7.99", "") == "policy"
    assert CLASSIFIER.classify("5.9.9", "") == "other"
    assert CLASSIFIER.classify("", "550 5.2.2 no room") == "mailbox_full"  # code in the text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[[rule]]\nclass = "nice"\n', "class must be one of"),
        ('[[rule]]\nclass = "policy"\nstatus = "6.1"\n', "status must be"),
        ('[[rule]]\nclass = "policy"\ntext = "(unclosed"\n', "not a regular expression"),
        ("[[rule]\n", "bounce_rules.toml"),
        ("rule = 3\n", "[[rule]] tables"),
    ],
)
def test_a_broken_rule_file_is_named(text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem.replace("[", r"\[")):
        parse_rules(text, "bounce_rules.toml")
