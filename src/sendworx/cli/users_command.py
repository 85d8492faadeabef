"""`sendworx init`, `sendworx user ...` and `sendworx apikey`: NodeWorx users and their keys.

Secrets are printed once or written to 0600 files; the store keeps only hashes.
"""

from __future__ import annotations

import getpass
import secrets
import sys

from sendworx.api.users import PERMISSIONS, UserError, UserStore
from sendworx.shared.durable import atomic_write
from sendworx.shared.instance import Instance


def store(instance: Instance) -> UserStore:
    return UserStore(instance.users_file)


def init(instance: Instance, email: str | None) -> int:
    instance.ensure()
    instance.queue()
    users = store(instance)
    master = next((user for user in users.users() if user.master), None)
    if master is None:
        address = email or f"admin@{instance.config.helo_name}"
        password = secrets.token_urlsafe(18)
        try:
            users.add(address, "Master user", password, sorted(PERMISSIONS), master=True)
        except UserError as error:
            print(f"sendworx init: {error}", file=sys.stderr)
            return 1
        atomic_write(instance.master_password_file, f"{password}\n".encode(), mode=0o600)
        key = users.issue_key(address)
        atomic_write(instance.master_key_file, key.encode(), mode=0o600)
        print(f"master user {address} created")
    _host_dkim_key(instance)
    print(f"instance ready in {instance.home}")
    print(f"master API key: {instance.master_key_file} (mode 0600)")
    print(f"master password: {instance.master_password_file} (mode 0600)")
    return 0


def add(instance: Instance, email: str, name: str, permissions: list[str]) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {email}: ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    try:
        store(instance).add(email, name or email, password, permissions)
    except UserError as error:
        print(f"sendworx user add: {error}", file=sys.stderr)
        return 1
    print(f"user {email} added with permissions: {', '.join(permissions) or '(none)'}")
    return 0


def list_users(instance: Instance) -> int:
    for user in store(instance).users():
        role = "master" if user.master else ",".join(user.permissions) or "-"
        print(f"{user.email}\t{user.name}\t{role}\t{len(user.key_digests)} key(s)")
    return 0


def remove(instance: Instance, email: str) -> int:
    try:
        store(instance).remove(email)
    except UserError as error:
        print(f"sendworx user remove: {error}", file=sys.stderr)
        return 1
    print(f"user {email} removed")
    return 0


def apikey(instance: Instance, email: str | None) -> int:
    """Issue a new key (earlier ones stop working) and print it once."""
    users = store(instance)
    target = email or next((user.email for user in users.users() if user.master), None)
    if target is None:
        print("sendworx apikey: no master user; run `sendworx init` first", file=sys.stderr)
        return 1
    try:
        key = users.issue_key(target)
    except UserError as error:
        print(f"sendworx apikey: {error}", file=sys.stderr)
        return 1
    user = users.get(target)
    if user is not None and user.master:
        atomic_write(instance.master_key_file, key.encode(), mode=0o600)
    sys.stdout.write(key)
    return 0


def _host_dkim_key(instance: Instance) -> None:
    """This host signs its own mail from the start: a key for the domain sendmail gives bare
    names (`defaultdomain`), usable by the host itself (root, the service's account, the
    engine's bounces) and by no customer's account until the operator says so."""
    from sendworx.shared.dkim_keys import InputError

    domain = instance.mail_names().default_domain
    store = instance.dkim_keys()
    try:
        if store.of_domain(domain):
            return
        key = store.add(domain)
    except InputError as error:  # a host name DKIM cannot sign for (localhost, a literal)
        print(f"no DKIM key made for {domain}: {error}")
        return
    print(f"DKIM key for {key.domain} (selector {key.selector}); publish its record:")
    print(f"  {key.zone_line}")
