"""`sendworx` command: parse the arguments and hand over to the right part.

Every subcommand works on one instance, chosen by --home or SENDWORX_HOME (default ./var).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sendworx.cli import (
    dkim_command,
    history_command,
    holds_command,
    queue_arguments,
    suppression_command,
    webhooks_command,
)
from sendworx.cli.privileges import become, by_an_account
from sendworx.shared.config import ConfigError
from sendworx.shared.instance import SYSTEM_USER, Instance, chosen_instance


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sendworx", description="Outbound Mail service (InterWorx-compatible)"
    )
    parser.add_argument(
        "--home", type=Path, help="instance directory (default $SENDWORX_HOME or ./var)"
    )
    parser.add_argument(
        "--system",
        action="store_true",
        help="the installed instance (/etc/sendworx, /var/lib/sendworx, ...); the default where"
        " /etc/sendworx/sendworx.toml exists and neither --home nor $SENDWORX_HOME is given",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help="create the instance, its master user and API key")
    init.add_argument("--email", help="the master user's e-mail (default admin@helo_name)")
    commands.add_parser("panel", help="run the NodeWorx API (HTTPS and HTTP) in the foreground")
    user = commands.add_parser("user", help="manage NodeWorx users")
    user_commands = user.add_subparsers(dest="user_command", required=True)
    user_add = user_commands.add_parser(
        "add", help="add a user (password from the terminal or stdin)"
    )
    user_add.add_argument("email")
    user_add.add_argument("--name", default="")
    user_add.add_argument(
        "--permission", action="append", default=[], help="EMAIL, SERVICES or CLUSTER; repeatable"
    )
    user_commands.add_parser("list", help="list users")
    user_remove = user_commands.add_parser("remove", help="remove a user and their keys")
    user_remove.add_argument("email")
    key = commands.add_parser("apikey", help="issue a new API key (the old one stops working)")
    key.add_argument("--user", help="whose key (default the master user)")
    commands.add_parser("run", help="run the whole service in the foreground (make run)")
    commands.add_parser("serve", help="run the whole service under systemd (sendworx.service)")
    commands.add_parser("send", help="run the delivery engine in the foreground")
    commands.add_parser("smtpd", help="run the SMTP submission listener in the foreground")
    commands.add_parser("submitd", help="run the local submission daemon (sendmail, mailq)")
    commands.add_parser("webhookd", help="run the webhook sender in the foreground")
    commands.add_parser("mailq", help="list the mail queue (an account sees its own mail)")
    commands.add_parser("newaliases", help="check the aliases file (root)")
    sendmail = commands.add_parser(
        "sendmail", help="sendmail-compatible injection", add_help=False, prefix_chars="+"
    )
    sendmail.add_argument("arguments", nargs=argparse.REMAINDER)
    queue_arguments.add_arguments(commands.add_parser("queue", help="inspect and manage the queue"))
    holds_command.add_arguments(
        commands.add_parser("holds", help="senders the sending policy holds: list, release...")
    )
    dkim_command.add_arguments(
        commands.add_parser("dkim", help="DKIM keys: list, add, show, rotate, check, delete")
    )
    history_command.add_arguments(
        commands.add_parser("history", help="what happened to the mail: search, one message")
    )
    suppression_command.add_arguments(
        commands.add_parser("suppression", help="addresses not attempted: list, add, remove...")
    )
    webhooks_command.add_arguments(
        commands.add_parser("webhooks", help="signed event posts: endpoints, attempts, tests")
    )
    mailbox = commands.add_parser("mailbox", help="read mail for this host itself")
    mailbox.add_argument("mailbox", nargs="?", help="a local user (root is postmaster)")
    mailbox.add_argument("id", nargs="?", help="one message's id, as listed")
    mailbox.add_argument("--json", action="store_true", help="print JSON")
    nodeworx = commands.add_parser(
        "nodeworx",
        help="run an API action like InterWorx's nodeworx: -u -n -c MailSend -a update --name v",
        add_help=False,
        prefix_chars="+",
    )
    nodeworx.add_argument("arguments", nargs=argparse.REMAINDER)
    status = commands.add_parser("status", help="service, since, queue, settings and nodes")
    status.add_argument("--json", action="store_true")
    status.add_argument("--cluster", action="store_true", help="also ask every node")
    node = commands.add_parser("node", help="the cluster nodes this manager drives")
    node_commands = node.add_subparsers(dest="node_command", required=True)
    node_add = node_commands.add_parser("add", help="register a node: HOST[:PORT] or https URL")
    node_add.add_argument("address")
    node_add.add_argument("--key-file", type=Path, required=True, help="the node's API key")
    node_delete = node_commands.add_parser("delete", help="forget a node")
    node_delete.add_argument("address", metavar="NODE_ID")
    node_list = node_commands.add_parser("list", help="registered nodes, pinned certificates")
    for sub in (node_add, node_delete, node_list):
        sub.add_argument("--json", action="store_true")
    for action in ("start", "stop", "restart"):
        control = commands.add_parser(action, help=f"{action} the Outbound Mail service")
        control.add_argument("--json", action="store_true")
    settings = commands.add_parser("settings", help="show the settings, or `set KEY=VALUE...`")
    settings.add_argument("--json", action="store_true")
    settings_commands = settings.add_subparsers(dest="settings_command")
    settings_set = settings_commands.add_parser("set", help="change settings: KEY=VALUE ...")
    settings_set.add_argument("assignments", nargs="+", metavar="KEY=VALUE")
    settings_set.add_argument("--json", action="store_true")
    return parser


# Commands every account may run on an installed server: they go through the submission
# socket as the caller, whose identity the daemon takes from the kernel.
THROUGH_SUBMISSION = ("sendmail", "mailq", "newaliases")


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    instance = chosen_instance(arguments.home, arguments.system)
    if instance.system and arguments.command in THROUGH_SUBMISSION:
        return _submit(instance, arguments)
    if arguments.command in ("history", "webhooks") and by_an_account(instance):
        if arguments.command == "webhooks":
            return webhooks_command.run_for_account(arguments, instance)
        return history_command.run_for_account(arguments, instance)
    if instance.system and os.geteuid() == 0:
        # Root acts as the service's account: the files it creates stay the service's.
        try:
            become(SYSTEM_USER)
        except (KeyError, OSError) as error:
            print(f"sendworx: cannot act as {SYSTEM_USER}: {error}", file=sys.stderr)
            return 77  # EX_NOPERM
    try:
        instance.config  # noqa: B018 - load now so a broken config fails before any work
    except ConfigError as error:
        print(f"sendworx: {error}", file=sys.stderr)
        return 78  # EX_CONFIG
    return _dispatch(arguments, instance)


def _dispatch(arguments: argparse.Namespace, instance: Instance) -> int:
    """Each command imports only what it needs: `sendmail` runs once per message that PHP's
    mail() sends, and loading the panel and the engine for it cost half a second of CPU."""
    command = arguments.command
    if command == "sendmail":
        from sendworx.inject import sendmail

        return sendmail.run(
            arguments.arguments,
            instance.queue(),
            instance.mail_names(),
            admission=instance.admission_socket,
        )
    # Everything else writes what only the instance's owner may read: logs (every envelope
    # address, the audit trail), control files, queue files, keys. (sendmail keeps the
    # caller's umask: it may run as another account that shares the queue through a group.)
    os.umask(0o077)
    if command in ("panel", "send", "smtpd", "webhookd"):
        from sendworx.cli import processes

        instance.ensure()
        run = {
            "panel": processes.run_panel,
            "send": processes.run_engine,
            "webhookd": processes.run_webhookd,
        }
        return run.get(command, processes.run_smtpd)(instance)
    if command in ("run", "serve"):
        from sendworx.cli import supervisor

        return supervisor.run(instance) if command == "run" else supervisor.serve(instance)
    if command == "submitd":
        from sendworx.cli import processes

        instance.ensure()
        return processes.run_submitd(instance)
    if command in ("mailq", "newaliases"):
        return _submit(instance, arguments)
    if command in ("init", "user", "apikey"):
        return _users(arguments, instance)
    if command == "queue":
        return _queue(arguments, instance)
    if command == "holds":
        return holds_command.run(arguments, instance)
    if command == "dkim":
        return dkim_command.run(arguments, instance)
    if command == "history":
        return history_command.run(arguments, instance)
    if command == "suppression":
        return suppression_command.run(arguments, instance)
    if command == "webhooks":
        return webhooks_command.run(arguments, instance)
    if command == "mailbox":
        from sendworx.cli import mailbox_command

        return mailbox_command.run(arguments, instance)
    if command == "nodeworx":
        from sendworx.cli import nodeworx_command

        return nodeworx_command.run(arguments.arguments, "sendworx nodeworx", instance)
    return _operator(arguments, instance)


def _users(arguments: argparse.Namespace, instance: Instance) -> int:
    from sendworx.cli import users_command

    if arguments.command == "init":
        return users_command.init(instance, arguments.email)
    if arguments.command == "apikey":
        return users_command.apikey(instance, arguments.user)
    if arguments.user_command == "add":
        return users_command.add(instance, arguments.email, arguments.name, arguments.permission)
    if arguments.user_command == "list":
        return users_command.list_users(instance)
    return users_command.remove(instance, arguments.email)


def _queue(arguments: argparse.Namespace, instance: Instance) -> int:
    from sendworx.cli import queue_command

    return queue_command.run(arguments, instance)


def _operator(arguments: argparse.Namespace, instance: Instance) -> int:
    """status, node, start/stop/restart and settings: the API's actions for people."""
    from sendworx.cli import operator_commands

    command = arguments.command
    if command == "status":
        return operator_commands.status(instance, arguments.json, arguments.cluster)
    if command == "node":
        return operator_commands.nodes(
            instance,
            arguments.node_command,
            getattr(arguments, "address", None),
            getattr(arguments, "key_file", None),
            arguments.json,
        )
    if command in ("start", "stop", "restart"):
        return operator_commands.control(instance, command, arguments.json)
    if arguments.settings_command == "set":
        return operator_commands.settings_set(instance, arguments.assignments, arguments.json)
    return operator_commands.settings(instance, arguments.json)


def _submit(instance: Instance, arguments: argparse.Namespace) -> int:
    """Through the local submission daemon, as /usr/sbin/sendmail does."""
    from sendworx.inject.submit_client import submit

    argv = [arguments.command, *getattr(arguments, "arguments", [])]
    return submit(
        instance.submission_socket, argv, sys.stdin.buffer, sys.stdout.buffer, sys.stderr.buffer
    )
