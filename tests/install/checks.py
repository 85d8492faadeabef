"""The install test's checks, run as root inside a Debian 12 container booted with systemd
(stdlib only: this is the container's python3, not the project's). Each boot runs one phase,
records what it saw in /srv/check/<phase>.json (every step: what was run, what came out),
and powers the container off. The test on the host judges the records.

    phase 1: Postfix replaced; units active and hardened; two accounts' PHP mail() and SMTP
             queued with the right origin while the engine is stopped, then delivered; what
             an account may not do; mail with every service stopped; restart; reload; aliases;
             a bounce to a local sender; mail left queued with the engine stopped for phase 2.
    phase 2: after the reboot: the services up, the engine still stopped, the mail still
             queued; an upgrade keeps it, the settings and the stopped engine; delivered
             once each on start; then remove keeps the data, purge deletes it.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

CHECK = Path("/srv/check")
SINK_PORT = 2526
SINK_OUT = CHECK / "sink.jsonl"
QUEUE = Path("/var/spool/sendworx/queue")
record: dict[str, Any] = {"steps": []}


def run(command: str, *, user: str | None = None, stdin: str | None = None) -> dict[str, Any]:
    """A shell command (as `user`); its status and output, recorded."""
    argv = ["su", "-s", "/bin/sh", user, "-c", command] if user else ["sh", "-c", command]
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120)
    step = {"command": command, "user": user or "root", "status": done.returncode}
    step["stdout"], step["stderr"] = done.stdout[-4000:], done.stderr[-4000:]
    record["steps"].append(step)
    return step


def note(key: str, value: Any) -> None:
    record[key] = value


def wait(condition: Any, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return bool(condition())


def queued() -> list[dict[str, Any]]:
    """Every queued message's id and envelope, as root reads the files."""
    found = []
    for path in sorted(glob.glob(f"{QUEUE}/new/*") + glob.glob(f"{QUEUE}/mess/*")):
        with open(path, "rb") as handle:
            handle.readline()  # the format line
            envelope = json.loads(handle.readline())
        found.append({"id": os.path.basename(path), **envelope})
    return found


def received() -> list[dict[str, Any]]:
    if not SINK_OUT.exists():
        return []
    return [json.loads(line) for line in SINK_OUT.read_text().splitlines()]


def start_sink() -> None:
    subprocess.Popen(
        [sys.executable, str(CHECK / "sink.py"), str(SINK_PORT), str(SINK_OUT)],
        start_new_session=True,
    )
    probe = f"import socket; socket.create_connection(('127.0.0.1', {SINK_PORT}))"
    wait(lambda: run(f'python3 -c "{probe}"')["status"] == 0)


def status_line() -> str:
    shown = run("systemctl status sendworx --no-pager")["stdout"]
    match = re.search(r"Status: \"([^\"]*)\"", shown)
    return match.group(1) if match else ""


def php_mail(user: str, to: str, subject: str) -> dict[str, Any]:
    code = f"var_dump(mail('{to}', '{subject}', 'sent by {user}'));"
    return run(f'php -r "{code}"', user=user)


