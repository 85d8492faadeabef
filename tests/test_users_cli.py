"""`sendworx init`, `user` and `apikey`: secrets on disk are 0600 files or hashes, never clear."""

from __future__ import annotations

import json
import stat
import subprocess

from support.instance import SendworxHome


def _run(home: SendworxHome, *arguments: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        home.command(*arguments), input=stdin, capture_output=True, text=True, timeout=60
    )


def test_init_creates_the_master_user_once_with_private_secret_files(home: SendworxHome) -> None:
    first = _run(home, "init", "--email", "root@panel.test")
    assert first.returncode == 0 and "master user root@panel.test created" in first.stdout
    panel = home.home / "panel"
    for name in ("master.key", "master.password", "users.json"):
        assert stat.S_IMODE((panel / name).stat().st_mode) == 0o600, name
    key = (panel / "master.key").read_text()
    password = (panel / "master.password").read_text().strip()
    stored = (panel / "users.json").read_text()
    assert key.startswith("-----BEGIN INTERWORX API KEY-----")
    assert "".join(key.split()[4:-4])[:40] not in stored
    assert password not in stored and "scrypt$" in stored
    again = _run(home, "init")
    assert again.returncode == 0 and "created" not in again.stdout
    assert (panel / "master.key").read_text() == key


def test_user_add_list_remove_and_their_errors(home: SendworxHome) -> None:
    _run(home, "init")
    added = _run(
        home, "user", "add", "ops@panel.test", "--permission", "EMAIL", stdin="long enough\n"
    )
    assert added.returncode == 0, added.stderr
    listing = _run(home, "user", "list").stdout
    assert "ops@panel.test" in listing and "EMAIL" in listing and "master" in listing
    for arguments, stdin, message in (
        (("user", "add", "ops@panel.test"), "long enough\n", "exists already"),
        (("user", "add", "not-an-address"), "long enough\n", "is not an e-mail address"),
        (("user", "add", "x@panel.test", "--permission", "ROOT"), "long enough\n", "unknown"),
        (("user", "add", "y@panel.test"), "short\n", "at least 8 characters"),
        (("user", "remove", "nobody@panel.test"), "", "no user"),
        (("user", "remove", "admin@sendworx.test"), "", "master user cannot be removed"),
        (("apikey", "--user", "nobody@panel.test"), "", "no user"),
    ):
        result = _run(home, *arguments, stdin=stdin)
        assert result.returncode == 1 and message in result.stderr, (arguments, result.stderr)
    assert _run(home, "user", "remove", "ops@panel.test").returncode == 0
    users = json.loads((home.home / "panel" / "users.json").read_text())["users"]
    assert [user["email"] for user in users] == ["admin@sendworx.test"]


def test_apikey_for_the_master_rewrites_its_key_file(home: SendworxHome) -> None:
    _run(home, "init")
    old = (home.home / "panel" / "master.key").read_text()
    printed = _run(home, "apikey").stdout
    assert printed != old
    assert (home.home / "panel" / "master.key").read_text() == printed
