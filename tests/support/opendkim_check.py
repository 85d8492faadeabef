"""OpenDKIM's verdict on a message, as a second implementation of DKIM next to dkimpy.

OpenDKIM's own test mode (`opendkim -t FILE`, Debian's opendkim package: the milter's code,
not a re-implementation) looks keys up through the system resolver, on port 53. So it runs
in a network and mount namespace of its own (root only): loopback up, a resolv.conf naming
127.0.0.1 bound over the system's, and our DNS server answering on 127.0.0.1:53 with the
records given. Nothing leaves the namespace. (`opendkim-testmsg` from opendkim-tools fails
on every input in Debian 12's 2.11.0~beta2 with "dkim_chunk(): Syntax error".)

    python opendkim_check.py RECORDS.json MESSAGE   (inside: see `verify`)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def opendkim_results(message: bytes, records: dict[str, str]) -> list[str]:
    """OpenDKIM's result for each signature of `message` ("pass", "fail", ...), in order,
    with `records` (name -> TXT text) as the only DNS there is."""
    done = verify(message, records)
    assert done.returncode == 0, done.stdout + done.stderr
    return re.findall(r"\bdkim=(\w+)", done.stdout)


def verify(message: bytes, records: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run OpenDKIM's test mode on `message` with `records` (name -> TXT text) as DNS."""
    work = Path(tempfile.mkdtemp(prefix="opendkim-"))
    (work / "records.json").write_text(json.dumps(records))
    (work / "message").write_bytes(message)
    (work / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    script = (
        "set -e; ip link set lo up; mount --bind {resolv} /etc/resolv.conf; "
        "exec {python} {me} {records} {message}"
    ).format(
        resolv=work / "resolv.conf",
        python=sys.executable,
        me=Path(__file__).resolve(),
        records=work / "records.json",
        message=work / "message",
    )
    try:
        return subprocess.run(
            ["unshare", "--net", "--mount", "sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _inside(records_path: str, message_path: str) -> int:
    sys.path.insert(0, str(HERE.parent))
    from support.dns_server import DNSServer

    with DNSServer(port=53) as server:
        for name, text in json.loads(Path(records_path).read_text()).items():
            pieces = [text[i : i + 255] for i in range(0, len(text), 255)]
            server.add(name, "TXT", " ".join(json.dumps(piece) for piece in pieces))
        config = Path(message_path).with_name("opendkim.conf")
        config.write_text("Mode v\nSyslog no\nAlwaysAddARHeader yes\nNameservers 127.0.0.1\n")
        done = subprocess.run(
            ["opendkim", "-x", str(config), "-t", message_path, "-vv"], capture_output=True
        )
    sys.stdout.write(done.stdout.decode(errors="replace"))
    sys.stdout.write(done.stderr.decode(errors="replace"))
    return done.returncode


if __name__ == "__main__":
    os.environ.pop("PYTHONPATH", None)
    sys.exit(_inside(sys.argv[1], sys.argv[2]))
