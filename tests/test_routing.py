"""Where mail goes: smtproutes walk, MX order, implicit MX, null MX — against real sinks."""

from __future__ import annotations

import asyncio
import email

from support.dns_server import DNSServer
from support.instance import SendworxHome
from support.net import wait_for
from support.raw_server import RawServer
from support.sink import RecordingSink


def test_route_walk_prefers_most_specific_suffix(home: SendworxHome, sink_port: int) -> None:
    with (
        RecordingSink("127.0.0.2", sink_port) as exact,
        RecordingSink("127.0.0.3", sink_port) as suffix,
        RecordingSink("127.0.0.4", sink_port) as catch_all,
    ):
        home.routes(
            ":[127.0.0.4]",
            ".example.test:[127.0.0.3]",
            "mail.example.test:127.0.0.2",
        )
        home.start_engine()
        home.inject("a@mail.example.test", "b@deep.sub.example.test", "c@elsewhere.test")
        exact.wait_for_messages(1)
        suffix.wait_for_messages(1)
        catch_all.wait_for_messages(1)
        wait_for(home.queue_empty)
        assert exact.recipients() == ["a@mail.example.test"]
        assert suffix.recipients() == ["b@deep.sub.example.test"]
        assert catch_all.recipients() == ["c@elsewhere.test"]


def test_suffix_route_does_not_match_the_bare_domain(
    home: SendworxHome, dns_server: DNSServer, sink_port: int
) -> None:
    dns_server.mx("example.test", (10, "mx.example.test", "127.0.0.5"))
    with (
        RecordingSink("127.0.0.3", sink_port) as suffix,
        RecordingSink("127.0.0.5", sink_port) as mx,
    ):
        home.routes(".example.test:[127.0.0.3]")
        home.start_engine()
        home.inject("a@example.test")
        mx.wait_for_messages(1)
        assert suffix.received() == []


def test_exact_route_with_empty_relay_uses_mx_instead_of_catch_all(
    home: SendworxHome, dns_server: DNSServer, sink_port: int
) -> None:
    dns_server.mx("direct.test", (10, "mx.direct.test", "127.0.0.6"))
    with (
        RecordingSink("127.0.0.6", sink_port) as mx,
        RecordingSink("127.0.0.4", sink_port) as catch_all,
    ):
        home.routes(":[127.0.0.4]", "direct.test:")
        home.start_engine()
        home.inject("someone@DIRECT.test")
        mx.wait_for_messages(1)
        assert catch_all.received() == []


def test_relay_with_port_and_hostname_resolved_by_address_records_only(
    home: SendworxHome, dns_server: DNSServer
) -> None:
    # The relay name also has an MX pointing elsewhere: routes must never follow it.
    dns_server.add("relay.test", "A", "127.0.0.7")
    dns_server.add("relay.test", "MX", "10 wrong.test.")
    with RecordingSink("127.0.0.7") as relay:
        home.routes(f"routed.test:relay.test:{relay.port}")
        home.start_engine()
        home.inject("x@routed.test")
        assert relay.wait_for_messages(1)[0].recipients == ("x@routed.test",)
    assert ("wrong.test.", "A") not in dns_server.queries


def test_mx_hosts_are_tried_in_preference_order(
    home: SendworxHome, dns_server: DNSServer, sink_port: int
) -> None:
    dns_server.mx(
        "pref.test", (20, "backup.pref.test", "127.0.0.9"), (10, "primary.pref.test", "127.0.0.8")
    )
    with (
        RecordingSink("127.0.0.8", sink_port) as primary,
        RecordingSink("127.0.0.9", sink_port) as backup,
    ):
        home.start_engine()
        for number in range(5):
            home.inject(f"u{number}@pref.test")
        primary.wait_for_messages(5)
        wait_for(home.queue_empty)
        assert backup.received() == []


def test_next_mx_is_used_when_the_first_refuses_connections(
    home: SendworxHome, dns_server: DNSServer, sink_port: int
) -> None:
    dns_server.mx(
        "fallback.test",
        (10, "dead.fallback.test", "127.0.0.10"),  # nothing listens there
        (20, "alive.fallback.test", "127.0.0.11"),
    )
    with RecordingSink("127.0.0.11", sink_port) as alive:
        home.start_engine()
        home.inject("u@fallback.test")
        alive.wait_for_messages(1)
    assert home.wait_for_delivery_lines(1)[0]["relay"].startswith("alive.fallback.test[")


def test_next_mx_is_used_after_a_421_greeting(
    home: SendworxHome, dns_server: DNSServer, sink_port: int
) -> None:
    dns_server.mx(
        "busy.test", (10, "busy.busy.test", "127.0.0.12"), (20, "ok.busy.test", "127.0.0.13")
    )

    async def too_busy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"421 4.3.2 too busy, go away\r\n")
        await writer.drain()

    with (
        RawServer(too_busy, "127.0.0.12", sink_port) as busy,
        RecordingSink("127.0.0.13", sink_port) as ok,
    ):
        home.start_engine()
        home.inject("u@busy.test")
        ok.wait_for_messages(1)
    assert busy.connections == 1


def test_domain_without_mx_gets_mail_at_its_own_address(
    home: SendworxHome, dns_server: DNSServer, sink_port: int
) -> None:
    dns_server.add("implicit.test", "A", "127.0.0.14")
    with RecordingSink("127.0.0.14", sink_port) as sink:
        home.start_engine()
        home.inject("u@implicit.test")
        sink.wait_for_messages(1)


def test_null_mx_bounces_at_once_without_connecting(
    home: SendworxHome, dns_server: DNSServer, sink_port: int
) -> None:
    dns_server.add("nomail.test", "MX", "0 .")
    dns_server.mx("origin.test", (10, "mx.origin.test", "127.0.0.15"))
    with RecordingSink("127.0.0.15", sink_port) as origin:
        home.start_engine()
        home.inject("u@nomail.test", sender="author@origin.test")
        bounce = origin.wait_for_messages(1)[0]
    assert bounce.mail_from == ""
    assert bounce.recipients == ("author@origin.test",)
    report = email.message_from_bytes(bounce.content)
    assert report.get_content_type() == "multipart/report"
    assert "null MX" in bounce.content.decode()
    assert "5.1.10" in bounce.content.decode()


def test_nonexistent_domain_bounces_with_5_1_2(
    home: SendworxHome, dns_server: DNSServer, sink_port: int
) -> None:
    dns_server.add("origin.test", "A", "127.0.0.15")
    with RecordingSink("127.0.0.15", sink_port) as origin:
        home.start_engine()
        home.inject("u@no-such-domain.test", sender="author@origin.test")
        bounce = origin.wait_for_messages(1)[0]
    assert "Status: 5.1.2" in bounce.content.decode()


def test_routes_are_matched_case_insensitively(home: SendworxHome) -> None:
    with RecordingSink("127.0.0.16") as sink:
        home.routes(f"MiXeD.TeSt:[127.0.0.16]:{sink.port}")
        home.start_engine()
        home.inject("u@mixed.TEST")
        sink.wait_for_messages(1)
