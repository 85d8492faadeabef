"""/nodeworx/users: the panel's own users, as InterWorx's NodeWorxUsers controller serves them.

Billing systems test a connection with `listWorkingUser` (Blesta's canConnect) before
anything else, so every authenticated user may ask who they are; managing users (listing,
adding, editing, activating, deleting) is the master user's, as `sendworx user` is the
instance owner's. The master user cannot be deleted or deactivated, and keeps every
permission. A changed password, a deactivation or a removal ends the user's sessions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sendworx.api.controllers.common import ANY_STRUCT, STRING, parse_string
from sendworx.api.registry import Action, Caller, Controller, Handler, Input, InputKind
from sendworx.api.users import PERMISSIONS, User, UserError, UserStore
from sendworx.shared.errors import ActionFailed, PermissionDenied, ValidationFailed

USERS = "/nodeworx/users"
USER_LIST: dict[str, Any] = {"type": "array", "items": ANY_STRUCT}
PAIRS: dict[str, Any] = {
    "type": "array",
    "items": {"type": "array", "items": STRING, "minItems": 2, "maxItems": 2},
}
MAX_USERS_PER_CALL = 100


def _users_input(value: object) -> list[str]:
    """`user`: one e-mail address, a list of them, or several separated by commas."""
    items = value if isinstance(value, list) else str(value).split(",")
    emails = [parse_string(item, max_length=320) for item in items if str(item).strip()]
    if not emails or len(emails) > MAX_USERS_PER_CALL:
        raise ValueError(f"give 1 to {MAX_USERS_PER_CALL} users (their e-mail addresses)")
    return emails


def _permissions(value: object) -> list[str]:
    """`perms`: a list, or one comma-separated string; InterWorx's LOGIN is implied."""
    items = value if isinstance(value, list) else str(value).split(",")
    names = {str(item).strip().upper() for item in items if str(item).strip()}
    names.discard("LOGIN")
    unknown = names - PERMISSIONS
    if unknown:
        known = ", ".join(sorted(PERMISSIONS))
        raise ValueError(f"unknown permissions {', '.join(sorted(unknown))} (known: {known})")
    return sorted(names)


def _encrypted(value: object) -> str:
    if str(value).strip().lower() not in ("", "n", "no", "0"):
        raise ValueError("sendworx takes passwords in clear text only (encrypted=n)")
    return "n"


def user_payload(user: User) -> dict[str, Any]:
    return {
        "userid": user.userid,
        "nickname": user.name,
        "email": user.email,
        "status": "active" if user.active else "inactive",
        "perms": ["LOGIN", *user.permissions],
        "master": user.master,
        "created": user.created,
    }


