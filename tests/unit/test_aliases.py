"""The aliases file, as every Unix MTA reads it, and where a name's mail goes."""

from __future__ import annotations

from sendworx.shared.aliases import DEFAULT_ALIASES, Aliases, expand, parse_aliases

HERE = frozenset({"host.test", "localhost"})


def test_the_file_format_with_comments_continuations_and_what_is_refused() -> None:
    aliases = parse_aliases(
        "# Debian's default\npostmaster:    root\nRoot: admin@example.test,\n\tAlice ,\n"
        "abuse: |/bin/sh -c evil\nwww: /var/mail/www\ninc: :include:/etc/list\nno colon\n"
        "root: later@example.test\n"
    )
    assert aliases.table == {
        "postmaster": ("root",),
        "root": ("later@example.test",),
        "abuse": (),
        "www": (),
        "inc": (),
    }
    assert [problem.split(":")[0] for problem in aliases.problems] == [
        "line 5",
        "line 6",
        "line 7",
        "line 8",
        "line 9",
    ]


def test_names_follow_to_mailboxes_and_addresses_elsewhere() -> None:
    aliases = parse_aliases(
        "postmaster: root\nroot: ops, admin@example.test, x@host.test\nops: alice, bob\n"
    )
    assert expand("PostMaster", aliases, HERE).mailboxes == ("alice", "bob", "x")
    assert expand("postmaster", aliases, HERE).remote == ("admin@example.test",)
    assert expand("carol", aliases, HERE).mailboxes == ("carol",)


def test_a_loop_ends_in_the_mailbox_where_it_closes() -> None:
    aliases = parse_aliases("a: b\nb: a, c\nself: self\n")
    assert expand("a", aliases, HERE).mailboxes == ("a", "c")
    assert expand("self", aliases, HERE).mailboxes == ("self",)


def test_without_a_file_root_and_mailer_daemon_are_postmaster() -> None:
    aliases = Aliases(DEFAULT_ALIASES)
    assert expand("root", aliases, HERE).mailboxes == ("postmaster",)
    assert expand("MAILER-DAEMON", aliases, HERE).mailboxes == ("postmaster",)
