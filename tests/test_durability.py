"""Nothing lost: every acknowledged message reaches the remote side through repeated kill -9
of the engine and of the injectors; a duplicate only where a delivery was in flight. The
messages vary in size, so that files the engine has finished with are written over by longer
and shorter ones (`Queue.retire`): each arrives exactly as it was sent."""

from __future__ import annotations

import random
import re
import smtplib
import subprocess
import threading
import time
from collections import Counter, defaultdict

from support.instance import SendworxHome
from support.net import wait_for
from support.sink import RecordingSink

TOKEN = re.compile(rb"token-(\d+-\d+)")
QUEUE_ID = re.compile(rb"with E?SMTP id ([0-9a-f]+);|Message-ID: <([0-9a-f]+)@sendworx\.test>")


def padding(rng: random.Random) -> str:
    """Lines of filler, from none to a few kilobytes."""
    return "filler\r\n" * rng.choice([0, 1, rng.randrange(600)])


class Injectors:
    """Two injection paths running concurrently; records which tokens were acknowledged."""

    def __init__(self, home: SendworxHome) -> None:
        self.home = home
        self.acknowledged: set[str] = set()
        self.killed_sendmails = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._smtp, args=(worker,), daemon=True) for worker in (1, 2)
        ] + [threading.Thread(target=self._sendmail, daemon=True)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _smtp(self, worker: int) -> None:
        number = 0
        rng = random.Random(worker)
        while not self.stop.is_set():
            number += 1
            token = f"{worker}-{number}"
            message = f"Subject: token-{token}\r\n\r\nbody token-{token}\r\n{padding(rng)}"
            try:
                with smtplib.SMTP("127.0.0.1", self.home.smtpd_port, timeout=5) as client:
                    client.sendmail("sender@origin.test", [f"r{number}@far.test"], message)
            except (OSError, smtplib.SMTPException):
                time.sleep(0.02)  # smtpd is being killed; this one was never acknowledged
                continue
            with self.lock:
                self.acknowledged.add(token)

    def _sendmail(self) -> None:
        number = 0
        rng = random.Random(7)
        while not self.stop.is_set():
            number += 1
            token = f"9-{number}"
            process = subprocess.Popen(
                self.home.command("sendmail", "-f", "s@origin.test", f"m{number}@far.test"),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            assert process.stdin is not None
            body = f"Subject: token-{token}\n\nbody token-{token}\n{padding(rng)}"
            process.stdin.write(body.replace("\r\n", "\n").encode())
            process.stdin.close()
            if rng.random() < 0.3:
                time.sleep(rng.uniform(0.05, 0.4))
                process.kill()
                self.killed_sendmails += 1
            if process.wait(30) == 0:
                with self.lock:
                    self.acknowledged.add(token)


def test_acknowledged_mail_survives_kill_9_of_engine_and_injectors(home: SendworxHome) -> None:
    rng = random.Random(1234)
    with RecordingSink("127.0.0.70") as sink:
        home.routes(f":[127.0.0.70]:{sink.port}")
        smtpd = home.start_smtpd()
        engine = home.start_engine()
        injectors = Injectors(home)
        injectors.start()
        engine_kills: list[float] = []
        for round_number in range(1, 13):
            time.sleep(rng.uniform(0.1, 0.5))
            home.kill(engine)
            engine_kills.append(time.time())
            if round_number % 2 == 0:
                home.kill(smtpd)
                smtpd = home.start_smtpd()
            engine = home.start_engine()
        injectors.join()
        wait_for(home.queue_empty, timeout=60)
        received = sink.received()

    assert injectors.killed_sendmails >= 1
    assert len(injectors.acknowledged) >= 100
    receipts: dict[str, list[float]] = defaultdict(list)
    queue_ids: dict[str, str] = {}
    for message in received:
        tokens = set(TOKEN.findall(message.content))
        assert len(tokens) == 1, message.content[:200]  # nothing of another message in it
        token = tokens.pop().decode()
        assert message.content.rstrip().endswith(b"filler") or message.content.rstrip().endswith(
            f"body token-{token}".encode()
        )
        receipts[token].append(message.at)
        id_match = QUEUE_ID.search(message.content)
        assert id_match
        queue_ids[token] = (id_match.group(1) or id_match.group(2)).decode()

    lost = injectors.acknowledged - set(receipts)
    assert not lost, f"{len(lost)} acknowledged messages never arrived: {sorted(lost)[:10]}"

    recorded = Counter(line["id"] for line in home.deliveries() if line["result"] == "delivered")
    for token, times in receipts.items():
        if len(times) == 1:
            continue
        # A repeat is allowed only if the engine died between a receipt and its record.
        first, last = min(times), max(times)
        assert any(first - 0.05 <= kill <= last for kill in engine_kills), token
        assert recorded[queue_ids[token]] < len(times), token
    leftovers = [name for folder in ("new", "mess", "state") for name in home.queue_files(folder)]
    assert leftovers == []
