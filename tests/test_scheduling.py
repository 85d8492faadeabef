"""Who gets the connection slots, and how fast mail may go: the delivery pool against real
sinks (aiosmtpd on loopback) and a real DNS server, observed at the sinks."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable

from support.dns_server import DNSServer
from support.instance import SendworxHome
from support.net import free_port
from support.panel import Panel
from support.sink import Behaviour, Received, RecordingSink

from sendworx.engine.attempts import Outcome, RecipientResult
from sendworx.engine.delivery import DeliveryPool
from sendworx.engine.delivery_job import DeliveryJob
from sendworx.engine.resolver import DestinationResolver
from sendworx.shared.config import DeliveryConfig, ResolverConfig
from sendworx.shared.destinations import Destination, MxDomain, RelayHost
from sendworx.shared.policy import PacingRule, Policy
from sendworx.shared.routes import Relay
from sendworx.shared.settings import Settings

Results = dict[str, list[RecipientResult]]


def _pool(
    limit: int,
    *,
    per_destination: int = 5,
    idle: float = 0.2,
    policy: Policy | None = None,
    dns_port: int = 53,
    remote_port: int = 25,
) -> DeliveryPool:
    return DeliveryPool(
        resolver=DestinationResolver(
            ResolverConfig(nameservers=["127.0.0.1"], port=dns_port, timeout_seconds=2),
            remote_port,
        ),
        limit=limit,
        helo_name=lambda: "pool.test",
        config=DeliveryConfig(
            destination_concurrency=per_destination, idle_connection_seconds=idle
        ),
        settings=Settings,
        policy=lambda: policy or Policy(),
        tls_context=None,
    )


def _relay(sink: RecordingSink) -> RelayHost:
    return RelayHost(Relay(sink.host, sink.port, True))


def _submit(
    pool: DeliveryPool, key: Destination, ids: Iterable[str], results: Results, domain: str
) -> None:
    def record(job: DeliveryJob, outcome: list[RecipientResult]) -> None:
        results[job.message_id] = outcome

    for message_id in ids:
        job = DeliveryJob(
            message_id,
            "s@o.test",
            [f"{message_id}@{domain}"],
            lambda: b"Subject: x\r\n\r\nx\r\n",
            record,
        )
        pool.submit(key, job)


async def _until(predicate: Callable[[], bool], seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110 (the sinks live in other threads)
            await asyncio.sleep(0.01)


def test_a_small_destination_is_served_within_a_round_trip_not_after_a_large_backlog() -> None:
    """Global cap 2, each destination may hold 5: the large one takes both slots first, the
    small one gets the next slot a message of the large one frees."""
    results: Results = {}
    slow = Behaviour(data_delay=0.05)

    async def scenario(large: RecordingSink, small: RecordingSink) -> float:
        pool = _pool(2)
        async with pool.running():
            _submit(pool, _relay(large), (f"l{n}" for n in range(1000)), results, "large.test")
            await _until(lambda: large.stats.open_now == 2, 5)
            submitted = time.monotonic()
            _submit(pool, _relay(small), ["s0"], results, "small.test")
            await _until(lambda: "s0" in results, 5)
            waited = time.monotonic() - submitted
        return waited

    with (
        RecordingSink("127.0.0.111", behaviour=slow) as large,
        RecordingSink("127.0.0.112") as small,
    ):
        waited = asyncio.run(scenario(large, small))
        delivered_large = len(large.received())
    assert results["s0"][0].outcome is Outcome.DELIVERED
    # One message of the large destination (50 ms) plus a connection: far from 25 s.
    assert waited < 1.0, waited
    assert delivered_large < 100
    assert large.stats.most_open == 2


def test_a_destination_out_of_mail_gives_its_slot_to_one_waiting_at_once() -> None:
    """Its idle connection would wait 10 s for more mail; a destination waiting for a slot
    takes it over at once, and the cap of 2 open connections holds throughout."""
    results: Results = {}

    async def scenario(a: RecordingSink, b: RecordingSink) -> tuple[int, float]:
        pool = _pool(2, idle=10.0)
        async with pool.running():
            _submit(pool, _relay(a), ["a0"], results, "a.test")
            _submit(pool, _relay(b), (f"b{n}" for n in range(40)), results, "b.test")
            await _until(lambda: "a0" in results, 5)
            done_a = time.monotonic()
            await _until(lambda: a.stats.open_now == 0, 5)
            closed_after = time.monotonic() - done_a
            await _until(lambda: b.stats.open_now == 2, 5)
            both = a.stats.most_open + b.stats.most_open
            await _until(lambda: len(results) == 41, 20)
        return both, closed_after

    with (
        RecordingSink("127.0.0.113") as a,
        RecordingSink("127.0.0.114", behaviour=Behaviour(data_delay=0.1)) as b,
    ):
        most_open, closed_after = asyncio.run(scenario(a, b))
    assert closed_after < 1.0, closed_after
    assert b.stats.most_open == 2 and most_open <= 3  # a's one, then b's two: never 3 at once
    assert all(result[0].outcome is Outcome.DELIVERED for result in results.values())


def test_balanced_destinations_split_the_slots_evenly_and_keep_their_connections() -> None:
    """Four destinations with the same backlog, 8 slots: two connections each, reused (no
    churn between balanced destinations)."""
    results: Results = {}
    slow = Behaviour(data_delay=0.05)

    async def scenario(sinks: list[RecordingSink]) -> list[list[int]]:
        pool = _pool(8, per_destination=20)
        seen: list[list[int]] = []
        async with pool.running():
            for index, sink in enumerate(sinks):
                ids = (f"d{index}-{n}" for n in range(40))
                _submit(pool, _relay(sink), ids, results, f"d{index}.test")
            while len(results) < 100:  # while every destination still has a backlog
                seen.append([sink.stats.open_now for sink in sinks])
                await asyncio.sleep(0.05)
            await _until(lambda: len(results) == 160, 20)
        return [list(column) for column in zip(*seen, strict=True)]

    sinks = [RecordingSink(f"127.0.0.{115 + n}", behaviour=slow) for n in range(4)]
    for sink in sinks:
        sink.__enter__()
    try:
        samples = asyncio.run(scenario(sinks))
    finally:
        for sink in sinks:
            sink.__exit__()
    # Each sink sees 2 connections nearly all the time; at most a third for a moment (the
    # first lane whose hosts are known takes free slots until the others are, and a sink
    # may count a closing connection beside its successor).
    assert [statistics.mode(column) for column in samples] == [2, 2, 2, 2], samples
    assert all(max(column) <= 3 for column in samples), samples
    assert all(sink.stats.connections <= 4 for sink in sinks), [s.stats.connections for s in sinks]
    assert sum(len(sink.received()) for sink in sinks) == 160


def test_an_mx_rule_gives_every_domain_it_matches_one_budget() -> None:
    """Two domains whose MX hosts match *.bigmail.test share the rule's 1 connection, and its
    messages_per_connection closes that connection every 3 messages."""
    results: Results = {}
    rule = PacingRule(name="bigmail", mx=["*.bigmail.test"], connections=1,
                      messages_per_connection=3)  # fmt: skip
    port = free_port("127.0.0.120")

    async def scenario(dns: DNSServer) -> int:
        pool = _pool(10, policy=Policy(pacing=[rule]), dns_port=dns.port, remote_port=port)
        most_open = 0
        async with pool.running():
            _submit(pool, MxDomain("one.test"), (f"o{n}" for n in range(6)), results, "one.test")
            _submit(pool, MxDomain("two.test"), (f"t{n}" for n in range(6)), results, "two.test")
            while len(results) < 12:
                for pace in pool.status():
                    assert pace["name"] == "bigmail"
                    most_open = max(most_open, int(pace["open"]))  # type: ignore[call-overload]
                await asyncio.sleep(0.005)
        return most_open

    with DNSServer() as dns, RecordingSink("127.0.0.120", port) as sink:
        dns.mx("one.test", (10, "mx1.bigmail.test", "127.0.0.120"))
        dns.mx("two.test", (10, "mx2.bigmail.test", "127.0.0.120"))
        most_open = asyncio.run(scenario(dns))
        # The sink may see the next connection a moment before the last one's close.
        assert most_open == 1 and sink.stats.most_open <= 2
        assert sink.stats.connections == 4  # 12 messages, 3 per connection
    assert all(result[0].outcome is Outcome.DELIVERED for result in results.values())


def test_a_rate_rule_spaces_messages_and_other_destinations_flow_at_full_speed() -> None:
    """120 a minute is one message every 0.5 s to the paced destination, while 50 messages
    to another destination are not held behind it."""
    results: Results = {}
    paced_at: list[float] = []
    rule = PacingRule(name="slowpoke", domains=["127.0.0.121"], messages_per_minute=120)

    def stamp(message: Received) -> None:
        paced_at.append(time.monotonic())
        return None

    async def scenario(paced: RecordingSink, free: RecordingSink) -> float:
        pool = _pool(10, policy=Policy(pacing=[rule]))
        async with pool.running():
            started = time.monotonic()
            _submit(pool, _relay(paced), (f"p{n}" for n in range(6)), results, "paced.test")
            _submit(pool, _relay(free), (f"f{n}" for n in range(50)), results, "free.test")
            await _until(lambda: sum(1 for k in results if k[0] == "f") == 50, 10)
            free_done = time.monotonic() - started
            await _until(lambda: len(results) == 56, 10)
        return free_done

    with RecordingSink("127.0.0.121", behaviour=Behaviour(data_reply=stamp)) as paced, \
            RecordingSink("127.0.0.122") as free:  # fmt: skip
        free_done = asyncio.run(scenario(paced, free))
    gaps = [later - earlier for earlier, later in itertools.pairwise(paced_at)]
    assert len(gaps) == 5 and all(0.4 < gap < 0.8 for gap in gaps), gaps
    assert free_done < 1.5, free_done
    assert all(result[0].outcome is Outcome.DELIVERED for result in results.values())


def test_a_receiver_that_says_slow_down_gets_less_and_every_message_still_arrives() -> None:
    """The sink takes 5 messages, then refuses two with 450 "rate limited" (as a receiver
    whose budget ran out). The pool halves its rate, requeues what was refused and delivers
    everything, without deferring any of it."""
    results: Results = {}
    taken = 0
    refused = 0

    def limit(message: Received) -> str | None:
        nonlocal taken, refused
        if taken >= 5 and refused < 2:
            refused += 1
            return "450 4.7.28 rate limited, try again later"
        taken += 1
        return None

    async def scenario(sink: RecordingSink) -> list[dict[str, object]]:
        pool = _pool(4)
        async with pool.running():
            _submit(pool, _relay(sink), (f"m{n}" for n in range(8)), results, "rl.test")
            await _until(lambda: len(results) == 8, 30)
            return pool.status()

    with RecordingSink("127.0.0.123", behaviour=Behaviour(data_reply=limit)) as sink:
        status = asyncio.run(scenario(sink))
        assert len(sink.received()) == 8
    assert refused == 2
    assert all(result[0].outcome is Outcome.DELIVERED for result in results.values())
    [pace] = status
    assert isinstance(pace["backoffs"], int) and pace["backoffs"] >= 1
    assert isinstance(pace["rate_per_minute"], float)


def test_the_engine_paces_by_its_policy_file_and_the_summary_shows_the_cut(panel: Panel) -> None:
    """A real engine with policy.toml: the sink says "rate limited" to the first message;
    every message arrives, nothing is deferred, and querySummary (and the engine's status)
    show the pace with its cut rate."""
    home = panel.home
    refusals = 1

    def limited(message: Received) -> str | None:
        nonlocal refusals
        if refusals > 0:
            refusals -= 1
            return "450 4.7.28 rate limited, slow down"
        return None

    (home.home / "policy.toml").write_text(
        '[[pacing]]\nname = "partner"\ndomains = ["127.0.6.1"]\nconnections = 2\n'
    )
    with RecordingSink("127.0.6.1", behaviour=Behaviour(data_reply=limited)) as sink:
        home.routes(f"partner.test:[127.0.6.1]:{sink.port}")
        for number in range(4):
            home.inject(f"u{number}@partner.test")
        assert panel.call("start")["status"] == 0
        sink.wait_for_messages(4, timeout=30)
        reply = panel.call("querySummary", controller="/nodeworx/mail/queue")
        shown = subprocess.run(
            home.command("queue", "summary"), capture_output=True, text=True, timeout=30
        )
    assert [line["result"] for line in home.deliveries()] == ["delivered"] * 4
    [pace] = reply["payload"]["pacing"]
    assert pace["name"] == "partner" and pace["backoffs"] >= 1
    assert pace["rate_per_minute"] is not None and pace["configured_rate_per_minute"] is None
    # `sendworx queue summary` shows the same pace: name, open, rate now, configured, backoffs.
    [line] = [line for line in shown.stdout.splitlines() if line.startswith("partner ")]
    _, _, rate_now, configured, backoffs = line.split()
    assert rate_now == f"{pace['rate_per_minute']:.0f}/min" and configured == "-"
    assert backoffs == str(pace["backoffs"]), shown.stdout


def test_an_unusable_policy_file_stops_the_engine_with_every_problem_named(
    home: SendworxHome,
) -> None:
    (home.home / "policy.toml").write_text(
        '[[pacing]]\nname = "a"\nconnections = 0\n[[pacing]]\nname = "b"\nmx = ["x*y"]\n'
    )
    started = subprocess.run(home.command("send"), capture_output=True, text=True, timeout=30)
    assert started.returncode == 78
    assert "pacing.0.connections" in started.stderr and "pacing.1.mx" in started.stderr


def test_a_reloaded_policy_moves_destinations_to_new_paces_without_losing_count() -> None:
    """A destination's sessions count against the pace they started under, even when a
    reload gives the destination another: every pace is back at 0 open afterwards."""
    results: Results = {}
    policies = [Policy(pacing=[PacingRule(name="before", domains=["127.0.0.124"])])]

    async def scenario(sink: RecordingSink) -> list[dict[str, object]]:
        pool = DeliveryPool(
            resolver=DestinationResolver(ResolverConfig(nameservers=["127.0.0.1"]), 25),
            limit=4,
            helo_name=lambda: "pool.test",
            config=DeliveryConfig(destination_concurrency=4, idle_connection_seconds=0.1),
            settings=Settings,
            policy=lambda: policies[-1],
            tls_context=None,
        )
        async with pool.running():
            _submit(pool, _relay(sink), (f"m{n}" for n in range(20)), results, "r.test")
            await _until(lambda: sink.stats.open_now >= 2, 5)
            policies.append(Policy(pacing=[PacingRule(name="after", domains=["127.0.0.124"])]))
            pool.reconfigure()
            _submit(pool, _relay(sink), (f"n{n}" for n in range(20)), results, "r.test")
            await _until(lambda: len(results) == 40, 20)
            await _until(lambda: not pool.status(), 5)  # no pace with a connection open
            return pool.status()

    with RecordingSink("127.0.0.124", behaviour=Behaviour(data_delay=0.05)) as sink:
        assert asyncio.run(scenario(sink)) == []
    assert all(result[0].outcome is Outcome.DELIVERED for result in results.values())


def test_the_gap_between_connections_holds_across_destinations_of_one_pace() -> None:
    """Two destinations share a rule with 0.5 s between new connections: the second one
    connects half a second after the first, even though both asked at the same moment."""
    results: Results = {}
    rule = PacingRule(
        name="spaced",
        domains=["127.0.0.125", "127.0.0.126"],
        connections=2,
        connection_interval_seconds=0.5,
    )
    connected: list[float] = []

    def stamp(message: Received) -> None:
        connected.append(time.monotonic())
        return None

    async def scenario(first: RecordingSink, second: RecordingSink) -> None:
        pool = _pool(4, policy=Policy(pacing=[rule]))
        async with pool.running():
            _submit(pool, _relay(first), ["a0"], results, "a.test")
            _submit(pool, _relay(second), ["b0"], results, "b.test")
            await _until(lambda: len(results) == 2, 10)

    stamping = Behaviour(data_reply=stamp)
    with (
        RecordingSink("127.0.0.125", behaviour=stamping) as first,
        RecordingSink("127.0.0.126", behaviour=stamping) as second,
    ):
        asyncio.run(scenario(first, second))
    assert len(connected) == 2 and connected[1] - connected[0] >= 0.45, connected
    assert all(result[0].outcome is Outcome.DELIVERED for result in results.values())
