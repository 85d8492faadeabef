"""Driving the pages in Debian's Chromium (Playwright, no browser download): logging in, axe-core,
and the screenshots kept as test artifacts (`test-artifacts/pages/`, copied into the docs by
`make screenshots`)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page

from support.panel import Panel

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # tests may run as root in CI containers
    "--disable-gpu",
    "--disable-dev-shm-usage",
    # Loopback only: nothing of Chromium's own reaches out.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "pages"
_AXE = Axe()


def panel_url(panel: Panel, *, https: bool = False) -> str:
    if https:
        return f"https://127.0.0.1:{panel.https_port}"
    return f"http://127.0.0.1:{panel.http_port}"


def log_in(
    page: Page,
    panel: Panel,
    *,
    email: str | None = None,
    password: str | None = None,
    path: str = "/",
) -> None:
    """Logs in through the login form, starting at `path` (the pages send you there after)."""
    page.goto(panel_url(panel) + path)
    page.get_by_label("E-mail address").fill(email or panel.email)
    page.get_by_label("Password").fill(password or panel.password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()


def serious_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    results = _AXE.run(page)
    return [
        {
            "id": violation["id"],
            "impact": violation["impact"],
            "help": violation["help"],
            "where": [node["target"] for node in violation["nodes"]][:5],
        }
        for violation in results.response["violations"]
        if violation["impact"] in ("serious", "critical")
    ]


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
