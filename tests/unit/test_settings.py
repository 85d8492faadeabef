"""The settings table: validation messages, control-file format, atomic all-or-nothing writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sendworx.shared.control_files import update_settings as write_settings
from sendworx.shared.settings import Settings, SettingsError, read_settings


def test_defaults_when_no_control_files(tmp_path: Path) -> None:
    assert read_settings(tmp_path) == Settings()


def test_write_uses_qmail_control_file_format(tmp_path: Path) -> None:
    write_settings(
        tmp_path,
        {
            "concurrency_remote": "100",
            "timeout_remote": 30,
            "smtp_routes": ["a.test:relay.test:2525", "", ":[192.0.2.1]"],
        },
    )
    assert (tmp_path / "concurrencyremote").read_bytes() == b"100\n"
    assert (tmp_path / "timeoutremote").read_bytes() == b"30\n"
    assert (tmp_path / "smtproutes").read_bytes() == b"a.test:relay.test:2525\n:[192.0.2.1]\n"
    assert not (tmp_path / "timeoutconnect").exists()


@pytest.mark.parametrize(
    "routes",
    [
        ["a.test:relay.test", "b.test:"],
        {"0": "a.test:relay.test", "1": "b.test:"},
        "a.test:relay.test\r\nb.test:\n\n",
    ],
)
def test_routes_accept_array_struct_or_textarea(tmp_path: Path, routes: object) -> None:
    settings = write_settings(tmp_path, {"smtp_routes": routes})
    assert [str(route) for route in settings.smtp_routes] == ["a.test:relay.test", "b.test:"]


def test_any_bad_field_rejects_the_whole_update_and_writes_nothing(tmp_path: Path) -> None:
    write_settings(tmp_path, {"concurrency_remote": 10})
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(SettingsError) as error:
        write_settings(
            tmp_path,
            {
                "concurrency_remote": 20,
                "timeout_remote": "abc",
                "queue_lifetime": -1,
                "smtp_routes": ["ok.test:relay.test", "bad route"],
                "timeout_connect": True,
            },
        )
    assert error.value.problems == {
        "timeout_remote": "must be an integer",
        "queue_lifetime": "must be between 0 and 31536000",
        "smtp_routes": "route 2 ('bad route'): must not contain spaces",
        "timeout_connect": "must be an integer",
    }
    assert sorted(os.listdir(tmp_path)) == before
    assert (tmp_path / "concurrencyremote").read_bytes() == b"10\n"


@pytest.mark.parametrize("value", ["1e3", "١٢", " 12x", "", None, 1.5, [1], "9" * 40])
def test_integers_reject_what_is_not_a_plain_integer(tmp_path: Path, value: object) -> None:
    with pytest.raises(SettingsError):
        write_settings(tmp_path, {"concurrency_remote": value})


def test_bounds_are_inclusive(tmp_path: Path) -> None:
    assert write_settings(tmp_path, {"concurrency_remote": 0}).concurrency_remote == 0
    assert write_settings(tmp_path, {"concurrency_remote": "1000"}).concurrency_remote == 1000
    with pytest.raises(SettingsError):
        write_settings(tmp_path, {"concurrency_remote": 1001})


def test_routes_must_be_strings(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="route 1 must be a string"):
        write_settings(tmp_path, {"smtp_routes": [42]})
    with pytest.raises(SettingsError, match="must be a list of routes"):
        write_settings(tmp_path, {"smtp_routes": 42})


def test_unknown_setting_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="is not a setting"):
        write_settings(tmp_path, {"concurrency_local": 5})


def test_comments_and_blank_lines_in_smtproutes_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "smtproutes").write_text("# relay everything\n\n:[192.0.2.1]\n")
    assert [str(route) for route in read_settings(tmp_path).smtp_routes] == [":[192.0.2.1]"]


def test_the_default_config_file_shows_exactly_the_model_defaults() -> None:
    """Uncommenting every key that shows a default (not an example) gives the defaults."""
    import re
    import tomllib

    from sendworx.shared.config import InstanceConfig, default_config_text

    examples = ("helo_name", "certificate", "private_key", "node_id", "ca_file")
    kept = []
    for line in default_config_text().splitlines():
        match = re.match(r"# (\w+) = (.*?)\s+# ", line)
        if match and match.group(1) not in examples:
            kept.append(f"{match.group(1)} = {match.group(2)}")
        elif line.startswith("["):
            kept.append(line)
    document = tomllib.loads("\n".join(kept))
    assert InstanceConfig.model_validate(document) == InstanceConfig()
    shown = {key for section in document.values() if isinstance(section, dict) for key in section}
    sections = [type(getattr(InstanceConfig(), name)) for name in InstanceConfig.model_fields]
    every = {key for section in sections if section is not str for key in section.model_fields}
    assert shown == every - set(examples)
