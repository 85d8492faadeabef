"""What bench/relay --dkim needs besides the relays: the signing key (sendworx's own store, an
RSA-2048 key both relays sign with), Debian's OpenDKIM as Postfix's milter with that key, and
a check of what smtp-sink received: every message signed once, and a sample verified by dkimpy
against the key's record."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from local_tools import tool

from sendworx.shared.dkim_keys import DkimKey, KeyStore, Origins

DOMAIN = "bench.example"
SENDER = f"b@{DOMAIN}"


def make_key(home: Path) -> DkimKey:
    """The instance's key for DOMAIN, which any sender may use (smtp-source is root anyway)."""
    return KeyStore(home / "dkim").add(DOMAIN, origins=Origins(any=True))


def dump_dir() -> str:
    """A directory smtp-sink (running as nobody) may write each received message into."""
    path = tempfile.mkdtemp(prefix="sendworx-bench-sink-")
    os.chmod(path, 0o777)
    return path


def check_received(dump: str, count: int, key: DkimKey, sample: int = 20) -> None:
    """Every message received carries exactly one DKIM-Signature; `sample` of them verify."""
    import dkim

    files = sorted(Path(dump).iterdir())
    signed = [path for path in files if path.read_bytes().count(b"DKIM-Signature:") == 1]
    if len(files) != count or len(signed) != count:
        raise SystemExit(f"{len(signed)} of {len(files)} received messages signed once ({count})")
    record = key.record_text.encode()
    for path in random.sample(files, min(sample, len(files))):
        content = path.read_bytes()
        message = content[content.index(b"\n", content.index(b"X-Rcpt-Args")) + 1 :]
        if not dkim.verify(message, dnsfunc=lambda name, timeout=5: record):
            raise SystemExit(f"{path} does not verify")
    shutil.rmtree(dump, ignore_errors=True)


class OpenDkim:
    """Debian's opendkim in the foreground, signing DOMAIN's mail as a milter on loopback."""

    def __init__(self, home: Path, key: DkimKey) -> None:
        # A UNIX socket, as Debian's opendkim package sets it up for Postfix (over TCP on
        # loopback, delayed ACKs cost the milter's many small round trips dearly).
        self.socket = home / "opendkim.sock"
        self.milter = f"unix:{self.socket}"
        pem = home / "dkim" / key.domain / f"{key.selector}.pem"
        self.config = home / "opendkim.conf"
        os.chmod(home, 0o755)  # Postfix's smtpd (user postfix) reaches the socket
        self.config.write_text(
            f"Domain {key.domain}\nSelector {key.selector}\nKeyFile {pem}\n"
            f"Socket local:{self.socket}\nUMask 000\nCanonicalization relaxed/relaxed\n"
            "SignatureAlgorithm rsa-sha256\nMode s\nBackground no\nRequireSafeKeys no\n"
            "Syslog no\nOversignHeaders From\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> OpenDkim:
        self.process = subprocess.Popen(
            [tool("opendkim"), "-f", "-x", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while not self.socket.exists():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit("opendkim did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exception: object) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(30)
