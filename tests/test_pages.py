"""The web pages in a real browser (Debian's Chromium, driven by Playwright) against a real panel
and engine, with mail queued through smtpd into a sink that defers it; every change is checked
where it lands (control files, queue files, the running engine), not only on the page."""

from __future__ import annotations

import http.server
import smtplib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from support.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    log_in,
    panel_url,
    screenshot,
    serious_violations,
)
from support.cluster import Cluster
from support.dns_server import DNSServer
from support.instance import SendworxHome
from support.net import free_port, wait_for
from support.panel import Panel, control_file
from support.sink import Behaviour, RecordingSink
from support.webhook_receiver import PythonReceiver

from sendworx.shared.dkim_keys import KeyStore
from sendworx.shared.pidfile import running_pid

GREYLISTED = "451 4.7.1 greylisted, try again later"
MTA = "/nodeworx/mail/mta"
QUEUE = "/nodeworx/mail/queue"
POLICY = "/nodeworx/mail/policy"
DKIM = "/nodeworx/mail/dkim"
SECURITY_HEADERS = (
    "content-security-policy",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium per module, not per session: while Playwright's sync API lives, its event
    loop counts as running in this thread, and every `asyncio.run()` of the other tests this
    worker runs would fail (which is why pytest-playwright's session fixtures are not used)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def stuck(panel: Panel) -> Iterator[Panel]:
    """Mail for grey.test and late.test waits at a greylisting sink; the engine runs."""
    home = panel.home
    with RecordingSink("127.0.5.1", behaviour=Behaviour(refuse_rcpt=GREYLISTED)) as sink:
        home.routes(f"grey.test:[127.0.5.1]:{sink.port}", f"late.test:[127.0.5.1]:{sink.port}")
        home.start_smtpd()
        for number in range(5):
            _smtp(home, f"shop{number}@shop.test", f"buyer{number}@grey.test")
        for number in range(3):
            _smtp(home, f"news{number}@letters.test", f"reader{number}@late.test")
        assert panel.call("start")["status"] == 0
        home.wait_for_delivery_lines(8)
        yield panel


def _smtp(home: SendworxHome, sender: str, *recipients: str) -> None:
    with smtplib.SMTP("127.0.0.1", home.smtpd_port, timeout=10) as client:
        client.sendmail(sender, list(recipients), f"Subject: from {sender}\r\n\r\nhello\r\n")


def _queued(home: SendworxHome) -> list[str]:
    return home.queue_files("mess")


def _held(home: SendworxHome) -> set[str]:
    return {mid for mid in _queued(home) if home.state(mid).get("held")}


def _running(panel: Panel) -> bool:
    return bool(panel.call("isRunning")["payload"])


# -- logging in and out ----------------------------------------------------------------------


def test_login_wrong_password_lockout_and_logout(home: SendworxHome, page: Page) -> None:
    panel = Panel(home, max_failures=3, lockout_seconds=60).start()
    try:
        page.goto(panel_url(panel) + MTA)
        expect(page).to_have_url(f"{panel_url(panel)}/login?next=%2Fnodeworx%2Fmail%2Fmta")
        log_in(page, panel, password="wrong password", path=page.url.removeprefix(panel_url(panel)))
        expect(page.get_by_role("alert")).to_have_text(
            "The e-mail address or the password is wrong."
        )
        log_in(page, panel, path="/login?next=/nodeworx/mail/mta")
        expect(page).to_have_url(panel_url(panel) + MTA)
        expect(page.get_by_role("heading", name="Outbound Mail")).to_be_visible()
        page.get_by_role("button", name="Log out").click()
        expect(page.get_by_role("status")).to_have_text("You have logged out.")
        page.goto(panel_url(panel) + MTA)
        expect(page).to_have_url(f"{panel_url(panel)}/login?next=%2Fnodeworx%2Fmail%2Fmta")
        # Three failures lock the address out: then even the right password is refused.
        for _ in range(3):
            log_in(page, panel, password="still wrong")
        log_in(page, panel)
        expect(page.get_by_role("alert")).to_contain_text("too many failed attempts from 127.0.0.1")
        assert page.url.startswith(panel_url(panel) + "/login")
        # The API shares the lockout.
        assert panel.call("isRunning")["status"] == 401
    finally:
        panel.close()


def test_an_expired_session_asks_to_log_in_again_and_returns(
    home: SendworxHome, page: Page
) -> None:
    panel = Panel(home, session_seconds=1.5).start()
    try:
        log_in(page, panel, path=QUEUE)
        expect(page.get_by_role("heading", name="Mail Queue")).to_be_visible()
        time.sleep(2)  # the session's real lifetime; nothing else ends it
        page.reload()
        expect(page.get_by_role("status")).to_have_text(
            "Your session has ended. Log in again to continue."
        )
        page.get_by_label("E-mail address").fill(panel.email)
        page.get_by_label("Password").fill(panel.password)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(panel_url(panel) + QUEUE)
    finally:
        panel.close()


# -- Outbound Mail ---------------------------------------------------------------------------


def test_stop_start_and_restart_the_service(panel: Panel, page: Page) -> None:
    assert panel.call("start")["status"] == 0
    log_in(page, panel, path=MTA)
    state = page.locator('[data-live="running"]')
    expect(state).to_have_text("Running")
    page.get_by_role("button", name="Stop", exact=True).click()
    expect(page.get_by_role("heading", name="Stop Outbound Mail?")).to_be_visible()
    assert _running(panel)  # nothing happens before the confirmation
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_role("status")).to_have_text("Outbound Mail stopped.")
    expect(state).to_have_text("Stopped")
    assert not _running(panel)
    page.get_by_role("button", name="Start", exact=True).click()
    page.get_by_role("button", name="Start").click()
    expect(page.get_by_role("status")).to_have_text("Outbound Mail started.")
    expect(state).to_have_text("Running")
    before = running_pid(panel.home.instance.engine_pid_file)
    page.get_by_role("button", name="Restart", exact=True).click()
    page.get_by_role("link", name="Cancel").click()
    assert running_pid(panel.home.instance.engine_pid_file) == before
    page.get_by_role("button", name="Restart", exact=True).click()
    page.get_by_role("button", name="Restart").click()
    expect(page.get_by_role("status")).to_have_text("Outbound Mail restarted.")
    after = running_pid(panel.home.instance.engine_pid_file)
    assert after is not None and after != before


def test_the_status_follows_changes_made_elsewhere_without_a_reload(
    panel: Panel, page: Page
) -> None:
    assert panel.call("start")["status"] == 0
    log_in(page, panel, path=MTA)
    state = page.locator('[data-live="running"]')
    expect(state).to_have_text("Running")
    assert panel.call("stop")["status"] == 0  # over XML-RPC, not through the page
    expect(state).to_have_text("Stopped", timeout=12_000)


def test_an_invalid_setting_is_shown_at_its_field_and_nothing_is_saved(
    panel: Panel, page: Page
) -> None:
    home = panel.home
    assert panel.call("start")["status"] == 0
    log_in(page, panel, path=MTA)
    before = {name: control_file(home, name) for name in ("concurrencyremote", "timeoutconnect")}
    page.get_by_label("Simultaneous connections").fill("5000")
    page.get_by_label("Connect timeout (seconds)").fill("30")
    page.get_by_role("button", name="Save delivery settings").click()
    field = page.get_by_label("Simultaneous connections")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#e-concurrency_remote")).to_have_text("must be between 0 and 1000")
    expect(field).to_have_value("5000")  # what was typed stays, to be corrected
    assert {name: control_file(home, name) for name in before} == before
    field.fill("20")
    page.get_by_role("button", name="Save delivery settings").click()
    expect(page.get_by_role("status")).to_have_text("Delivery settings saved.")
    assert control_file(home, "concurrencyremote") == "20\n"
    assert control_file(home, "timeoutconnect") == "30\n"
    wait_for(lambda: "settings reloaded" in home.log_text() and "20" in home.log_text())
    expect(page.get_by_label("Simultaneous connections")).to_have_value("20")
    # A name setting: the API's message, then the change.
    page.get_by_label("Host name").fill("not a host!")
    page.get_by_role("button", name="Save mail server settings").click()
    expect(page.locator("#e-mailserver_hostname")).to_have_text("must be a host name")
    assert control_file(home, "me") is None
    page.get_by_label("Host name").fill("mx.example.net")
    page.get_by_role("button", name="Save mail server settings").click()
    expect(page.get_by_role("status")).to_have_text("Mail server settings saved.")
    assert control_file(home, "me") == "mx.example.net\n"


def test_routes_are_added_reordered_and_removed(panel: Panel, page: Page) -> None:
    home = panel.home
    log_in(page, panel, path=MTA)
    page.get_by_label("Domain of a new route").fill("example.com")
    page.get_by_label("Relay of a new route").fill("[192.0.2.1]:2525")
    page.get_by_role("button", name="Save routes", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("Routes saved.")
    assert control_file(home, "smtproutes") == "example.com:[192.0.2.1]:2525\n"
    # The catch-all: an empty domain. Enter in a field saves the table too.
    page.get_by_label("Relay of a new route").fill("smarthost.example.net")
    page.get_by_label("Relay of a new route").press("Enter")
    expect(page.get_by_role("status")).to_have_text("Routes saved.")
    assert control_file(home, "smtproutes") == (
        "example.com:[192.0.2.1]:2525\n:smarthost.example.net\n"
    )
    page.get_by_role("button", name="Move route 2 up").click()
    assert control_file(home, "smtproutes") == (
        ":smarthost.example.net\nexample.com:[192.0.2.1]:2525\n"
    )
    # An invalid relay: the API's message, the row marked, the file untouched.
    page.get_by_label("Relay of route 2").fill("[not an address]")
    page.get_by_role("button", name="Save routes", exact=True).click()
    expect(page.locator("#routes-error")).to_contain_text("route 2")
    expect(page.get_by_label("Relay of route 2")).to_have_attribute("aria-invalid", "true")
    assert control_file(home, "smtproutes") == (
        ":smarthost.example.net\nexample.com:[192.0.2.1]:2525\n"
    )
    page.goto(panel_url(panel) + MTA)
    page.get_by_role("button", name="Delete route 1").click()
    expect(page.get_by_role("status")).to_have_text("Route deleted.")
    assert control_file(home, "smtproutes") == "example.com:[192.0.2.1]:2525\n"


def test_the_forms_work_without_javascript(panel: Panel, browser: Browser) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        log_in(page, panel, path=MTA)
        page.get_by_label("Domain of a new route").fill("a.example")
        page.get_by_label("Relay of a new route").fill("relay.example.net")
        page.get_by_role("button", name="Add").click()
        page.get_by_label("Domain of a new route").fill("b.example")
        page.get_by_role("button", name="Add").click()
        page.get_by_role("button", name="Move route 1 down").click()
        assert control_file(panel.home, "smtproutes") == "b.example:\na.example:relay.example.net\n"
        page.get_by_label("Queue lifetime (seconds)").fill("86400")
        page.get_by_role("button", name="Save delivery settings").click()
        assert control_file(panel.home, "queuelifetime") == "86400\n"
    finally:
        context.close()


def test_apply_to_all_nodes_shows_each_nodes_result(
    tmp_path: Any, dns_server: DNSServer, page: Page
) -> None:
    cluster = Cluster(tmp_path, 2, dns_port=dns_server.port).start()
    try:
        cluster.register_all()
        manager, nodes = cluster.manager, cluster.nodes
        log_in(page, manager, path=MTA)
        page.get_by_label("Queue lifetime (seconds)").fill("7200")
        page.locator("#cascade-delivery").check()
        page.get_by_role("button", name="Save delivery settings").click()
        notice = page.get_by_role("status")
        expect(notice).to_contain_text("Delivery settings saved on every node.")
        for node in nodes:
            expect(notice).to_contain_text(
                f"{Cluster.node_id(node)}: Outbound mail settings updated"
            )
        for member in cluster.panels:
            assert control_file(member.home, "queuelifetime") == "7200\n"
        # The cluster page: every node, and the service controls per node.
        assert nodes[0].call("start")["status"] == 0
        page.get_by_role("link", name="Cluster").click()
        rows = page.locator("tbody tr")
        expect(rows).to_have_count(3)
        first = Cluster.node_id(nodes[0])
        expect(rows.nth(0).locator("td").first).to_have_text("1")  # this server
        expect(rows.nth(1).locator("td").first).to_have_text("2")
        expect(rows.nth(1)).to_contain_text(first)
        expect(rows.nth(1)).to_contain_text("running")
        expect(rows.nth(2)).to_contain_text("stopped")
        page.get_by_role("button", name=f"Stop Outbound Mail on {first}").click()
        page.get_by_role("button", name=f"Stop on {first}").click()
        expect(page.get_by_role("status")).to_have_text(f"Outbound Mail stopped on {first}.")
        assert not _running(nodes[0])
        screenshot(page, "cluster")
        assert serious_violations(page) == []
    finally:
        cluster.close()


# -- the Mail Queue --------------------------------------------------------------------------


def test_search_open_hold_release_and_delete_everything_matching(stuck: Panel, page: Page) -> None:
    panel, home = stuck, stuck.home
    everything = set(_queued(home))
    assert len(everything) == 8
    log_in(page, panel, path=QUEUE)
    expect(page.locator('[data-total="messages"]')).to_have_text("8")
    page.get_by_role("textbox", name="Recipient").fill("grey.test")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("heading", name="5 messages match")).to_be_visible()
    rows = page.locator("table.messages tbody tr")
    expect(rows).to_have_count(5)
    # One message in full: its envelope, its attempt and the remote reply.
    rows.first.get_by_role("link").click()
    expect(page.get_by_role("heading", name="Recipients")).to_be_visible()
    expect(page.get_by_role("region", name="Attempts")).to_contain_text(GREYLISTED)
    expect(page.locator(".facts")).to_contain_text("shop")
    page.go_back()
    # Hold two of them.
    boxes = page.locator('table.messages input[name="ids"]')
    chosen = [boxes.nth(0).get_attribute("value"), boxes.nth(1).get_attribute("value")]
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.get_by_role("button", name="Hold", exact=True).click()
    expect(page.get_by_role("heading", name="Hold 2 messages?")).to_be_visible()
    assert _held(home) == set()
    page.get_by_role("button", name="Hold 2 messages").click()
    expect(page.get_by_role("status")).to_have_text("Held 2 messages.")
    assert _held(home) == set(chosen)
    # Back to the search it came from.
    expect(page.get_by_role("textbox", name="Recipient")).to_have_value("grey.test")
    # Release them: select everything on the page.
    page.get_by_label("Select every message on this page").check()
    page.get_by_role("button", name="Release", exact=True).click()
    page.get_by_role("button", name="Release 5 messages").click()
    expect(page.get_by_role("status")).to_contain_text("Released 2 messages.")
    assert _held(home) == set()
    # Delete everything the search matches, after a confirmation that counts it.
    page.get_by_role("button", name="Delete all").click()
    expect(page.get_by_role("heading", name="Delete 5 messages?")).to_be_visible()
    expect(page.locator("form.confirm")).to_contain_text("recipient: grey.test")
    assert set(_queued(home)) == everything
    page.get_by_role("button", name="Delete 5 messages").click()
    expect(page.get_by_role("status")).to_have_text("Deleted 5 messages.")
    remaining = set(_queued(home))
    assert len(remaining) == 3
    assert all(home.state(mid) for mid in remaining)
    page.get_by_role("link", name="Clear").click()
    expect(page.locator('[data-total="messages"]')).to_have_text("3")


def test_the_queue_figures_follow_new_mail_without_a_reload(stuck: Panel, page: Page) -> None:
    log_in(page, stuck, path=QUEUE)
    expect(page.locator('[data-total="messages"]')).to_have_text("8")
    _smtp(stuck.home, "late@shop.test", "one-more@grey.test")
    expect(page.locator('[data-total="messages"]')).to_have_text("9", timeout=15_000)


def test_a_search_with_an_invalid_filter_says_so_at_the_filter(stuck: Panel, page: Page) -> None:
    log_in(page, stuck, path=QUEUE + "?older_than=soon")
    expect(page.locator("#e-older_than")).to_have_text("must be a number of seconds")
    older = page.get_by_role("textbox", name="Older than (seconds)")
    expect(older).to_have_attribute("aria-invalid", "true")


def test_activity_shows_results_per_minute_and_the_latest_replies(stuck: Panel, page: Page) -> None:
    log_in(page, stuck, path="/nodeworx/mail/activity")
    expect(page.locator('[data-activity-total="deferred"]')).to_have_text("8")
    expect(page.locator("tbody[data-latest] tr")).to_have_count(8)
    expect(page.locator("tbody[data-latest]")).to_contain_text(GREYLISTED)
    expect(page.locator("#results-chart canvas")).to_be_visible()
    expect(page.locator("#queue-chart canvas")).to_be_visible()


# -- security ------------------------------------------------------------------------------


def test_holds_are_seen_released_and_purged_and_the_policy_file_edited(
    panel: Panel, page: Page
) -> None:
    home = panel.home
    with RecordingSink("127.0.4.50") as sink:
        home.routes(f"far.test:[127.0.4.50]:{sink.port}")
        for number in range(3):
            home.inject(f"u{number}@far.test", sender="wp@hacked.test")
        home.inject("x@far.test", sender="s@spam.test")
        log_in(page, panel, path=POLICY)
        expect(page.get_by_text("No sender is on hold.")).to_be_visible()
        # Hold two senders by hand: their queued mail is held with them.
        for hold, reason in (
            ("domain:hacked.test", "hacked WordPress"),
            ("sender:s@spam.test", ""),
        ):
            page.get_by_role("textbox", name="Sender").fill(hold)
            page.get_by_role("textbox", name="Why").fill(reason)
            page.get_by_role("button", name="Hold this sender").click()
        expect(page.get_by_role("status")).to_have_text(
            "sender:s@spam.test put on hold: 1 message."
        )
        holds = page.get_by_role("region", name="Senders on hold")
        expect(holds.locator("tbody tr")).to_have_count(2)
        expect(holds).to_contain_text("hacked WordPress")
        states = home.queue_files("state")  # the mail is in new/: never claimed yet
        assert sum(1 for mid in states if home.state(mid)["held"]) == 4
        page.get_by_role("textbox", name="Sender").fill("planet:mars")
        page.get_by_role("button", name="Hold this sender").click()
        expect(page.get_by_role("alert")).to_contain_text("Not held: 'planet:mars'")
        # Release one: its mail goes; purge the other: its mail is gone.
        assert panel.call("start")["status"] == 0
        page.get_by_role("button", name="Release domain:hacked.test").click()
        expect(
            page.get_by_role("heading", name="Release the hold on domain:hacked.test?")
        ).to_be_visible()
        page.get_by_role("button", name="Release domain:hacked.test").click()
        expect(page.get_by_role("status")).to_have_text("domain:hacked.test released: 3 messages.")
        sink.wait_for_messages(3)
        page.get_by_role("button", name="Purge sender:s@spam.test").click()
        page.get_by_role("button", name="Purge sender:s@spam.test").click()
        expect(page.get_by_role("status")).to_have_text("sender:s@spam.test purged: 1 message.")
        wait_for(home.queue_empty)
        assert len(sink.received()) == 3
    # The policy file: a mistake is named at the field and nothing is saved; then it is.
    editor = page.get_by_role("textbox", name="policy.toml")
    editor.fill('[[limit]]\nname = "x"\nscope = "planet"\n')
    page.get_by_role("button", name="Save the policy").click()
    expect(page.locator("#e-policy")).to_contain_text("limit.0.scope")
    expect(editor).to_have_value('[[limit]]\nname = "x"\nscope = "planet"\n')
    assert not (home.home / "policy.toml").exists()
    assert serious_violations(page) == []
    good = '[[pacing]]\nname = "partner"\ndomains = ["partner.test"]\nconnections = 2\n'
    editor.fill(good)
    page.get_by_role("button", name="Save the policy").click()
    expect(page.get_by_role("status")).to_have_text("Sending policy saved.")
    assert (home.home / "policy.toml").read_text() == good
    expect(page.get_by_role("region", name="In force")).to_contain_text("partner.test")
    screenshot(page, "policy")
    assert serious_violations(page) == []


def test_dkim_keys_are_added_published_checked_rotated_and_deleted(
    panel: Panel, page: Page, dns_server: DNSServer
) -> None:
    store = KeyStore(panel.home.instance.dkim_dir)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    log_in(page, panel, path=DKIM)
    page.get_by_label("Domain", exact=True).fill("shop.example")
    page.get_by_label("Unix accounts that may sign").fill("alice")
    page.get_by_role("button", name="Add the key").click()
    [first] = store.of_domain("shop.example")
    expect(page.get_by_role("status")).to_have_text(
        f"Key {first.selector} added for shop.example: publish its record."
    )
    shop = page.get_by_role("region", name="shop.example", exact=True)
    value = shop.get_by_label("Value")
    expect(value).to_have_value(first.record_text)
    shop.get_by_role("button", name="Copy the value").click()
    expect(shop.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == first.record_text
    # What DNS shows, on request: missing, then published.
    shop.get_by_role("link", name=f"Check {first.selector} of shop.example in DNS").click()
    expect(shop.locator(".badge-dns-missing")).to_have_text("missing")
    dns_server.publish_dkim(first)
    page.reload()
    expect(shop.locator(".badge-dns-ok")).to_have_text("ok")
    # A rotation: the new key waits for its record; switching before it is published fails.
    shop.get_by_role("button", name="Start a rotation for shop.example").click()
    expect(page.get_by_role("status")).to_contain_text("a new key waits for its record")
    [pending] = [key for key in store.of_domain("shop.example") if key.state == "pending"]
    expect(shop).to_contain_text("signs once DNS shows its record")
    shop.get_by_role("button", name="Switch to the new key for shop.example").click()
    expect(page.get_by_role("alert")).to_contain_text("missing in DNS")
    assert [key.state for key in store.of_domain("shop.example")] == ["active", "pending"]
    dns_server.publish_dkim(pending)
    shop.get_by_role("button", name="Switch to the new key for shop.example").click()
    expect(page.get_by_role("status")).to_contain_text("signs with its new key")
    assert [key.state for key in store.of_domain("shop.example")] == ["retiring", "active"]
    expect(shop).to_contain_text("its record may be removed after")
    # Who may sign; a bad network is named and nothing changes.
    shop.get_by_label("Client networks").fill("192.0.2.0/24")
    shop.get_by_role("button", name="Save who may sign as shop.example").click()
    expect(page.get_by_role("status")).to_have_text("Who may sign as shop.example saved.")
    assert store.of_domain("shop.example")[0].origins.networks == ("192.0.2.0/24",)
    shop.get_by_label("Client networks").fill("not a network")
    shop.get_by_role("button", name="Save who may sign as shop.example").click()
    expect(page.get_by_role("alert")).to_contain_text("Not saved")
    assert store.of_domain("shop.example")[0].origins.networks == ("192.0.2.0/24",)
    screenshot(page, "dkim")
    assert serious_violations(page) == []
    # Deleting asks first.
    shop.get_by_role("button", name="Delete the keys of shop.example").click()
    expect(
        page.get_by_role("heading", name="Delete every DKIM key of shop.example?")
    ).to_be_visible()
    assert serious_violations(page) == []
    page.get_by_role("button", name="Delete the keys of shop.example").click()
    expect(page.get_by_role("status")).to_have_text("The DKIM keys of shop.example deleted.")
    assert store.of_domain("shop.example") == []


def test_the_delivery_history_finds_a_message_and_tells_its_story(panel: Panel, page: Page) -> None:
    home = panel.home
    home.write_config(history={"flush_seconds": 0.1})
    refuse = Behaviour(rcpt_reply=lambda r: "550 5.1.1 no such user" if "gone" in r else None)
    with RecordingSink("127.0.4.60", behaviour=refuse) as sink:
        home.routes(f":[127.0.4.60]:{sink.port}")
        assert panel.call("start")["status"] == 0
        home.inject("ok@far.test", "gone@far.test", sender="site@shop.test")
        sink.wait_for_messages(1)
        home.wait_for_delivery_lines(2)
        log_in(page, panel, path="/nodeworx/mail/history")
        # The events are written within a flush interval: search until they show.
        page.get_by_label("Recipient").fill("gone@far.test")
        page.get_by_role("button", name="Search").click()
        rows = page.locator("table.events tbody tr")
        for _ in range(50):
            if "failed" in rows.first.inner_text():
                break
            page.reload()
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("550 5.1.1 no such user")
        screenshot(page, "history")
        assert serious_violations(page) == []
        rows.first.get_by_role("link").click()
        expect(page.get_by_role("heading", name="Timeline")).to_be_visible()
        timeline = page.locator("ol.timeline li")
        expect(timeline.first).to_contain_text("accepted")
        expect(page.locator("ol.timeline")).to_contain_text("gone@far.test")
        expect(page.locator("ol.timeline")).to_contain_text("bounced")
        screenshot(page, "history-message")
        assert serious_violations(page) == []
        # The Activity page counts it by class and destination, linking to the searches.
        page.goto(panel_url(panel) + "/nodeworx/mail/activity")
        classes = page.locator("table.classes tbody tr")
        expect(classes).to_have_count(1)
        expect(classes.first).to_contain_text("invalid recipient")
        expect(page.locator("table.destinations tbody tr").first).to_contain_text("far.test")
        classes.first.get_by_role("link").click()
        expect(page.locator("table.events tbody tr")).to_have_count(1)
        expect(page.get_by_label("Class")).to_have_value("invalid_recipient")
    # A search that finds nothing says so; a bad one is named at its field.
    page.goto(panel_url(panel) + "/nodeworx/mail/history?recipient=nobody%40far.test")
    expect(page.locator("table.events")).to_contain_text("No event matches this search.")
    page.goto(panel_url(panel) + "/nodeworx/mail/history?sender=" + "x" * 400)
    expect(page.locator("#e-sender")).to_contain_text("at most 320 characters")
    assert serious_violations(page) == []


def test_the_suppression_list_is_added_to_searched_exported_and_emptied(
    panel: Panel, page: Page
) -> None:
    log_in(page, panel, path="/nodeworx/mail/suppression")
    expect(page.locator("table.suppressed")).to_contain_text("No address is suppressed.")
    page.get_by_label("Addresses to suppress").fill("Dead@Far.test, =gone@far.test\nnot-an-address")
    page.get_by_role("button", name="Suppress", exact=True).click()
    expect(page.get_by_role("status").or_(page.get_by_role("alert")).first).to_contain_text(
        "not-an-address"
    )  # nothing added: the form names the address at fault
    expect(page.locator("table.suppressed tbody tr")).to_have_count(1)
    page.get_by_label("Addresses to suppress").fill("Dead@Far.test, =gone@far.test")
    page.get_by_label("Note").fill("asked to stop")
    page.get_by_role("button", name="Suppress", exact=True).click()
    rows = page.locator("table.suppressed tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("asked to stop")
    screenshot(page, "suppression")
    assert serious_violations(page) == []
    page.get_by_label("Address or domain").fill("dead")
    page.get_by_role("button", name="Search").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("dead@far.test")
    page.goto(panel_url(panel) + "/nodeworx/mail/suppression?search=nobody%40far.test")
    expect(page.locator("table.suppressed")).to_contain_text("No address is suppressed that")
    page.goto(panel_url(panel) + "/nodeworx/mail/suppression")
    with page.expect_download() as download:
        page.get_by_role("link", name="Export every address as CSV").click()
    text = Path(download.value.path()).read_text()
    assert text.splitlines()[0] == "address,since,until,reason,detail,added_by"
    assert "'=gone@far.test" in text and "dead@far.test" in text  # no formula runs
    page.get_by_label("Choose dead@far.test").check()
    page.get_by_role("button", name="Take the chosen addresses off").click()
    screenshot(page, "suppression-confirm")
    assert serious_violations(page) == []
    page.get_by_role("button", name="Take them off").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("=gone@far.test")


def test_webhook_endpoints_are_added_tested_switched_and_deleted(panel: Panel, page: Page) -> None:
    home = panel.home
    panel.stop()
    home.write_config(webhooks={"allow_networks": ["127.0.0.0/8"], "priority": "normal"})
    panel.start()
    home.spawn("webhookd")
    with PythonReceiver() as receiver:
        log_in(page, panel, path="/nodeworx/mail/webhooks")
        expect(page.locator("main")).to_contain_text("No endpoint yet")
        page.get_by_label("URL").fill("http://169.254.169.254/latest/meta-data/")
        page.get_by_role("button", name="Add the endpoint").click()
        notice = page.get_by_role("status").or_(page.get_by_role("alert")).first
        expect(notice).to_contain_text("link-local")  # refused, and said why
        page.get_by_label("URL").fill(receiver.url)
        page.get_by_label("deferred").uncheck()
        page.get_by_role("button", name="Add the endpoint").click()
        expect(notice).to_contain_text("Endpoint 1 added")
        text = notice.inner_text()
        receiver.secrets.append(text.split("): ")[1].split()[0].rstrip("."))
        section = page.get_by_role("region", name="Endpoint 1")
        expect(section).not_to_contain_text("deferred")
        page.get_by_role("button", name="Send test event").click()
        expect(notice).to_contain_text("Test event delivered: 200")
        expect(section.locator("table.attempts tbody tr").first).to_contain_text("done")
        assert receiver.all_signed() and [e["event"] for e in receiver.events()] == ["test"]
        screenshot(page, "webhooks")
        assert serious_violations(page) == []
        page.get_by_role("button", name="Disable").click()
        expect(section).to_contain_text("disabled")
        expect(page.get_by_role("button", name="Send test event")).to_be_disabled()
        page.get_by_role("button", name="Delete").click()
        assert serious_violations(page) == []
        page.get_by_role("button", name="Delete the endpoint").click()
        expect(page.locator("main")).to_contain_text("No endpoint yet")


def _session_cookie(panel: Panel, page: Page) -> str:
    log_in(page, panel, path=MTA)
    [cookie] = [c for c in page.context.cookies() if c["name"] == "sendworx_session"]
    return cookie["value"]


def test_a_forged_request_from_another_origin_changes_nothing(panel: Panel, page: Page) -> None:
    assert panel.call("start")["status"] == 0
    session = _session_cookie(panel, page)
    token = page.locator('input[name="csrf"]').first.get_attribute("value")
    url = panel_url(panel) + MTA + "/service"
    form = {"csrf": token, "operation": "stop", "confirmed": "1"}
    cookie = {"Cookie": f"sendworx_session={session}"}
    evil = httpx.post(url, data=form, headers={**cookie, "Origin": "http://evil.test"})
    assert evil.status_code == 403 and "another site" in evil.text
    no_token = httpx.post(url, data={**form, "csrf": "0" * 64}, headers=cookie)
    assert no_token.status_code == 403 and "security token" in no_token.text
    assert _running(panel)
    # A real page on another origin that posts the same form. It is the same *site* (127.0.0.1,
    # another port), so SameSite=Strict lets the cookie go with it: the Origin check stops it.
    evil_port = free_port()
    body = (
        f'<form id="f" method="post" action="{url}">'
        + "".join(f'<input name="{k}" value="{v}">' for k, v in form.items())
        + '</form><script>document.getElementById("f").submit()</script>'
    ).encode()

    class EvilPage(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", evil_port), EvilPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page.goto(f"http://127.0.0.1:{evil_port}/")
        page.wait_for_url(url)
        expect(page.locator("main")).to_contain_text("came from another site")
    finally:
        server.shutdown()
    assert _running(panel)
    # The same form from the panel's own page works.
    ok = httpx.post(url, data=form, headers={**cookie, "Origin": panel_url(panel)})
    assert ok.status_code == 303
    assert not _running(panel)


def test_pages_send_the_security_headers_and_a_strict_cookie(
    panel: Panel, browser: Browser
) -> None:
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    try:
        login = page.goto(panel_url(panel, https=True) + "/login")
        assert login is not None
        headers = login.headers
        for name in SECURITY_HEADERS:
            assert name in headers, name
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["strict-transport-security"].startswith("max-age=")
        assert headers["cache-control"] == "no-store"
        page.get_by_label("E-mail address").fill(panel.email)
        page.get_by_label("Password").fill(panel.password)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", name="Outbound Mail")).to_be_visible()
        [cookie] = [c for c in context.cookies() if c["name"] == "sendworx_session"]
        assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
        statuses = {}
        for path in (MTA, QUEUE, "/nodeworx/mail/activity", "/static/app.css", "/nowhere"):
            response = page.goto(panel_url(panel, https=True) + path)
            assert response is not None
            assert all(name in response.headers for name in SECURITY_HEADERS), path
            statuses[path] = response.status
        assert statuses == {
            MTA: 200,
            QUEUE: 200,
            "/nodeworx/mail/activity": 200,
            "/static/app.css": 200,
            "/nowhere": 404,
        }
    finally:
        context.close()


def test_permissions_decide_what_a_user_sees(panel: Panel, page: Page) -> None:
    panel.add_user("cluster@sendworx.test", "CLUSTER", password="cluster password 1")
    log_in(page, panel, email="cluster@sendworx.test", password="cluster password 1", path=MTA)
    expect(page.get_by_role("heading", name="Permission denied")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("/nodeworx/mail/send requires EMAIL")
    navigation = page.get_by_role("navigation", name="Main")
    expect(navigation.get_by_role("link")).to_have_text(["Cluster"])
    response = page.goto(panel_url(panel) + QUEUE)
    assert response is not None and response.status == 403
    screenshot(page, "denied")
    assert serious_violations(page) == []
    page.goto(panel_url(panel) + "/nodeworx/cluster")
    expect(page.get_by_role("heading", name="Cluster")).to_be_visible()
    expect(page.get_by_role("button", name="Stop", exact=False)).to_have_count(0)  # no EMAIL


# -- every page: axe-core and a screenshot ----------------------------------------------------


def test_every_page_passes_axe_and_is_kept_as_a_screenshot(stuck: Panel, page: Page) -> None:
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(panel_url(stuck) + "/login")
    screenshot(page, "login")
    assert serious_violations(page) == []
    log_in(page, stuck, path=MTA)
    for path, name in (
        (MTA, "mta"),
        (QUEUE, "queue"),
        ("/nodeworx/mail/activity", "activity"),
    ):
        page.goto(panel_url(stuck) + path)
        page.wait_for_load_state("networkidle")
        screenshot(page, name)
        assert serious_violations(page) == [], name
    page.goto(panel_url(stuck) + QUEUE)
    page.locator("table.messages tbody a").first.click()
    screenshot(page, "message")
    assert serious_violations(page) == []
    page.get_by_role("button", name="Expire").click()
    screenshot(page, "confirm")
    assert serious_violations(page) == []
    # The invalid-setting state, and a phone's width.
    page.goto(panel_url(stuck) + MTA)
    page.get_by_label("Simultaneous connections").fill("-1")
    page.get_by_role("button", name="Save delivery settings").click()
    assert serious_violations(page) == []
    page.set_viewport_size({"width": 390, "height": 844})
    for path, name in ((MTA, "mta-phone"), (QUEUE, "queue-phone")):
        page.goto(panel_url(stuck) + path)
        screenshot(page, name)
        assert serious_violations(page) == [], name
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{name} scrolls sideways: {width}px"


def test_every_action_is_reachable_with_the_keyboard_alone(panel: Panel, page: Page) -> None:
    assert panel.call("start")["status"] == 0
    log_in(page, panel, path=MTA)
    page.keyboard.press("Tab")  # the skip link comes first
    expect(page.locator("a.skip")).to_be_focused()
    page.keyboard.press("Enter")
    reached = set()
    for _ in range(60):
        page.keyboard.press("Tab")
        reached.add(page.evaluate("document.activeElement.textContent.trim()"))
    assert {"Start", "Stop", "Restart", "Save delivery settings", "Save routes"} <= reached
    # Focus is visible: the focused control gets the outline.
    page.get_by_role("button", name="Stop", exact=True).focus()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Stop Outbound Mail?")).to_be_visible()
    page.keyboard.press("Enter")  # the confirmation's button has the focus
    # A graceful stop waits for the engine to exit: seconds on a loaded 2-core machine.
    expect(page.get_by_role("status")).to_have_text("Outbound Mail stopped.", timeout=20_000)
    assert not _running(panel)
