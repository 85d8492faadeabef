"""The engine looks after DKIM keys on its own: a pending key signs once DNS shows its record,
the key it replaces retires after the queue's lifetime, the records are a metric, automatic
rotation makes successors; and mail refused a signature is counted and shown, once."""

from __future__ import annotations

import time
import urllib.request

from support.dns_server import DNSServer
from support.instance import SendworxHome
from support.net import free_port, wait_for
from support.sink import Behaviour, RecordingSink

from sendworx.engine.control import query_engine
from sendworx.shared.dkim_keys import KeyStore, Origins
from sendworx.shared.queue_format import Envelope, Origin


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        return str(page.read().decode())


def _states(store: KeyStore, domain: str) -> dict[str, str]:
    return {key.selector: key.state for key in store.of_domain(domain)}


def test_a_pending_key_takes_over_once_dns_shows_it_and_the_old_one_retires(
    home: SendworxHome, dns_server: DNSServer
) -> None:
    port = free_port()
    home.write_config(metrics={"port": port}, dkim={"check_seconds": 0.2})
    home.set_control("queuelifetime", "2\n")
    store = KeyStore(home.instance.dkim_dir)
    old = store.add("shop.example", selector="old", now=time.time() - 86400)
    new = store.add("shop.example", selector="new", pending=True)
    dns_server.publish_dkim(old)
    home.start_engine()

    def record_ok(selector: str, state: str, value: int) -> bool:
        labels = f'domain="shop.example",selector="{selector}",state="{state}"'
        return f"sendworx_dkim_record_ok{{{labels}}} {value}.0" in _scrape(port)

    wait_for(lambda: record_ok("new", "pending", 0) and record_ok("old", "active", 1))
    time.sleep(0.6)  # three more checks: a missing record never activates a key
    assert _states(store, "shop.example") == {"old": "active", "new": "pending"}

    dns_server.publish_dkim(new)
    wait_for(lambda: _states(store, "shop.example") == {"old": "retiring", "new": "active"})
    [retiring] = [key for key in store.of_domain("shop.example") if key.selector == "old"]
    assert retiring.retire_after is not None
    assert retiring.retire_after - time.time() <= 2
    wait_for(lambda: _states(store, "shop.example") == {"old": "retired", "new": "active"})
    # The line is logged once the new state is written: it may follow the file by a moment.
    wait_for(lambda: "DKIM key old of shop.example retired" in home.log_text())


def test_automatic_rotation_makes_a_pending_successor_for_an_old_key(
    home: SendworxHome, dns_server: DNSServer
) -> None:
    home.write_config(dkim={"check_seconds": 0.2, "rotate_days": 30})
    store = KeyStore(home.instance.dkim_dir)
    store.add("old.example", selector="aged", now=time.time() - 31 * 86400)
    store.add("young.example", selector="fresh", now=time.time() - 29 * 86400)
    aged = time.time() - 40 * 86400  # both sign: each algorithm rotates on its own
    store.add("old.example", selector="edaged", algorithm="ed25519", pending=False, now=aged)
    home.start_engine()
    wait_for(lambda: len(store.of_domain("old.example")) == 4)
    time.sleep(0.5)  # more checks make no more successors
    keys = store.of_domain("old.example")
    pending = sorted(key.algorithm for key in keys if key.state == "pending")
    assert pending == ["ed25519", "rsa"]
    assert _states(store, "young.example") == {"fresh": "active"}
    wait_for(lambda: home.log_text().count("._domainkey.old.example TXT") == 2)


def test_mail_refused_a_signature_is_counted_once_and_shown_with_the_attempts(
    home: SendworxHome,
) -> None:
    port = free_port()
    home.write_config(metrics={"port": port})
    store = KeyStore(home.instance.dkim_dir)
    store.add("shop.example", origins=Origins(accounts=("alice",)))
    queue = home.instance.queue()
    stranger = Origin(via="smtpd", peer="192.0.2.9")
    envelope = Envelope("someone@shop.example", ("a@far.example",), time.time(), origin=stranger)
    message_id = queue.inject(envelope, b"From: someone@shop.example\r\nSubject: x\r\n\r\nhi\r\n")
    assert queue.read_envelope(message_id).dkim_refused == "shop.example"
    assert b"DKIM-Signature" not in queue.read_content(message_id)
    later = Behaviour(rcpt_reply=lambda recipient: "451 4.3.0 later")
    with RecordingSink("127.0.0.89", behaviour=later) as sink:
        home.routes(f":[127.0.0.89]:{sink.port}")
        home.start_engine()
        home.wait_for_delivery_lines(1)
        query_engine(home.instance, "retry")  # a second attempt: not counted again
        home.wait_for_delivery_lines(2)
    assert "sendworx_dkim_refused_messages_total 1.0" in _scrape(port)
    latest = query_engine(home.instance, "activity", argument=60)["latest"]
    assert [entry["reply"] for entry in latest if entry["result"] == "unsigned"] == [
        "client 192.0.2.9 may not sign as shop.example"
    ]
