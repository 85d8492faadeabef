"""Where an instance keeps its files.

Two layouts of the same tree. The developer's instance is one home directory laid out like a
small qmail tree (`SENDWORX_HOME` or `--home`; `./var` for `make run`). The installed one
follows the FHS (`Instance.installed()`, chosen by `--system` or by /etc/sendworx/sendworx.toml
existing): settings under /etc/sendworx, state under /var/lib/sendworx, the queue and local
mailboxes under /var/spool/sendworx, sockets and locks under /run/sendworx, logs to the
journal (stderr), the host's aliases in /etc/aliases.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from sendworx.shared.config import InstanceConfig, default_config_text, load_config
from sendworx.shared.dkim_keys import KeyStore
from sendworx.shared.dkim_signer import Signer
from sendworx.shared.durable import atomic_write
from sendworx.shared.queue import Queue
from sendworx.shared.settings import MailNames, read_settings

SYSTEM_CONFIG_DIR = Path("/etc/sendworx")
SYSTEM_STATE_DIR = Path("/var/lib/sendworx")
SYSTEM_SPOOL_DIR = Path("/var/spool/sendworx")
SYSTEM_RUNTIME_DIR = Path("/run/sendworx")
SYSTEM_USER = "sendworx"


def default_home() -> Path:
    return Path(os.environ.get("SENDWORX_HOME", "var")).absolute()


def chosen_instance(home: Path | None, system: bool) -> Instance:
    """`--system`; else `--home` or SENDWORX_HOME; else the installed instance where the
    package put its configuration; else ./var."""
    if system:
        return Instance.installed()
    undecided = home is None and "SENDWORX_HOME" not in os.environ
    if undecided and _installed():
        return Instance.installed()
    return Instance((home or default_home()).absolute())


def _installed() -> bool:
    """Whether the package put its configuration here; a site's account may not look into
    /etc/sendworx (0750): that it may not is the package's doing too."""
    try:
        return (SYSTEM_CONFIG_DIR / "sendworx.toml").exists()
    except PermissionError:
        return True


@dataclass(frozen=True)
class Instance:
    home: Path  # the state directory (users, keys, TLS, holds); the whole tree when not system
    system: bool = False

    @classmethod
    def installed(cls) -> Instance:
        return cls(SYSTEM_STATE_DIR, system=True)

    def cli_arguments(self) -> list[str]:
        """What names this instance to another `sendworx` process."""
        return ["--system"] if self.system else ["--home", str(self.home)]

    def command(self, *arguments: str) -> list[str]:
        """A `sendworx` command on this instance, run by this interpreter. Isolated (-I): a
        module in the caller's working directory or $PYTHONPATH never stands in for ours."""
        return [sys.executable, "-I", "-m", "sendworx", *self.cli_arguments(), *arguments]

    @property
    def config_dir(self) -> Path:
        """sendworx.toml, policy.toml and the control files."""
        return SYSTEM_CONFIG_DIR if self.system else self.home

    @property
    def spool_dir(self) -> Path:
        return SYSTEM_SPOOL_DIR if self.system else self.home

    @property
    def config_path(self) -> Path:
        return self.config_dir / "sendworx.toml"

    @property
    def policy_path(self) -> Path:
        return self.config_dir / "policy.toml"

    @property
    def bounce_rules_path(self) -> Path:
        """The operator's bounce classes, read before the built-in ones (`bounce_classes.py`)."""
        return self.config_dir / "bounce_rules.toml"

    @property
    def aliases_path(self) -> Path:
        """Where mail for this host's own names goes (`shared/aliases.py`)."""
        return Path("/etc/aliases") if self.system else self.home / "aliases"

    @property
    def holds_path(self) -> Path:
        """The senders the sending policy holds (`shared/holds.py`)."""
        return self.home / "holds.json"

    @property
    def mailboxes_dir(self) -> Path:
        """Local mail: a Maildir per local user (`shared/maildir.py`)."""
        return self.spool_dir / "mailboxes"

    @property
    def control_dir(self) -> Path:
        return self.config_dir / "control"

    @property
    def queue_dir(self) -> Path:
        return self.spool_dir / "queue"

    @property
    def run_dir(self) -> Path:
        """Sockets, pid files and locks."""
        return SYSTEM_RUNTIME_DIR if self.system else self.home / "run"

    @property
    def log_dir(self) -> Path | None:
        """Where each process writes its log file; None: stderr only (the journal)."""
        return None if self.system else self.home / "log"

    def log_file(self, name: str) -> Path | None:
        return None if self.log_dir is None else self.log_dir / f"{name}.log"

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
    def service_socket(self) -> Path:
        """Where the service's supervisor starts and stops the engine (`cli/supervisor.py`)."""
        return self.run_dir / "service.sock"

    @property
    def submission_socket(self) -> Path:
        """Where every local account hands in mail (`inject/submitd.py`): mode 0666."""
        return self.run_dir / "submit.sock"

    @property
    def engine_wanted_file(self) -> Path:
        """The API's last word on the engine, started or stopped (`backends/builtin.py`)."""
        return self.home / "engine.wanted"

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
        return Queue(self.queue_dir, self.queue_trigger_socket, Signer(self.dkim_keys())).ensure()

    @property
    def dkim_dir(self) -> Path:
        """DKIM keys (`dkim_keys.py`): the service's account alone reads them."""
        return self.home / "dkim"

    def dkim_keys(self) -> KeyStore:
        return KeyStore(self.dkim_dir)

    @property
    def history_path(self) -> Path:
        """The delivery history (`history.py`): written by the engine, read by the API."""
        return self.home / "history" / "history.sqlite3"

    @property
    def queue_index_path(self) -> Path:
        """The panel's index of the queue (`queue_index.py`): derived from the queue files,
        kept between runs, rebuilt from them when missing or damaged."""
        return self.home / "queue-index" / "queue.sqlite3"

    @property
    def suppression_path(self) -> Path:
        """The suppression list (`suppression.py`): the engine and the API both write it."""
        return self.home / "suppression" / "suppression.sqlite3"

    @property
    def webhooks_path(self) -> Path:
        """Webhook endpoints, their outbound queue and attempts (`webhooks.py`): the API
        writes endpoints, the engine queues events, `webhookd` sends them."""
        return self.home / "webhooks" / "webhooks.sqlite3"

    @property
    def webhooks_trigger_socket(self) -> Path:
        """Where `webhookd` hears that events were queued for it."""
        return self.run_dir / "webhooks.sock"

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

    @property
    def submitd_pid_file(self) -> Path:
        return self.run_dir / "submitd.pid"

    @property
    def webhookd_pid_file(self) -> Path:
        return self.run_dir / "webhookd.pid"

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
            if directory is not None:
                directory.mkdir(parents=True, exist_ok=True)
        if not self.system:
            # The engine's sockets live here: only the instance's owner may reach or squat
            # them. (Installed, /run/sendworx is systemd's, mode 0755: the submission socket
            # in it is for every account; the others are 0600 files.)
            self.run_dir.chmod(0o700)
        if not self.config_path.exists():
            atomic_write(self.config_path, default_config_text().encode())
        return self
