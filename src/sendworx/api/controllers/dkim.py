"""/nodeworx/mail/dkim: the operator's DKIM keys. sendworx's own controller (InterWorx keeps
DomainKeys under SiteWorx, per domain; permission EMAIL), in InterWorx's conventions: status
11 naming the field at fault, nothing changed on any error. Every action exists `OnNode`.

    listKeys                      every key: domain, selector, algorithm, size, state, origins
    queryRecords(domain)          the DNS records to publish: name, 255-byte strings, zone line
    add(domain, ...)              a new key (generated, or `key`: an imported PEM); a domain's
                                  first key is active at once
    allow(domain, ...)            who may sign as the domain: accounts, networks, or anyone
    rotate(domain, step)          start (a pending key under a new selector), finish (switch
                                  to it once DNS shows its record; the old one retires after
                                  the queue lifetime), abort
    check(domain?)                look the records up: ok, missing, mismatch, error
    delete(domain)                every key of the domain

Private keys never leave the server: no action returns them, and no log line holds one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sendworx.api.controllers.common import (
    ANY_STRUCT,
    add_common_actions,
    on_node,
    parse_flag,
    parse_string,
)
from sendworx.api.controllers.service_actions import cascade_input
from sendworx.api.registry import Action, Caller, Controller, Handler, Input, InputKind
from sendworx.cluster.manager import ClusterManager
from sendworx.shared.dkim_dns import check_record
from sendworx.shared.dkim_keys import (
    ALGORITHMS,
    DkimKey,
    InputError,
    Origins,
    check_selector,
    normalize_domain,
)
from sendworx.shared.errors import PartialFailure, ValidationFailed
from sendworx.shared.instance import Instance
from sendworx.shared.settings import read_settings
from sendworx.shared.wire import Call

DKIM = "/nodeworx/mail/dkim"
MAX_PEM_BYTES = 16 * 1024
KEY_LIST: dict[str, Any] = {"type": "array", "items": ANY_STRUCT}


def key_payload(key: DkimKey) -> dict[str, Any]:
    return {
        "domain": key.domain,
        "selector": key.selector,
        "algorithm": key.algorithm,
        "bits": key.bits,
        "state": key.state,
        "origins": key.origins.to_document(),
        "testing": int(key.testing),
        "created": key.created,
        "activated": key.activated,
        "retire_after": key.retire_after,
    }


def record_payload(key: DkimKey) -> dict[str, Any]:
    return {
        "domain": key.domain,
        "selector": key.selector,
        "state": key.state,
        "name": key.record_name,
        "type": "TXT",
        "value": key.record_text,
        "strings": key.record_strings,
        "zone_line": key.zone_line,
    }


def parse_domain(value: object) -> str:
    try:
        return normalize_domain(parse_string(value, max_length=253))
    except InputError as error:
        raise ValueError(str(error)) from None


def _selector(value: object) -> str:
    try:
        return check_selector(parse_string(value, max_length=63))
    except InputError as error:
        raise ValueError(str(error)) from None


def _choice(options: tuple[str, ...]) -> Any:
    def parse(value: object) -> str:
        text = parse_string(value, max_length=20).lower()
        if text not in options:
            raise ValueError(f"one of {', '.join(options)}")
        return text

    return parse


def _bits(value: object) -> int:
    try:
        bits = int(str(value))
    except ValueError:
        raise ValueError("a number of bits: 1024 to 4096") from None
    if not 1024 <= bits <= 4096 or bits % 8:
        raise ValueError("1024 to 4096, a multiple of 8")
    return bits


def _names(value: object) -> list[str]:
    items = value if isinstance(value, list) else str(value).replace("\n", ",").split(",")
    return [parse_string(item, max_length=64) for item in items if str(item).strip()]


def _pem(value: object) -> str:
    if not isinstance(value, str) or len(value.encode()) > MAX_PEM_BYTES:
        raise ValueError(f"a PEM private key (at most {MAX_PEM_BYTES} bytes)")
    return value


PUSHED = ("add", "allow", "rotate", "delete")  # changes cascade_to_nodes sends on
MAX_PUSHED_KEYS = 20


def _pushed_keys(value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list) or len(value) > MAX_PUSHED_KEYS:
        raise ValueError(f"a list of at most {MAX_PUSHED_KEYS} keys")
    if not all(isinstance(item, dict) for item in value):
        raise ValueError("each key a struct, as the manager exports it")
    if any(len(str(item.get("pem", ""))) > MAX_PEM_BYTES for item in value):
        raise ValueError(f"a private key of at most {MAX_PEM_BYTES} bytes")
    return value


def _refused(error: InputError) -> ValidationFailed:
    return ValidationFailed({error.field: str(error)})


def dkim_controller(instance: Instance, cluster: ClusterManager) -> Controller:
    controller = Controller(DKIM, "MailDkim", ("EMAIL",))
    store = instance.dkim_keys()

    def origins_from(values: dict[str, Any]) -> Origins:
        return Origins.checked(
            values.get("accounts", []), values.get("networks", []), bool(values.get("any", 0))
        )

    async def in_thread(work: Any, *arguments: Any, **keywords: Any) -> Any:
        try:
            return await asyncio.to_thread(work, *arguments, **keywords)
        except InputError as error:
            raise _refused(error) from error

    def pushing(handler: Handler) -> Handler:
        """The change here; with cascade_to_nodes=1, then the domain's keys as they now are,
        private keys included, to every node (`syncKeys`): nodes sign with the manager's
        keys, never with keys of their own making. Status 207 unless every node took them."""

        async def run(caller: Caller, values: dict[str, Any]) -> Any:
            result = await handler(caller, values)
            if not values.get("cascade_to_nodes") or not cluster.store.nodes():
                return result
            keys = await in_thread(store.export, values["domain"])
            call: Call[Any] = Call(DKIM, "syncKeys", {"domain": values["domain"], "keys": keys})
            results = await cluster.cascade(result, call)
            if any(outcome["status"] != 0 for outcome in results.values()):
                raise PartialFailure(results)
            return results

        return run

    async def list_keys(caller: Caller, values: dict[str, Any]) -> list[dict[str, Any]]:
        return [key_payload(key) for key in await in_thread(store.all_keys)]

    async def query_records(caller: Caller, values: dict[str, Any]) -> list[dict[str, Any]]:
        keys = await in_thread(store.of_domain, values["domain"])
        if not keys:
            raise ValidationFailed({"domain": f"no DKIM key for {values['domain']}"})
        return [record_payload(key) for key in keys if key.state != "retired"]

    async def add(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        def work() -> DkimKey:
            pem = values.get("key")
            return store.add(
                values["domain"],
                selector=values.get("selector") or None,
                algorithm=values.get("algorithm") or "rsa",
                bits=values.get("bits") or 2048,
                origins=origins_from(values),
                testing=bool(values.get("testing", 0)),
                pem=pem.encode() if pem else None,
            )

        key = await in_thread(work)
        return {**key_payload(key), "record": record_payload(key)}

    async def allow(caller: Caller, values: dict[str, Any]) -> list[dict[str, Any]]:
        def work() -> list[DkimKey]:
            testing = values.get("testing")
            return store.update(
                values["domain"],
                origins=origins_from(values),
                testing=None if testing is None else bool(testing),
            )

        return [key_payload(key) for key in await in_thread(work)]

    async def rotate(caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        domain, step = values["domain"], values["step"]

        def work() -> dict[str, Any]:
            with store.changing():  # no second rotation starts between the check and the add
                return rotation(domain, step, values)

        result: dict[str, Any] = await in_thread(work)
        return result

    def rotation(domain: str, step: str, values: dict[str, Any]) -> dict[str, Any]:
        keys = store.of_domain(domain)
        if not keys:
            raise InputError(f"no DKIM key for {domain}")
        pending = [key for key in keys if key.state == "pending"]
        if step == "abort":
            return {"aborted": [key_payload(key) for key in store.abort(domain)]}
        if step == "start":
            if pending:
                raise InputError(f"{domain} is already rotating to {pending[0].selector}")
            current = next((key for key in keys if key.state == "active"), keys[-1])
            size = current.bits if current.algorithm == "rsa" else 2048
            key = store.add(
                domain,
                selector=values.get("selector") or None,
                algorithm=values.get("algorithm") or current.algorithm,
                bits=values.get("bits") or size,
                origins=current.origins,
                testing=current.testing,
                pending=True,
            )
            return {"pending": key_payload(key), "record": record_payload(key)}
        if not pending:
            raise InputError(f"{domain} has no rotation in progress", "step")
        found = check_record(pending[0], instance.config.resolver)
        if found.status != "ok":
            raise InputError(
                f"the record of {pending[0].selector} is {found.status} in DNS"
                f"{': ' + found.detail if found.detail else ''}; publish it first",
                "step",
            )
        lifetime = read_settings(instance.control_dir).queue_lifetime
        active = store.activate(domain, pending[0].selector, float(lifetime))
        return {"active": key_payload(active)}

    async def check(caller: Caller, values: dict[str, Any]) -> list[dict[str, str]]:
        def work() -> list[dict[str, str]]:
            domain = values.get("domain")
            keys = store.of_domain(domain) if domain else store.all_keys()
            live = [key for key in keys if key.state in ("pending", "active", "retiring")]
            return [check_record(key, instance.config.resolver).to_document() for key in live]

        checks: list[dict[str, str]] = await in_thread(work)
        return checks

    async def delete(caller: Caller, values: dict[str, Any]) -> str:
        gone = await in_thread(store.delete, values["domain"])
        return f"{len(gone)} DKIM key(s) of {values['domain']} deleted"

    domain = Input("domain", InputKind.STRING, parse_domain, "the From domain", required=True)
    some_domain = Input("domain", InputKind.STRING, parse_domain, "one domain (default: every one)")
    selector = Input("selector", InputKind.STRING, _selector, "the selector (default: swYYYYMM)")
    algorithm = Input(
        "algorithm", InputKind.STRING, _choice(ALGORITHMS), "rsa (default) or ed25519"
    )
    bits = Input("bits", InputKind.INTEGER, _bits, "RSA key size: 1024 to 4096 (default 2048)")
    accounts = Input(
        "accounts", InputKind.STRING_STRUCT, _names, "Unix accounts that may sign as the domain"
    )
    networks = Input(
        "networks", InputKind.STRING_STRUCT, _names, "client networks (SMTP) that may sign"
    )
    anyone = Input("any", InputKind.INTEGER, parse_flag, "1: every sender may sign (one tenant)")
    testing = Input("testing", InputKind.INTEGER, parse_flag, "1: t=y in the record")
    pem = Input("key", InputKind.STRING, _pem, "an existing private key (PEM) to import")
    step = Input(
        "step",
        InputKind.STRING,
        _choice(("start", "finish", "abort")),
        "start, finish (once DNS shows the new record) or abort",
        required=True,
        schema={"enum": ["start", "finish", "abort"]},
    )
    actions: list[tuple[str, str, Handler, tuple[Input, ...], Any]] = [
        ("listKeys", "Every DKIM key and its state.", list_keys, (), KEY_LIST),
        ("queryRecords", "The DNS records a domain's keys need.", query_records, (domain,),
         KEY_LIST),
        ("add", "A new key for a domain, generated or imported.", add,
         (domain, selector, algorithm, bits, accounts, networks, anyone, testing, pem), ANY_STRUCT),
        ("allow", "Who may sign as a domain.", allow,
         (domain, accounts, networks, anyone, testing), KEY_LIST),
        ("rotate", "Start, finish or abort a key rotation.", rotate,
         (domain, step, selector, algorithm, bits), ANY_STRUCT),
        ("check", "Look the records up in DNS.", check, (some_domain,), KEY_LIST),
        ("delete", "Every key of a domain.", delete, (domain,), {"type": "string"}),
    ]  # fmt: skip
    for name, description, handler, inputs, returns in actions:
        pushes = name in PUSHED
        controller.add(
            Action(
                name,
                description,
                pushing(handler) if pushes else handler,
                (*inputs, cascade_input()) if pushes else inputs,
                returns,
            )
        )
        controller.add(on_node(cluster, DKIM, Action(name, description, handler, inputs, returns)))

    async def sync_keys(caller: Caller, values: dict[str, Any]) -> str:
        kept = await in_thread(store.replace_domain, values["domain"], values["keys"])
        return f"{len(kept)} DKIM key(s) of {values['domain']} as the manager has them"

    controller.add(
        Action(
            "syncKeys",
            "A domain's keys made exactly the manager's (what cascade_to_nodes sends).",
            sync_keys,
            (
                domain,
                Input(
                    "keys",
                    InputKind.STRUCT,
                    _pushed_keys,
                    "the domain's keys as the manager exports them, private keys included",
                    default=list,
                ),
            ),
            {"type": "string"},
        )
    )

    async def query_update() -> dict[str, Any]:
        keys = await in_thread(store.all_keys)
        return {"domains": sorted({key.domain for key in keys})}

    add_common_actions(controller, query_update)
    return controller
