"""A webhook receiver for the benchmarks: asyncio (uvloop) and httptools, answering 204 to
each POST after checking its signature (HMAC-SHA256 of `t.body`, as docs/api.md shows), run
as a process of its own. On SIGTERM it writes what it saw to a JSON file: requests, events
(ids), duplicates, bad signatures, and per second how many arrived.

usage: python3 bench/webhook_receiver.py HOST PORT SECRET REPORT [--delay SECONDS] [--idle]

--idle runs it SCHED_IDLE: it stands for a receiver on another machine, whose CPU is not the
relay's (the benchmark reports both ways).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import sys
import time
from collections import Counter

import httptools
import uvloop


class Receiver:
    def __init__(self, secret: bytes, delay: float) -> None:
        self.secret = secret
        self.delay = delay
        self.requests = 0
        self.bad = 0
        self.ids: set[bytes] = set()
        self.duplicates = 0
        self.per_second: Counter[int] = Counter()
        self.first = 0.0
        self.last = 0.0

    def seen(self, header: bytes, body: bytes) -> bool:
        now = time.time()
        self.requests += 1
        self.first = self.first or now
        self.last = now
        self.per_second[int(now)] += 1
        stamp, signatures = b"", []
        for part in header.split(b","):
            key, _, value = part.partition(b"=")
            if key == b"t":
                stamp = value
            elif key == b"v1":
                signatures.append(value)
        expected = hmac.new(self.secret, stamp + b"." + body, hashlib.sha256).hexdigest().encode()
        if not stamp or not any(hmac.compare_digest(expected, s) for s in signatures):
            self.bad += 1
            return False
        start = body.find(b'"id":"') + 6
        event_id = body[start : body.find(b'"', start)]
        if event_id in self.ids:
            self.duplicates += 1
        self.ids.add(event_id)
        return True

    def report(self) -> dict[str, object]:
        busy = sorted(self.per_second.values())
        return {
            "requests": self.requests,
            "events": len(self.ids),
            "duplicates": self.duplicates,
            "bad_signatures": self.bad,
            "first": self.first,
            "last": self.last,
            "per_second": {str(k): v for k, v in sorted(self.per_second.items())},
            "median_per_busy_second": busy[len(busy) // 2] if busy else 0,
        }


class Connection(asyncio.Protocol):
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.BaseTransport | None = None
        self.signature = b""
        self.body = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()  # type: ignore[union-attr]

    def on_message_begin(self) -> None:
        self.signature, self.body = b"", bytearray()

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"sendworx-signature":
            self.signature = value

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        good = self.receiver.seen(self.signature, bytes(self.body))
        reply = (
            b"HTTP/1.1 204 No Content\r\n\r\n"
            if good
            else (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        )
        if self.receiver.delay:
            asyncio.get_running_loop().call_later(self.receiver.delay, self._write, reply)
        else:
            self._write(reply)

    def _write(self, reply: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply)  # type: ignore[attr-defined]


async def serve() -> Receiver:
    host, port, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    options = sys.argv[5:]
    delay = float(options[options.index("--delay") + 1]) if "--delay" in options else 0.0
    if "--idle" in options:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    receiver = Receiver(secret.encode(), delay)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(receiver), host, port)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()
    return receiver


if __name__ == "__main__":
    seen = uvloop.run(serve())
    with open(sys.argv[4], "w") as out:
        json.dump({**seen.report(), "cpu_s": time.process_time()}, out)