def users_controller(users: UserStore) -> Controller:
    controller = Controller(USERS, "Users", ())

    def master_only(handler: Handler) -> Handler:
        async def run(caller: Caller, values: dict[str, Any]) -> Any:
            if not caller.master:
                raise PermissionDenied("permission denied: only the master user manages users")
            return await handler(caller, values)

        return run

    def changing(work: Callable[[dict[str, Any]], str]) -> Handler:
        """A change to the users file, in a thread (scrypt, fsync); UserError: status 1."""

        async def run(caller: Caller, values: dict[str, Any]) -> str:
            try:
                return await asyncio.to_thread(work, values)
            except UserError as error:
                raise ActionFailed(str(error)) from error

        return master_only(run)

    def one(email: str) -> User:
        user = users.get(email)
        if user is None:
            raise ValidationFailed({"user": f"no user {email}"})
        return user

    async def working_user(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        return user_payload(one(caller.email))

    async def list_users(caller: Caller, values: dict[str, Any]) -> list[dict[str, Any]]:
        return [user_payload(user) for user in sorted(users.users(), key=lambda u: u.userid)]

    async def master_user(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        master = next(user for user in users.users() if user.master)
        return user_payload(master)

    def pairs(deletable: bool) -> Handler:
        async def handler(caller: Caller, values: dict[str, Any]) -> list[list[str]]:
            listed = sorted(users.users(), key=lambda u: u.userid)
            return [
                [user.email, f"{user.name} ({user.email})"]
                for user in listed
                if not (deletable and user.master)
            ]

        return handler

    async def query_edit(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        user = one(values["user"])
        return {
            "user": user.email,
            "nickname": user.name,
            "email": user.email,
            "perms": ["LOGIN", *user.permissions],
            "language": "en-us",
        }

    def add(values: dict[str, Any]) -> str:
        if values["password"] != values["confirm_password"]:
            raise UserError("password and confirm_password differ")
        users.add(values["email"], values["nickname"], values["password"], values["perms"])
        return "NodeWorx user successfully added"

    def edit(values: dict[str, Any]) -> str:
        password = values.get("password")
        if password is not None and password != values.get("confirm_password"):
            raise UserError("password and confirm_password differ")
        users.edit(
            values["user"],
            name=values.get("nickname"),
            new_email=values.get("email"),
            password=password,
            permissions=values.get("perms"),
        )
        return "NodeWorx user successfully edited"

    def each(change: Callable[[str], None], done: str) -> Callable[[dict[str, Any]], str]:
        def work(values: dict[str, Any]) -> str:
            for email in values["user"]:
                one(email)  # all exist, or nothing changes
            for email in values["user"]:
                change(email)
            return done

        return work

    text = InputKind.STRING
    user_list = Input(
        "user", InputKind.STRING_STRUCT, _users_input, "e-mail address(es)", required=True
    )
    ignored = (
        Input("language", text, parse_string, "accepted; the panel speaks English"),
        Input("theme", text, parse_string, "accepted and ignored"),
        Input("menu_style", text, parse_string, "accepted and ignored"),
        Input("encrypted", text, _encrypted, "n (passwords in clear text)"),
    )
    perms = Input("perms", InputKind.STRING_STRUCT, _permissions, "EMAIL, SERVICES, CLUSTER")
    secret = {"max_length": 1024}
    actions = [
        Action("listWorkingUser", "The user calling.", working_user, returns=ANY_STRUCT),
        Action("listUsers", "Every user.", master_only(list_users), returns=USER_LIST),
        Action("listMasterUser", "The master user.", master_only(master_user), returns=ANY_STRUCT),
        Action(
            "listEditable",
            "[email, label] of each user.",
            master_only(pairs(False)),
            returns=PAIRS,
        ),
        Action(
            "listDeletable",
            "[email, label] of each user but the master.",
            master_only(pairs(True)),
            returns=PAIRS,
        ),
        Action(
            "isReseller",
            "Always false: sendworx has no resellers.",
            _false,
            returns={"type": "boolean"},
        ),
        Action(
            "queryEdit",
            "Current values of every input of edit.",
            master_only(query_edit),
            (Input("user", text, parse_string, "e-mail address", required=True),),
            ANY_STRUCT,
        ),
        Action(
            "add",
            "Add a user.",
            changing(add),
            (
                Input("nickname", text, parse_string, "display name", required=True),
                Input("email", text, parse_string, "e-mail address (their login)", required=True),
                Input(
                    "password", text, lambda v: parse_string(v, **secret), "password", required=True
                ),
                Input(
                    "confirm_password",
                    text,
                    lambda v: parse_string(v, **secret),
                    "again",
                    required=True,
                ),
                Input(
                    "perms",
                    InputKind.STRING_STRUCT,
                    _permissions,
                    "EMAIL, SERVICES, CLUSTER",
                    default=list,
                ),
                *ignored,
            ),
        ),
        Action(
            "edit",
            "Change a user's name, e-mail, password or permissions.",
            changing(edit),
            (
                Input("user", text, parse_string, "e-mail address", required=True),
                Input("nickname", text, parse_string, "display name"),
                Input("email", text, parse_string, "new e-mail address"),
                Input("password", text, lambda v: parse_string(v, **secret), "new password"),
                Input("confirm_password", text, lambda v: parse_string(v, **secret), "again"),
                perms,
                *ignored,
            ),
        ),
        Action(
            "delete",
            "Delete users (never the master).",
            changing(each(users.remove, "NodeWorx user deleted")),
            (user_list,),
        ),
        Action(
            "activate",
            "Let users log in again.",
            changing(each(lambda e: users.set_active(e, True), "NodeWorx User activated")),
            (user_list,),
        ),
        Action(
            "deactivate",
            "Stop users logging in; their sessions end.",
            changing(each(lambda e: users.set_active(e, False), "NodeWorx user deactivated")),
            (user_list,),
        ),
    ]
    for action in actions:
        controller.add(action)
    return controller


async def _false(caller: Caller, values: dict[str, Any]) -> bool:
    return False
