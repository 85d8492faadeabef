"""/nodeworx/users over the real panel: what billing systems call first (Blesta's canConnect:
`listWorkingUser` through PHP's SoapClient), and user management by the master user — add,
edit, deactivate, delete — with the credentials each change ends."""

from __future__ import annotations

from typing import Any

import pytest
from support.panel import Panel
from support.php import php_route

USERS = "/nodeworx/users"


def _users(panel: Panel, action: str, data: object = None, auth: Any = None) -> Any:
    reply = panel.call(action, data, auth=auth, controller=USERS)
    assert reply["status"] == 0, reply
    return reply["payload"]


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_blesta_connection_test_passes_for_a_plain_user(panel: Panel, version: str) -> None:
    """Blesta's InterWorx module calls listWorkingUser with perms=[NODEWORXUSER] and checks
    status 0; a user with no permissions at all must pass it too."""
    key = panel.add_user("billing@example.com")
    request = {
        "auth": key,
        "controller": "/nodeworx/users",
        "action": "listWorkingUser",
        "input": {"perms": ["NODEWORXUSER"]},
    }
    reply = php_route(f"https://127.0.0.1:{panel.https_port}/soap?wsdl", version, panel.ca, request)
    assert reply["raw"]["status"] == 0
    payload = reply["raw"]["payload"]
    assert payload["email"] == "billing@example.com" and payload["status"] == "active"
    assert payload["perms"] == ["LOGIN"] and isinstance(payload["userid"], int)


def test_the_master_manages_users_and_changes_take_effect(panel: Panel) -> None:
    listed = _users(panel, "listUsers")
    assert [user["master"] for user in listed] == [True]
    added = _users(
        panel,
        "add",
        {
            "nickname": "Ops",
            "email": "ops@example.com",
            "password": "long enough 1",
            "confirm_password": "long enough 1",
            "perms": ["LOGIN", "EMAIL"],
            "language": "en-us",
        },
    )
    assert added == "NodeWorx user successfully added"
    ops = {"email": "ops@example.com", "password": "long enough 1"}
    me = _users(panel, "listWorkingUser", auth=ops)
    assert me["perms"] == ["LOGIN", "EMAIL"] and me["userid"] == listed[0]["userid"] + 1
    # Managing users is the master's: ops may not list them, nor promote itself.
    denied = panel.call("listUsers", auth=ops, controller=USERS)
    assert denied["status"] != 0 and "master" in denied["payload"]
    promote = {"user": "ops@example.com", "perms": "EMAIL,SERVICES,CLUSTER"}
    assert panel.call("edit", promote, auth=ops, controller=USERS)["status"] != 0
    assert _users(panel, "edit", promote) == "NodeWorx user successfully edited"
    assert _users(panel, "queryEdit", {"user": "ops@example.com"})["perms"] == [
        "LOGIN",
        "CLUSTER",
        "EMAIL",
        "SERVICES",
    ]
    # A new password: the old one stops working.
    new = {
        "user": "ops@example.com",
        "password": "another one 2",
        "confirm_password": "another one 2",
    }
    _users(panel, "edit", new)
    assert panel.call("listWorkingUser", auth=ops, controller=USERS)["status"] != 0
    ops["password"] = "another one 2"
    assert _users(panel, "listWorkingUser", auth=ops)["email"] == "ops@example.com"
    # Deactivated: no login; activated: back.
    assert _users(panel, "deactivate", {"user": "ops@example.com"}) == "NodeWorx user deactivated"
    assert panel.call("listWorkingUser", auth=ops, controller=USERS)["status"] != 0
    _users(panel, "activate", {"user": ["ops@example.com"]})
    assert _users(panel, "listWorkingUser", auth=ops)["status"] == "active"
    assert _users(panel, "listDeletable") == [["ops@example.com", "Ops (ops@example.com)"]]
    assert _users(panel, "delete", {"user": "ops@example.com"}) == "NodeWorx user deleted"
    assert panel.call("listWorkingUser", auth=ops, controller=USERS)["status"] != 0
    # The next user gets a new number, never the deleted one's.
    _users(
        panel,
        "add",
        {
            "nickname": "N",
            "email": "n@example.com",
            "password": "p" * 8,
            "confirm_password": "p" * 8,
        },
    )
    numbers = [user["userid"] for user in _users(panel, "listUsers")]
    assert numbers == [listed[0]["userid"], me["userid"] + 1]


def test_what_cannot_be_done_says_why_and_changes_nothing(panel: Panel) -> None:
    master = _users(panel, "listMasterUser")["email"]
    for action, data, field in [
        ("delete", {"user": master}, "master user cannot be removed"),
        ("deactivate", {"user": master}, "master user cannot be deactivated"),
        ("delete", {"user": "nobody@example.com"}, "no user nobody@example.com"),
        (
            "add",
            {"nickname": "x", "email": "x@e.com", "password": "abcdefgh1", "confirm_password": "x"},
            "differ",
        ),
        (
            "add",
            {"nickname": "x", "email": "x@e.com", "password": "short", "confirm_password": "short"},
            "at least 8",
        ),
        (
            "add",
            {
                "nickname": "x",
                "email": "x@e",
                "password": "a" * 9,
                "confirm_password": "a" * 9,
                "perms": "ROOT",
            },
            "unknown permissions ROOT",
        ),
        (
            "add",
            {
                "nickname": "x",
                "email": "x@e.com",
                "password": "a" * 9,
                "confirm_password": "a" * 9,
                "encrypted": "y",
            },
            "clear text",
        ),
    ]:
        reply = panel.call(action, data, controller=USERS)
        assert reply["status"] != 0 and field in reply["payload"], (action, reply)
    assert len(_users(panel, "listUsers")) == 1
    assert _users(panel, "isReseller") is False
