"""The docs' reference tables against the code: no interface, action, status or configuration
key may drift."""

from __future__ import annotations

import argparse
import json
import re
import tomllib
from pathlib import Path

import pytest
from starlette.routing import Mount, Route

from sendworx.api.auth import Authenticator
from sendworx.api.controllers import api_for
from sendworx.api.registry import Registry
from sendworx.cli.main import _parser
from sendworx.panel.app import create_app
from sendworx.shared.errors import ApiError
from sendworx.shared.instance import Instance
from sendworx.shared.wire import SUCCESS_REPLY_CODE
from sendworx.transports.jsonapi import HTTP_STATUS

ROOT = Path(__file__).resolve().parent.parent
HEADING = "## Reference: every interface, action and status code"


def _rows() -> list[tuple[str, str, str, str]]:
    text = (ROOT / "docs" / "api.md").read_text()
    table = text[text.index(HEADING) :].split("\n\n")[2]
    rows = []
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        assert len(cells) == 4, line
        kind, name, where, example = cells
        rows.append((kind, name.strip("`"), where, example))
    return rows


def _of_kind(kind: str) -> list[tuple[str, str, str]]:
    return [
        (name, where, example) for row_kind, name, where, example in _rows() if row_kind == kind
    ]


@pytest.fixture
def registry_and_auth(tmp_path: Path) -> tuple[Registry, Authenticator]:
    api = api_for(Instance(tmp_path))
    return api.registry, api.authenticator


def test_every_action_of_every_controller_has_one_row(
    registry_and_auth: tuple[Registry, Authenticator],
) -> None:
    registry, _ = registry_and_auth
    in_code = {
        (controller.path, action)
        for controller in registry.controllers
        for action in controller.actions
    }
    rows = [(where.strip("`"), name) for name, where, _ in _of_kind("action")]
    assert len(rows) == len(set(rows)), "an action is listed twice"
    assert set(rows) == in_code


def test_action_examples_run_the_action_they_document(
    registry_and_auth: tuple[Registry, Authenticator],
) -> None:
    registry, _ = registry_and_auth
    for name, where, example in _of_kind("action"):
        controller = registry.find(where.strip("`"))
        assert f'"{name}"' in example or f"-a {name}" in example, (name, example)
        if f"-a {name}" in example:
            assert f"-unc {controller.cli_name} " in example, (name, example)


def _status_classes() -> list[type[ApiError]]:
    found, pending = [], [ApiError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_every_status_code_has_one_row_with_its_codes() -> None:
    rows = {name: where for name, where, _ in _of_kind("status")}
    expected = {0: (SUCCESS_REPLY_CODE, 200)} | {
        cls.status: (cls.reply_code, HTTP_STATUS[cls.status]) for cls in _status_classes()
    }
    assert set(rows) == {str(status) for status in expected}
    for status, (reply_code, http) in expected.items():
        where = rows[str(status)]
        assert f"reply_code {reply_code}" in where and f"HTTP {http}" in where, (status, where)
        assert f"exit {0 if status == 0 else 1}" in where


def test_every_route_and_command_is_an_interface_row(
    registry_and_auth: tuple[Registry, Authenticator],
) -> None:
    registry, authenticator = registry_and_auth
    interfaces = " ".join(where for _, where, _ in _of_kind("interface"))
    for route in create_app(registry, authenticator, 1024, "node1").routes:
        assert isinstance(route, Route)
        path = route.path.replace("{target:path}", "<controller>/<action>")
        assert f"`{path}`" in interfaces or f" {path}`" in interfaces, path
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for script in scripts:
        assert f"`{script}" in interfaces, script
    subcommands = next(
        action.choices
        for action in _parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    friendly = next(
        where for name, where, _ in _of_kind("interface") if name == "sendworx commands"
    )
    for command in re.findall(r"`(?:sendworx )?(\w+)`", friendly):
        assert command in subcommands, command
    assert "`sendworx.client`" in interfaces


def _web_routes(registry: Registry, authenticator: Authenticator) -> list[tuple[str, str]]:
    """(method, path) of every page route, from the mounted pages' own router."""
    pages = create_app(registry, authenticator, 1024, "node1").router.default
    router = pages.app  # type: ignore[attr-defined]  # SecurityHeaders wraps the pages' Router
    found = []
    for route in router.routes:
        if isinstance(route, Mount):
            found.append(("GET", route.path + "/..."))
            continue
        assert isinstance(route, Route)
        found += [
            (method, route.path) for method in sorted(route.methods or ()) if method != "HEAD"
        ]
    return found


def test_every_page_is_documented(registry_and_auth: tuple[Registry, Authenticator]) -> None:
    text = (ROOT / "docs" / "web.md").read_text()
    table = text[text.index("## Reference: every page") :].split("\n\n")[2]
    for method, path in _web_routes(*registry_and_auth):
        assert f"`{method} {path}" in table, (method, path)
    for image in re.findall(r"\]\((images/[^)]+)\)", text):
        assert (ROOT / "docs" / image).is_file(), image


def _config_rows() -> dict[str, str]:
    """docs/operations.md's configuration table: key -> default as written."""
    text = (ROOT / "docs" / "operations.md").read_text()
    table = text[text.index("| key | default | meaning |") :].split("\n\n")[0]
    rows: dict[str, str] = {}
    for line in table.splitlines()[2:]:
        keys, defaults, _ = (cell.strip() for cell in line.strip().strip("|").split(" | ", 2))
        names = [key.strip("` ") for key in keys.split(" / ")]
        values = defaults.split(" / ") if len(names) > 1 else [defaults]
        if len(values) == 1:
            values *= len(names)  # one default shown for keys that share it
        assert len(values) == len(names), line
        rows.update(zip(names, (value.strip().strip("`") for value in values), strict=True))
    return rows


def test_every_configuration_key_is_documented_with_its_default() -> None:
    from sendworx.shared.config import InstanceConfig

    rows = _config_rows()
    defaults = InstanceConfig().model_dump(mode="json")
    in_code = {"helo_name": None}
    for section, values in defaults.items():
        if isinstance(values, dict):
            in_code.update({f"{section}.{key}": value for key, value in values.items()})
    assert set(rows) == set(in_code)
    for key, value in in_code.items():
        shown = rows[key]
        if value is None or key == "helo_name":
            continue  # shown in words: "the host's FQDN", "generated", "helo_name"
        if isinstance(value, bool | str | list):
            expected = value if isinstance(value, str) else json.dumps(value)
            assert shown == expected, (key, shown, expected)
        else:
            assert float(shown) == float(value), (key, shown, value)
