"""The Debian package on a real Debian 12 booted with systemd as PID 1 (systemd-nspawn, no
network): it replaces Postfix, its units are active and hardened, every account's mail goes
out with the kernel's word for who sent it, nobody touches another's mail, nothing queued is
lost to a restart, a reboot or an upgrade, and purge deletes the data. `checks.py` runs inside the
container (one phase per boot) and records what it saw; this test judges the record.

The package is built by `make deb` (SENDWORX_DEB: an already built one). The base root is
made by mmdebstrap once and cached (SENDWORX_TEST_CACHE, /var/cache/sendworx-test).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
HERE = Path(__file__).parent / "install"
PACKAGES = (
    "systemd,systemd-sysv,dbus,php-cli,postfix,python3,python3-lxml,adduser,procps,"
    "ca-certificates,iproute2"
)
CHECK_UNIT = """[Unit]
Description=the sendworx install test's checks
After=sendworx.service sendworx-submit.socket postfix.service

[Service]
Type=oneshot
TimeoutStartSec=600
ExecStart=/bin/sh -c 'exec python3 /srv/check/checks.py "$(cat /srv/check/phase)"'

[Install]
WantedBy=multi-user.target
"""

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="boots a container: root only")


def _package() -> Path:
    given = os.environ.get("SENDWORX_DEB")
    if given:
        return Path(given)
    subprocess.run(["make", "-s", "deb"], cwd=REPOSITORY, check=True, capture_output=True)
    [built] = sorted((REPOSITORY / "dist").glob("sendworx_*.deb"))
    return built


def _next_version(deb: Path, directory: Path) -> Path:
    """The same package with a higher version, for an upgrade: unpacked, its version raised,
    packed again (uncompressed: only dpkg reads it)."""
    tree = directory / "next"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    control.write_text(re.sub(r"(?m)^Version: (\S+)$", r"Version: \1+next1", control.read_text()))
    built = directory / "sendworx-next.deb"
    subprocess.run(
        ["dpkg-deb", "-Znone", "-b", str(tree), str(built)], check=True, capture_output=True
    )
    shutil.rmtree(tree)
    return built


def _base_root() -> Path:
    """A Debian 12 root as a tarball, made once per package list."""
    cache = Path(os.environ.get("SENDWORX_TEST_CACHE", "/var/cache/sendworx-test"))
    cache.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(PACKAGES.encode()).hexdigest()[:12]
    tarball = cache / f"bookworm-{digest}.tar"
    if not tarball.exists():
        partial = cache / f"bookworm-{digest}.{os.getpid()}.partial.tar"  # .tar: its format
        subprocess.run(
            [
                "mmdebstrap",
                "--quiet",
                "--variant=apt",
                f"--include={PACKAGES}",
                "bookworm",
                str(partial),
                "http://deb.debian.org/debian",
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
        partial.rename(tarball)
    return tarball


def _boot(root: Path, check: Path, phase: str) -> dict[str, Any]:
    (check / "phase").write_text(phase)
    booted = subprocess.run(
        [
            "systemd-nspawn",
            "--quiet",
            "-D",
            str(root),
            "-b",
            "--register=no",
            "--keep-unit",
            "--private-network",
            f"--bind={check}:/srv/check",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    result = check / f"phase{phase}.json"
    assert result.exists(), f"phase {phase} recorded nothing: {booted.stdout[-3000:]}"
    record: dict[str, Any] = json.loads(result.read_text())
    assert "error" not in record, (record["error"], record["steps"][-3:])
    return record


def _step(record: dict[str, Any], command: str) -> dict[str, Any]:
    return next(step for step in record["steps"] if step["command"].startswith(command))


def test_the_package_replaces_postfix_and_serves_every_account_across_reboots(
    tmp_path: Path,
) -> None:
    deb, tarball = _package(), _base_root()
    root, check = tmp_path / "root", tmp_path / "check"
    root.mkdir()
    check.mkdir()
    subprocess.run(["tar", "-C", str(root), "-xf", str(tarball)], check=True)
    for name in ("checks.py", "sink.py"):
        shutil.copy(HERE / name, check / name)
    shutil.copy(deb, check / "sendworx.deb")
    _next_version(deb, check)
    unit = root / "etc/systemd/system/sendworx-check.service"
    unit.write_text(CHECK_UNIT)
    (root / "etc/systemd/system/multi-user.target.wants/sendworx-check.service").symlink_to(
        "/etc/systemd/system/sendworx-check.service"
    )

    first = _boot(root, check, "1")
    # Installed over Postfix, as the host's MTA; every unit up and hardened.
    assert first["postfix_before"] == "active"
    assert first["install_status"] == 0, first["install_output"]
    assert "deinstall" in first["postfix_after"] or "not-installed" in first["postfix_after"]
    assert first["sendmail_path"] == "/usr/sbin/sendmail"
    assert first["active"] == {"sendworx.service": "active", "sendworx-submit.socket": "active"}
    assert all(level is not None and level <= 2.0 for level in first["exposure"].values()), first[
        "exposure"
    ]
    # The API's stop and systemd tell one story.
    assert first["stop"]["status"] == 0, first["stop"]
    assert first["status_when_stopped"].startswith("Outbound Mail is stopped")
    assert first["is_running_when_stopped"] is False
    # Two accounts' PHP mail(), a forged sender, SMTP to localhost: the kernel's account.
    for name in ("php_alice", "php_bob", "forged", "smtp_alice"):
        assert first[name]["status"] == 0, first[name]
    assert "bool(true)" in first["php_alice"]["stdout"]
    origins = {recipients[0]: origin for recipients, origin in first["queued_origins"]}
    assert origins["alice-reader@example.test"] == {
        "via": "sendmail",
        "uid": origins["alice-reader@example.test"]["uid"],
        "account": "alice",
    }
    assert origins["bob-reader@example.test"]["account"] == "bob"
    assert origins["forged@example.test"]["account"] == "alice"
    assert origins["smtp@example.test"]["via"] == "smtpd"
    assert origins["smtp@example.test"]["account"] == "alice"
    # Alice can see none of Bob's mail, touch none of it, forge none of it.
    assert all(status != 0 for status in first["trespass"].values()), first["trespass"]
    assert first["queued_after_trespass"] == 4
    assert "alice-reader@example.test" in first["mailq_alice"]
    assert "bob-reader@example.test" not in first["mailq_alice"]
    assert "bob-reader@example.test" in first["mailq_bob"]
    assert "alice-reader@example.test" not in first["mailq_bob"]
    assert "in 4 Requests" in first["mailq_root"]
    for account, own, other in (
        ("alice", "alice-reader@example.test", "bob-reader@example.test"),
        ("bob", "bob-reader@example.test", "alice-reader@example.test"),
    ):
        events = first[f"history_{account}"]
        assert events and {event["account"] for event in events} == {account}, events
        seen = {event["recipient"] for event in events}
        assert own in seen and other not in seen, seen
    assert "SCHED_IDLE" in first["webhookd_policy"]["stdout"], first["webhookd_policy"]
    assert first["webhooks_alice_add"]["status"] == 0, first["webhooks_alice_add"]
    [endpoint] = json.loads(first["webhooks_alice"]["stdout"])["endpoints"]
    assert (endpoint["scope"], endpoint["scope_value"]) == ("account", "alice")
    assert json.loads(first["webhooks_bob"]["stdout"])["endpoints"] == []
    # Started: all of it delivered.
    assert first["status_when_running"].startswith("Outbound Mail is running")
    assert first["is_running_when_running"] is True
    delivered = {recipient for _, recipients in first["delivered"] for recipient in recipients}
    assert delivered >= {
        "alice-reader@example.test",
        "bob-reader@example.test",
        "forged@example.test",
        "smtp@example.test",
    }
    # Every service stopped but the socket: accepted; nothing listening: 75, mail() false.
    assert first["sendmail_services_stopped"]["status"] == 0
    assert ["later@example.test"] in first["queued_while_stopped"]
    refused = first["sendmail_nothing_listening"]
    assert refused["status"] == 75, refused
    assert "does not answer" in refused["stderr"] and "nothing was queued" in refused["stderr"]
    assert "bool(false)" in first["php_nothing_listening"]["stdout"]
    assert "later@example.test" in {r for rs in first["delivered_after_restart"] for r in rs}
    # Reload applies a changed setting to the running engine.
    assert first["reload"]["status"] == 0
    assert first["limit_after_reload"] == "7.0"
    # The host's own mail.
    assert first["newaliases"]["status"] == 0
    assert first["cron"]["status"] == 0
    assert first["cron_forwarded"] == [["ops@example.test"]]
    assert first["alice_mailbox"], "the bounce did not reach alice's local mailbox"
    # A restart keeps what is queued, and the engine the API stopped stays stopped.
    assert len(first["queued_before_restart"]) == 3
    assert first["queued_after_restart"] == first["queued_before_restart"]
    assert first["status_after_restart"].startswith("Outbound Mail is stopped")

    second = _boot(root, check, "2")
    assert second["active"] == {"sendworx.service": "active", "sendworx-submit.socket": "active"}
    assert second["status_after_reboot"].startswith("Outbound Mail is stopped")
    assert second["queued_after_reboot"] == first["queued_before_restart"]
    # An upgrade keeps the queue, the settings, an edited conffile and the stopped engine.
    assert second["upgrade_status"] == 0, second["upgrade_output"]
    assert second["version_after_upgrade"].endswith("+next1")
    assert second["status_after_upgrade"].startswith("Outbound Mail is stopped")
    assert second["queued_after_upgrade"] == first["queued_before_restart"]
    assert second["settings_after_upgrade"] == {
        "concurrencyremote": "7\n",
        "policy_edit_kept": True,
        "master_key_kept": True,
    }
    assert second["start"]["status"] == 0
    assert second["delivered_after_reboot"] == [
        f"after-reboot-{number}@example.test" for number in range(3)
    ]
    assert second["remove"] == 0 and second["kept_after_remove"] == [True, True, True]
    assert second["purge"] == 0 and second["left_after_purge"] == []