def phase_1() -> None:
    note("postfix_before", run("systemctl is-active postfix")["stdout"].strip())
    install = run("apt-get install -y ./sendworx.deb < /dev/null", stdin="")
    note("install_status", install["status"])
    note("install_output", install["stdout"][-3000:] + install["stderr"][-2000:])
    note("postfix_after", run("dpkg-query -W -f '${Status}' postfix")["stdout"])
    note("sendmail_path", os.path.realpath("/usr/sbin/sendmail"))
    note(
        "active",
        {
            unit: run(f"systemctl is-active {unit}")["stdout"].strip()
            for unit in ("sendworx.service", "sendworx-submit.socket")
        },
    )
    exposure = {}
    for unit in ("sendworx.service", "sendworx-submit.service"):
        shown = run(f"systemd-analyze security --no-pager {unit}")["stdout"]
        match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", shown)
        exposure[unit] = float(match.group(1)) if match else None
    note("exposure", exposure)
    for account in ("alice", "bob"):
        run(f"useradd --create-home {account}")
    start_sink()
    note("routes", run("sendworx settings set 'smtp_routes=:[127.0.0.1]:2526'"))
    note("stop", run("sendworx stop"))
    wait(lambda: "stopped" in status_line())
    note("status_when_stopped", status_line())
    note("is_running_when_stopped", json.loads(run("sendworx status --json")["stdout"])["running"])
    # Two customers' sites, the engine stopped: queued, with the kernel's word for who.
    note("php_alice", php_mail("alice", "alice-reader@example.test", "from alice"))
    note("php_bob", php_mail("bob", "bob-reader@example.test", "from bob"))
    note(
        "forged",
        run(
            "printf 'Subject: forged\\n\\nI am bob\\n' | /usr/sbin/sendmail -f bob@localhost "
            "-i forged@example.test",
            user="alice",
        ),
    )
    smtp = (
        "import smtplib; s = smtplib.SMTP('127.0.0.1', 25); "
        "s.sendmail('site@alice.test', ['smtp@example.test'], 'Subject: over smtp\\r\\n\\r\\nx')"
    )
    note("smtp_alice", run(f'python3 -c "{smtp}"', user="alice"))
    note("queued_origins", [(m["recipients"], m.get("origin")) for m in queued()])
    # What an account must not do to another's mail.
    first = queued()[0]["id"]
    note(
        "trespass",
        {
            "list": run(f"ls {QUEUE}/new", user="alice")["status"],
            "read": run(f"cat {QUEUE}/new/{first}", user="alice")["status"],
            "delete": run(f"rm -f {QUEUE}/new/{first}", user="alice")["status"],
            "write": run(f"touch {QUEUE}/new/0661000000000000aaaaaaaaaa", user="alice")["status"],
            "state_dir": run("ls /var/lib/sendworx/panel", user="alice")["status"],
        },
    )
    note("mailq_alice", run("mailq", user="alice")["stdout"])
    note("mailq_bob", run("mailq", user="bob")["stdout"])
    note("mailq_root", run("mailq")["stdout"])
    note("queued_after_trespass", len(queued()))
    # Started: everything queued is delivered.
    note("start", run("sendworx start"))
    wait(lambda: len(received()) >= 4 and not queued())
    note("status_when_running", status_line())
    note("is_running_when_running", json.loads(run("sendworx status --json")["stdout"])["running"])
    note("delivered", [(m["from"], m["to"]) for m in received()])

    # Each account sees the history of its own mail only (written within a second).
    def history(user: str) -> list[dict[str, Any]]:
        step = run("sendworx history --json --per-page 500", user=user)
        try:
            events: list[dict[str, Any]] = json.loads(step["stdout"])["events"]
        except (ValueError, KeyError):
            return []
        return events

    wait(lambda: any(event["event"] == "delivered" for event in history("bob")))
    note("history_alice", history("alice"))
    note("history_bob", history("bob"))
    # An account adds a webhook endpoint for its own mail; another account does not see it.
    note(
        "webhooks_alice_add", run("sendworx webhooks add https://hooks.example.com/a", user="alice")
    )
    note("webhooks_alice", run("sendworx webhooks list --json", user="alice"))
    note("webhooks_bob", run("sendworx webhooks list --json", user="bob"))
    # The webhook sender runs in the unit, below mail's CPU priority.
    note("webhookd_policy", run("chrt -p $(pgrep -f 'sendworx --system webhookd' | head -1)"))
    # Every sendworx service stopped but the submission socket: accepted, picked up later.
    run("systemctl stop sendworx.service sendworx-submit.service")
    note("sendmail_services_stopped", php_mail("alice", "later@example.test", "while stopped"))
    note("queued_while_stopped", [m["recipients"] for m in queued()])
    run("systemctl stop sendworx-submit.socket")
    note(
        "sendmail_nothing_listening",
        run("printf 'Subject: x\\n\\ny\\n' | /usr/sbin/sendmail -i x@example.test", user="bob"),
    )
    note("php_nothing_listening", php_mail("bob", "x@example.test", "nobody listens"))
    run("systemctl start sendworx-submit.socket sendworx.service")
    wait(lambda: not queued() and len(received()) >= 5, 60)
    note("delivered_after_restart", [m["to"] for m in received()])
    # Reload: a setting changed on disk applies to the running engine.
    Path("/etc/sendworx/control/concurrencyremote").write_text("7\n")
    note("reload", run("systemctl reload sendworx"))

    def limit() -> str:
        try:
            text = urllib.request.urlopen("http://127.0.0.1:9465/metrics", timeout=5).read()
        except OSError:
            return ""
        found = re.search(rb"^sendworx_connection_limit (\S+)", text, re.M)
        return found.group(1).decode() if found else ""

    wait(lambda: limit() == "7.0")
    note("limit_after_reload", limit())
    # The host's own mail: cron's to root goes where the aliases say; a bounce comes home.
    Path("/etc/aliases").write_text("postmaster: root\nroot: ops@example.test\n")
    note("newaliases", run("newaliases"))
    note(
        "cron",
        run(
            "printf 'Subject: Cron <root@host> run-parts\\n\\nreport\\n' | "
            "/usr/sbin/sendmail -FCronDaemon -i -B8BITMIME -oem root"
        ),
    )
    note("bounce_send", php_mail("alice", "reject@example.test", "will bounce"))
    wait(lambda: glob.glob("/var/spool/sendworx/mailboxes/alice/new/*"))
    note("alice_mailbox", glob.glob("/var/spool/sendworx/mailboxes/alice/new/*"))
    wait(lambda: any("ops@example.test" in m["to"] for m in received()))
    note("cron_forwarded", [m["to"] for m in received() if "ops@example.test" in m["to"]])
    # An operator's edit of a conffile, for the upgrade in phase 2 to keep.
    with open("/etc/sendworx/policy.toml", "a") as policy:
        policy.write("# edited by the operator\n")
    # Left for the reboot: mail queued with the engine stopped; a restart keeps it.
    run("sendworx stop")
    for number in range(3):
        php_mail("bob", f"after-reboot-{number}@example.test", "across a reboot")
    before = sorted(m["id"] for m in queued())
    run("systemctl restart sendworx")
    wait(lambda: run("systemctl is-active sendworx")["stdout"].strip() == "active")
    note("queued_before_restart", before)
    note("queued_after_restart", sorted(m["id"] for m in queued()))
    note("status_after_restart", status_line())


