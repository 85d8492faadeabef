"""Webhook receivers for the tests: a Python one (here, a thread of the test process) and
PHP's built-in web server with tests/php/webhook_receiver.php. Each checks every request's
signature the way docs/api.md tells receivers to, written out here with hmac rather than
through sendworx's own code, and records what it got."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from support.net import wait_for

PHP_RECEIVER = Path(__file__).parent.parent / "php" / "webhook_receiver.php"


def signature_holds(header: str, secret: str, body: bytes, now: float) -> bool:
    """Stripe's check: t within 5 minutes, some v1 = hex HMAC-SHA256(secret, f"{t}.{body}")."""
    parts = [part.split("=", 1) for part in header.split(",") if "=" in part]
    stamps = [value for key, value in parts if key == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit() or abs(now - int(stamps[0])) > 300:
        return False
    expected = hmac.new(secret.encode(), stamps[0].encode() + b"." + body, hashlib.sha256)
    return any(
        hmac.compare_digest(expected.hexdigest(), value) for key, value in parts if key == "v1"
    )


@dataclass
class Received:
    event: dict[str, Any]
    headers: dict[str, str]
    signed: bool


@dataclass
class Behaviour:
    """How the receiver answers: a status, a pause before it, or `answer` deciding."""

    status: int = 200
    delay: float = 0.0
    answer: Callable[[dict[str, Any]], int] | None = None


@dataclass
class PythonReceiver:
    host: str = "127.0.0.1"
    secrets: list[str] = field(default_factory=list)
    behaviour: Behaviour = field(default_factory=Behaviour)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    def __enter__(self) -> PythonReceiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, port: int = 0) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out at once

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                header = self.headers.get("Sendworx-Signature", "")
                now = time.time()
                signed = any(signature_holds(header, key, body, now) for key in receiver.secrets)
                event = json.loads(body)
                received = Received(event, dict(self.headers.items()), signed)
                behaviour = receiver.behaviour
                if behaviour.delay:
                    time.sleep(behaviour.delay)
                status = behaviour.answer(event) if behaviour.answer else behaviour.status
                if 200 <= status < 300:
                    with receiver.lock:
                        receiver.received.append(received)
                reply = b"ok" if signed else b"bad signature"
                self.send_response(status if signed else 400)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((self.host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [item.event for item in self.received]

    def all_signed(self) -> bool:
        with self.lock:
            return all(item.signed for item in self.received)


@contextlib.contextmanager
def php_receiver(host: str, port: int, secret: str, log: Path) -> Iterator[str]:
    """PHP's built-in server on host:port with webhook_receiver.php: each request's event
    and whether hash_hmac found its signature good, a JSON line each in `log`."""
    process = subprocess.Popen(
        ["php", "-S", f"{host}:{port}", str(PHP_RECEIVER)],
        env={"WEBHOOK_SECRET": secret, "WEBHOOK_LOG": str(log), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        from support.net import port_open

        wait_for(lambda: port_open(host, port), timeout=10)
        yield f"http://{host}:{port}/hook"
    finally:
        process.terminate()
        process.wait(10)


def php_received(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
