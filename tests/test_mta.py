"""/nodeworx/mail/mta: the bounce and general settings, written as qmail control files and used
by the engine, the listener and sendmail at once."""

from __future__ import annotations

import email
import smtplib

from support.net import wait_for
from support.panel import Panel, control_file
from support.sink import Behaviour, RecordingSink

MTA = "/nodeworx/mail/mta"


def _mta(panel: Panel, action: str, data: object = None) -> dict[str, object]:
    reply: dict[str, object] = panel.call(action, data, controller=MTA)
    return reply


def test_the_queries_answer_strings_with_their_defaults(panel: Panel) -> None:
    bounce = _mta(panel, "queryUpdateBounce")
    assert bounce == {
        "status": 0,
        "reply_code": 205,
        "payload": {
            "bounce_from": "MAILER-DAEMON",
            "bounce_host": "sendworx.test",
            "double_bounce_messages": "1",
            "double_bounce_to": "postmaster",
            "double_bounce_host": "sendworx.test",
            "cascade_to_nodes": "0",
        },
    }
    general = _mta(panel, "queryUpdateGeneral")["payload"]
    assert general == {
        "mailserver_hostname": "sendworx.test",
        "default_domain": "sendworx.test",
        "cascade_to_nodes": "0",
    }


def test_updates_write_the_control_files_qmail_reads(panel: Panel) -> None:
    reply = _mta(
        panel,
        "updateBounce",
        {
            "bounce_from": "bounces",
            "bounce_host": "Mail.Example.TEST",
            "double_bounce_to": "hostmaster",
            "double_bounce_host": "example.test",
            "double_bounce_messages": "1",
            "perms": "ignored, as billing modules send it",
        },
    )
    assert reply["status"] == 0 and reply["payload"] == "Bounce settings updated"
    assert _mta(panel, "updateGeneral", {"mailserver_hostname": "mx1.example.test"})["status"] == 0
    home = panel.home
    assert control_file(home, "bouncefrom") == "bounces\n"
    assert control_file(home, "bouncehost") == "mail.example.test\n"
    assert control_file(home, "doublebounceto") == "hostmaster\n"
    assert control_file(home, "doublebouncehost") == "example.test\n"
    assert control_file(home, "me") == "mx1.example.test\n"
    assert control_file(home, "defaultdomain") is None  # not given: still the default (me)
    general = _mta(panel, "queryUpdateGeneral")["payload"]
    assert general == {
        "mailserver_hostname": "mx1.example.test",
        "default_domain": "mx1.example.test",
        "cascade_to_nodes": "0",
    }
    assert _mta(panel, "updateBounce", {"double_bounce_messages": 0})["status"] == 0
    assert control_file(home, "doublebounceto") == "\n"  # qmail: empty means "drop them"
    bounce = _mta(panel, "queryUpdateBounce")["payload"]
    assert isinstance(bounce, dict)
    assert (bounce["double_bounce_messages"], bounce["double_bounce_to"]) == ("0", "")
    assert _mta(panel, "updateBounce", {"double_bounce_messages": 1})["status"] == 0
    assert control_file(home, "doublebounceto") is None  # back on: the default recipient


def test_bad_values_name_every_field_and_change_no_file(panel: Panel) -> None:
    _mta(panel, "updateBounce", {"bounce_from": "bounces"})
    before = {name: control_file(panel.home, name) for name in ("bouncefrom", "bouncehost", "me")}
    reply = _mta(
        panel,
        "updateBounce",
        {
            "bounce_from": "bad sender\r\n",
            "bounce_host": "not a host!",
            "double_bounce_messages": "yes",
            "double_bounce_to": "a@b@c",
            "double_bounce_host": ["x"],
        },
    )
    assert reply["status"] == 11
    payload = str(reply["payload"]).split("\n")
    assert payload[0] == "There was a problem validating the form. Please see details below."
    assert sorted(line.split(":")[0] for line in payload[1:]) == [
        "bounce_from",
        "bounce_host",
        "double_bounce_host",
        "double_bounce_messages",
        "double_bounce_to",
    ]
    reply = _mta(
        panel, "updateGeneral", {"mailserver_hostname": "\u2603.test", "default_domain": 5}
    )
    assert reply["status"] == 11 and str(reply["payload"]).count("\n") == 2
    assert before == {name: control_file(panel.home, name) for name in before}


def test_inbound_actions_say_they_are_not_supported(panel: Panel) -> None:
    for action in ("enableLocalDelivery", "disableLocalDelivery", "updateRrd"):
        reply = _mta(panel, action)
        assert reply["status"] == 1 and "not supported by sendworx" in str(reply["payload"])


def test_the_engine_bounces_and_greets_with_the_names_set(panel: Panel) -> None:
    home = panel.home
    reject = Behaviour(rcpt_reply=lambda recipient: "550 5.1.1 no such user")
    with (
        RecordingSink("127.0.3.10", behaviour=reject) as remote,
        RecordingSink("127.0.3.11") as origin,
    ):
        home.routes(
            f"remote.test:[127.0.3.10]:{remote.port}", f"origin.test:[127.0.3.11]:{origin.port}"
        )
        _mta(panel, "updateGeneral", {"mailserver_hostname": "mx9.example.test"})
        _mta(panel, "updateBounce", {"bounce_from": "returns", "bounce_host": "b.example.test"})
        assert panel.call("start")["status"] == 0
        home.inject("u@remote.test", sender="author@origin.test")
        [bounce] = origin.wait_for_messages(1)
    report = email.message_from_bytes(bounce.content)
    assert report["From"] == "Mail Delivery System <returns@b.example.test>"
    assert "Reporting-MTA: dns; mx9.example.test" in bounce.content.decode()
    assert bounce.helo == "mx9.example.test"


def test_double_bounces_can_be_switched_off(panel: Panel) -> None:
    home = panel.home
    reject = Behaviour(rcpt_reply=lambda recipient: "550 5.7.1 go away")
    with RecordingSink("127.0.3.12", behaviour=reject) as everywhere:
        home.routes(f":[127.0.3.12]:{everywhere.port}")
        _mta(panel, "updateBounce", {"double_bounce_messages": 0})
        assert panel.call("start")["status"] == 0
        result = home.sendmail("-f", "", "x@remote.test", message=b"Subject: a bounce\n\nhi\n")
        assert result.returncode == 0
        wait_for(home.queue_empty)
    assert "double bounces are switched off" in home.log_text()
    assert everywhere.received() == []


def test_sendmail_and_smtpd_use_the_default_domain_and_me(panel: Panel) -> None:
    home = panel.home
    smtpd = home.start_smtpd()
    _mta(panel, "updateGeneral", {"mailserver_hostname": "me.test", "default_domain": "users.test"})
    result = home.sendmail("someone", message=b"Subject: bare\n\nhi\n")
    assert result.returncode == 0
    [queued] = home.queue_files("new")
    content = (home.home / "queue" / "new" / queued).read_bytes()
    assert b'"someone@users.test"' in content.split(b"\n")[1]  # the envelope line
    assert b"Message-ID: <" in content and b"@me.test>" in content

    # The listener rereads `me` on the SIGHUP the update sent it (each worker, as it gets it).
    def greets_as_me() -> bool:
        with smtplib.SMTP("127.0.0.1", home.smtpd_port, timeout=10) as client:
            return client.ehlo("client.test")[1].split(b"\n")[0] == b"me.test"

    wait_for(lambda: all(greets_as_me() for _ in range(4)), timeout=10)
    assert home.stop(smtpd) == 0
