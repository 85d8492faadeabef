"""DKIM (`/nodeworx/mail/dkim`, permission EMAIL): per domain, its keys and their states, the
record to publish with a copy button, what DNS shows (looked up on request: a lookup can take
seconds), who may sign, and the rotation's next step; a key added; a domain's keys deleted
behind a confirmation. Everything goes through `/nodeworx/mail/dkim`, as the CLI does."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sendworx.shared.errors import ValidationFailed
from sendworx.web.forms import Form
from sendworx.web.page import Page, WebApp, action, view
from sendworx.web.pages.outcomes import change_notice, problems_of
from sendworx.web.session import Notice

DKIM = "/nodeworx/mail/dkim"
PAGE = DKIM
STEPS = {
    "start": (
        "Start a rotation",
        "A new key under a new selector waits, signing nothing, until DNS shows its record.",
    ),
    "finish": (
        "Switch to the new key",
        "Signing switches to the new key now, if DNS shows its record.",
    ),
    "abort": ("Abort the rotation", "The new key is dropped; the current one keeps signing."),
}


def dkim_routes(web: WebApp) -> list[BaseRoute]:
    async def show(page: Page) -> Response:
        keys: list[dict[str, Any]] = await page.payload(DKIM, "listKeys")
        checked = page.request.query_params.get("check", "")
        checks: dict[tuple[str, str], dict[str, str]] = {}
        if checked:
            inputs = {} if checked == "*" else {"domain": checked}
            reply = await page.call(DKIM, "check", inputs)
            if reply.status == 0:
                checks = {(c["domain"], c["selector"]): c for c in reply.payload}
        domains: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for key in keys:
            domains[key["domain"]].append(key)
        records: dict[str, list[dict[str, Any]]] = {}
        for domain in domains:
            records[domain] = await page.payload(DKIM, "queryRecords", {"domain": domain})
        return page.render(
            "dkim.html",
            domains=[_domain_view(d, domains[d], records[d], checks) for d in sorted(domains)],
            checked=checked,
            steps=STEPS,
        )

    async def add(page: Page, form: Form) -> Response:
        inputs: dict[str, Any] = {
            "domain": form.get("domain"),
            "algorithm": form.get("algorithm") or "rsa",
            "accounts": form.get("accounts"),
            "any": int(form.get("any") == "1"),
        }
        if inputs["algorithm"] == "rsa":
            inputs["bits"] = form.get("bits") or "2048"
        reply = await page.call(DKIM, "add", inputs)
        if reply.status == ValidationFailed.status:
            return page.redirect(PAGE, Notice("error", f"No key added: {problems_of(reply)}"))
        if reply.status != 0:
            return page.redirect(PAGE, Notice("error", str(reply.payload)))
        key = reply.payload
        return page.redirect(
            f"{PAGE}#domain-{key['domain']}",
            Notice("ok", f"Key {key['selector']} added for {key['domain']}: publish its record."),
        )

    async def allow(page: Page, form: Form) -> Response:
        domain = form.get("domain")
        inputs = {
            "domain": domain,
            "accounts": form.get("accounts"),
            "networks": form.get("networks"),
            "any": int(form.get("any") == "1"),
        }
        reply = await page.call(DKIM, "allow", inputs)
        if reply.status == ValidationFailed.status:
            return page.redirect(PAGE, Notice("error", f"Not saved: {problems_of(reply)}"))
        return page.redirect(
            f"{PAGE}#domain-{domain}", change_notice(reply, f"Who may sign as {domain} saved")
        )

    async def rotate(page: Page, form: Form) -> Response:
        domain, step = form.get("domain"), form.get("step")
        if step not in STEPS:
            return page.redirect(PAGE, Notice("error", "Choose a step of the rotation."))
        reply = await page.call(DKIM, "rotate", {"domain": domain, "step": step})
        if reply.status != 0:
            text = problems_of(reply) if reply.status == ValidationFailed.status else reply.payload
            return page.redirect(f"{PAGE}#domain-{domain}", Notice("error", f"{domain}: {text}"))
        done = {
            "start": f"{domain}: a new key waits for its record in DNS; publish it below.",
            "finish": f"{domain} signs with its new key; the old one retires in time.",
            "abort": f"{domain}: the rotation was given up; the current key keeps signing.",
        }[step]
        return page.redirect(f"{PAGE}#domain-{domain}", Notice("ok", done))

    async def delete(page: Page, form: Form) -> Response:
        domain = form.get("domain")
        if form.get("confirmed") != "1":
            return page.confirm(
                title=f"Delete every DKIM key of {domain}?",
                text="Its mail goes out unsigned from now on, and the private keys are gone for"
                " good: mail already queued keeps its signatures.",
                target=f"{PAGE}/delete",
                fields={"domain": domain},
                button=f"Delete the keys of {domain}",
                danger=True,
                cancel=PAGE,
            )
        reply = await page.call(DKIM, "delete", {"domain": domain})
        return page.redirect(PAGE, change_notice(reply, f"The DKIM keys of {domain} deleted"))

    return [
        Route(PAGE, view(web, show), methods=["GET"]),
        Route(f"{PAGE}/add", action(web, add), methods=["POST"]),
        Route(f"{PAGE}/allow", action(web, allow), methods=["POST"]),
        Route(f"{PAGE}/rotate", action(web, rotate), methods=["POST"]),
        Route(f"{PAGE}/delete", action(web, delete), methods=["POST"]),
    ]


def _domain_view(
    domain: str,
    keys: list[dict[str, Any]],
    records: list[dict[str, Any]],
    checks: dict[tuple[str, str], dict[str, str]],
) -> dict[str, Any]:
    """What the template shows of one domain: its keys with their record and DNS status, who
    may sign, and which rotation steps apply."""
    record_of = {record["selector"]: record for record in records}
    now = time.time()
    shown = []
    for key in sorted(keys, key=lambda k: (_ORDER.get(k["state"], 9), -k["created"])):
        check = checks.get((domain, key["selector"]))
        shown.append(
            {
                **key,
                "record": record_of.get(key["selector"]),
                "check": check,
                "removable": key["state"] == "retired"
                or (key["state"] == "retiring" and (key["retire_after"] or 0) <= now),
            }
        )
    pending = any(key["state"] == "pending" for key in keys)
    origins = keys[0]["origins"] if keys else {"accounts": [], "networks": [], "any": False}
    return {
        "name": domain,
        "key_rows": shown,
        "steps": ["finish", "abort"] if pending else ["start"],
        "origins": origins,
    }


_ORDER = {"active": 0, "pending": 1, "retiring": 2, "retired": 3}