def phase_2() -> None:
    note(
        "active",
        {
            unit: run(f"systemctl is-active {unit}")["stdout"].strip()
            for unit in ("sendworx.service", "sendworx-submit.socket")
        },
    )
    wait(lambda: "stopped" in status_line())
    note("status_after_reboot", status_line())
    note("queued_after_reboot", sorted(m["id"] for m in queued()))
    if SINK_OUT.exists():  # phase 1's deliveries, kept to read, not counted again
        SINK_OUT.rename(CHECK / "sink-phase1.jsonl")
    start_sink()
    # An upgrade (the same package, a higher version) with that mail still queued.
    upgrade = run("apt-get install -y ./sendworx-next.deb < /dev/null", stdin="")
    note("upgrade_status", upgrade["status"])
    note("upgrade_output", upgrade["stdout"][-3000:] + upgrade["stderr"][-2000:])
    note("version_after_upgrade", run("dpkg-query -W -f '${Version}' sendworx")["stdout"])
    wait(lambda: run("systemctl is-active sendworx")["stdout"].strip() == "active")
    wait(lambda: "stopped" in status_line())
    note("status_after_upgrade", status_line())
    note("queued_after_upgrade", sorted(m["id"] for m in queued()))
    note(
        "settings_after_upgrade",
        {
            "concurrencyremote": Path("/etc/sendworx/control/concurrencyremote").read_text(),
            "policy_edit_kept": "# edited by the operator"
            in Path("/etc/sendworx/policy.toml").read_text(),
            "master_key_kept": Path("/var/lib/sendworx/panel/master.key").exists(),
        },
    )
    note("start", run("sendworx start"))
    wait(lambda: not queued() and len(received()) >= 3, 60)
    note("delivered_after_reboot", sorted(to for m in received() for to in m["to"]))
    note("remove", run("apt-get remove -y sendworx < /dev/null", stdin="")["status"])
    data = ("/var/lib/sendworx", "/var/spool/sendworx", "/etc/sendworx")
    note("kept_after_remove", [os.path.isdir(path) for path in data])
    note("purge", run("apt-get purge -y sendworx < /dev/null", stdin="")["status"])
    note("left_after_purge", [path for path in data if os.path.exists(path)])


if __name__ == "__main__":
    phase = sys.argv[1]
    os.chdir(CHECK)
    try:
        {"1": phase_1, "2": phase_2}[phase]()
    except Exception as error:  # recorded for the test to show, never hidden
        note("error", f"{type(error).__name__}: {error}")
    finally:
        (CHECK / f"phase{phase}.json").write_text(json.dumps(record, indent=1))
        subprocess.run(["systemctl", "poweroff"], check=False)
