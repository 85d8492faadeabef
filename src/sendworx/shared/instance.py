"""Where an instance keeps its files: one home directory, laid out like a small qmail tree.

`SENDWORX_HOME` (or `--home`) chooses it; `./var` is the default for `make run`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from sendworx.shared.config import InstanceConfig, default_config_text, load_config
from sendworx.shared.durable import atomic_write
from sendworx.shared.queue import Queue
from sendworx.shared.settings import MailNames, read_settings


def default_home() -> Path:
    return Path(os.environ.get("SENDWORX_HOME", "var")).absolute()


@dataclass(frozen=True)
class Instance:
    home: Path

    @property
    def config_path(self) -> Path:
        return self.home / "sendworx.toml"

    @property
    def policy_path(self) -> Path:
        return self.home / "policy.toml"

    @property
    def holds_path(self) -> Path:
        """The senders the sending policy holds (`shared/holds.py`)."""
        return self.home / "holds.json"

    @property
    def mailboxes_dir(self) -> Path:
        """Local mail: a Maildir per local user (`shared/maildir.py`)."""
        return self.home / "mailboxes"

    @property
    def control_dir(self) -> Path:
        return self.home / "control"

    @property
    def queue_dir(self) -> Path:
        return self.home / "queue"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "log"

    @property
    def engine_pid_file(self) -> Path:
        return self.run_dir / "send.pid"

    @property
    def queue_lock_file(self) -> Path:
        """Held by the engine while it runs; the queue's offline tools take it when it does not."""
        return self.run_dir / "queue.lock"

    @property
    def engine_control_socket(self) -> Path:
        """Where the engine answers `status`, `retry` and `reload` (`unix_sockets.py`)."""
        return self.run_dir / "control.sock"

    @property
    def admission_socket(self) -> Path:
        """Where injectors ask the engine whether a sender may send (`shared/admission.py`)."""
        return self.run_dir / "admit.sock"

    @property
    def queue_trigger_socket(self) -> Path:
        """Where the engine hears that injectors put mail into `queue/new/`."""
        return self.run_dir / "trigger.sock"

    def queue(self) -> Queue:
        """The instance's queue, its directories created if missing."""
        return Queue(self.queue_dir, self.queue_trigger_socket).ensure()

    @property
    def panel_dir(self) -> Path:
        """Users, keys and TLS material: readable by the instance owner only."""
        return self.home / "panel"

    @property
    def master_key_file(self) -> Path:
        return self.panel_dir / "master.key"

    @property
    def master_password_file(self) -> Path:
        return self.panel_dir / "master.password"

    @property
    def users_file(self) -> Path:
        return self.panel_dir / "users.json"

    @property
    def nodes_file(self) -> Path:
        """The cluster's nodes and their keys (a manager's)."""
        return self.panel_dir / "nodes.json"

    @property
    def tls_dir(self) -> Path:
        """The generated CA and server certificate."""
        return self.panel_dir / "tls"

    @property
    def panel_pid_file(self) -> Path:
        return self.run_dir / "panel.pid"

    @property
    def smtpd_pid_file(self) -> Path:
        return self.run_dir / "smtpd.pid"

    @cached_property
    def config(self) -> InstanceConfig:
        return load_config(self.config_path)

    def mail_names(self) -> MailNames:
        """Who this server is: the name control files (`me`, `bouncefrom`, ...), defaulting to
        the configuration's helo_name and double_bounce_to."""
        delivery = self.config.delivery
        settings = read_settings(self.control_dir)
        return settings.mail_names(self.config.helo_name, delivery.double_bounce_to)

    @property
    def node_id(self) -> str:
        """This node's id in a cluster: `panel.node_id`, else the HELO name."""
        return self.config.panel.node_id or self.config.helo_name

    def ensure(self) -> Instance:
        """Create the directory tree and a commented config file; safe to repeat."""
        for directory in (self.home, self.control_dir, self.run_dir, self.log_dir):
            directory.mkdir(parents=True, exist_ok=True)
        # The engine's sockets live here: only the instance's owner may reach or squat them.
        self.run_dir.chmod(0o700)
        if not self.config_path.exists():
            atomic_write(self.config_path, default_config_text().encode())
        return self
