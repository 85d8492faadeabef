"""Shared fixtures: a DNS server, a temporary instance, and cleanup of every process."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.dns_server import DNSServer
from support.instance import SendworxHome
from support.net import free_port
from support.panel import Panel
from support.redis_server import RedisServer

REPOSITORY = Path(__file__).resolve().parent.parent


@pytest.fixture
def dns_server() -> Iterator[DNSServer]:
    with DNSServer() as server:
        yield server


@pytest.fixture
def sink_port() -> int:
    """One port number that the test's sinks share across several loopback addresses."""
    return free_port("127.0.0.1")


@pytest.fixture
def home(tmp_path: Path, dns_server: DNSServer, sink_port: int) -> Iterator[SendworxHome]:
    instance = SendworxHome(tmp_path / "home", dns_port=dns_server.port, remote_port=sink_port)
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def panel(home: SendworxHome) -> Iterator[Panel]:
    running = Panel(home).start()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def shared_panel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Panel]:
    """One panel for the tests of a module that leave its instance as they found it (refused
    requests, read-only calls): starting one for each of them cost a second apiece. A test
    that changes the instance takes `panel`, its own."""
    with DNSServer() as dns:
        home = SendworxHome(tmp_path_factory.mktemp("shared") / "home", dns_port=dns.port)
        running = Panel(home).start()
        try:
            yield running
        finally:
            running.close()
            home.close()


@pytest.fixture(scope="session")
def sendmail_client() -> Iterator[Path]:
    """The compiled sendmail client: `make test` builds it (SENDWORX_SENDMAIL_CLIENT); a
    bare pytest run builds its own with the same Makefile rule."""
    # Where every account may run it (a test's own directories are root's, mode 0700).
    where = Path(tempfile.mkdtemp(prefix="sendworx-client-"))
    where.chmod(0o755)
    built = os.environ.get("SENDWORX_SENDMAIL_CLIENT")
    if built and os.access(built, os.X_OK):
        shutil.copy(built, where / "sendmail")
    else:
        subprocess.run(
            ["make", "-s", "-C", str(REPOSITORY), f"BUILD_DIR={where}", f"{where}/sendmail"],
            check=True,
            capture_output=True,
        )
    yield where / "sendmail"
    shutil.rmtree(where, ignore_errors=True)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The install test (a package built, a Debian booted twice) first: started late, it
    would be the last thing a run waits for."""
    items.sort(key=lambda item: item.path.name != "test_install.py")


@pytest.fixture
def open_home(dns_server: DNSServer) -> Iterator[SendworxHome]:
    """An instance whose run directory every account may cross, as /run/sendworx installed
    (a test's own directories are 0700)."""
    root = Path(tempfile.mkdtemp(prefix="sendworx-test-"))
    root.chmod(0o711)
    home = SendworxHome(root / "home", dns_port=dns_server.port)
    try:
        yield home
    finally:
        home.close()
        shutil.rmtree(root, ignore_errors=True)
