"""The instance configuration file (`sendworx.toml`): what the NodeWorx API does not expose.

The five Outbound Mail settings are control files (see `settings.py`); this file holds the
rest: host name, resolver, listeners, delivery tuning. Unknown keys are an error, not a shrug.
"""

from __future__ import annotations

import ipaddress
import socket
import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Port = Annotated[int, Field(ge=0, le=65535)]


class ConfigError(Exception):
    """The instance configuration file cannot be used; the message says why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ResolverConfig(_Section):
    nameservers: list[str] = Field(default_factory=list, description="empty: use /etc/resolv.conf")
    port: Port = 53
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)

    @field_validator("nameservers")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for server in value:
            ipaddress.ip_address(server)
        return value


class SmtpdConfig(_Section):
    listen: list[str] = Field(default_factory=lambda: ["127.0.0.1"])
    port: Port = 2525
    workers: int = Field(default=0, ge=0, le=64, description="0: one per CPU core")
    max_message_bytes: int = Field(default=35 * 1024 * 1024, ge=1024)
    max_recipients: int = Field(default=1000, ge=1, le=100_000)
    relay_networks: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])

    @field_validator("relay_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)
        return value


class DeliveryConfig(_Section):
    remote_port: Port = Field(default=25, description="port for MX and A-record delivery")
    destination_concurrency: int = Field(default=20, ge=1, le=1000)
    recipients_per_transaction: int = Field(default=50, ge=1, le=1000)
    starttls: bool = True
    idle_connection_seconds: float = Field(default=2.0, ge=0, le=300)
    shutdown_grace_seconds: float = Field(default=30.0, ge=0, le=3600)
    max_active_messages: int = Field(default=5000, ge=1, le=1_000_000)
    rescan_seconds: float = Field(default=60.0, gt=0, le=86400)
    double_bounce_to: str = Field(default="postmaster", min_length=1, max_length=320)


class PanelConfig(_Section):
    listen: str = "127.0.0.1"
    https_port: Port = Field(default=2443, description="0 disables HTTPS")
    http_port: Port = Field(default=2080, description="0 disables plain HTTP")
    certificate: Path | None = Field(
        default=None, description="PEM chain; replaces the generated one"
    )
    private_key: Path | None = None
    node_id: str | None = Field(default=None, description="this node's id; default helo_name")
    session_seconds: float = Field(default=3600.0, gt=0, le=30 * 86400)
    max_failures: int = Field(default=10, ge=1, le=10_000)
    failure_window_seconds: float = Field(default=60.0, gt=0)
    lockout_seconds: float = Field(default=60.0, ge=0)
    max_request_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses whose X-Forwarded-For is believed; none by default",
    )


class ClusterConfig(_Section):
    timeout_seconds: float = Field(
        default=10.0, gt=0, le=600, description="per-node limit for a call to a cluster node"
    )


class MetricsConfig(_Section):
    listen: str = "127.0.0.1"
    port: Port = Field(default=9465, description="0 disables the metrics endpoint")


class InstanceConfig(_Section):
    helo_name: str = Field(default_factory=socket.getfqdn, min_length=1, max_length=253)
    resolver: ResolverConfig = Field(default_factory=ResolverConfig)
    smtpd: SmtpdConfig = Field(default_factory=SmtpdConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    panel: PanelConfig = Field(default_factory=PanelConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    @field_validator("helo_name")
    @classmethod
    def _no_spaces(cls, value: str) -> str:
        if any(ch.isspace() or ord(ch) < 32 for ch in value):
            raise ValueError("must not contain spaces or control characters")
        return value


DEFAULT_CONFIG_TEXT = """\
# sendworx instance configuration. Every key is optional; the values shown are the defaults.
# The five Outbound Mail settings are not here: they are the control files in ./control
# (concurrencyremote, timeoutremote, timeoutconnect, queuelifetime, smtproutes).

# helo_name = "this host's FQDN"

[resolver]
# nameservers = []          # empty: use /etc/resolv.conf
# port = 53
# timeout_seconds = 10.0

[smtpd]
# listen = ["127.0.0.1"]
# port = 2525
# workers = 0                # 0: one process per CPU core
# max_message_bytes = 36700160
# max_recipients = 1000
# relay_networks = ["127.0.0.0/8", "::1/128"]

[delivery]
# remote_port = 25
# destination_concurrency = 20
# recipients_per_transaction = 50
# starttls = true
# idle_connection_seconds = 2.0
# shutdown_grace_seconds = 30.0
# max_active_messages = 5000
# rescan_seconds = 60.0
# double_bounce_to = "postmaster"

[metrics]
# listen = "127.0.0.1"
# port = 9465               # 0 disables

[panel]
# listen = "127.0.0.1"
# https_port = 2443         # 0 disables
# http_port = 2080          # 0 disables
# certificate = "/path/to/chain.pem"   # replaces the generated certificate
# private_key = "/path/to/key.pem"
# node_id = "this host's helo_name"
# session_seconds = 3600
# max_failures = 10         # failed logins from one address within the window...
# failure_window_seconds = 60
# lockout_seconds = 60      # ...lock it out this long
# max_request_bytes = 10485760
# trusted_proxies = []      # e.g. ["127.0.0.1"] behind a local reverse proxy: only these
#                           # may name the client in X-Forwarded-For (lockouts, audit log)

[cluster]
# timeout_seconds = 10      # a node that takes longer is reported as timed out
"""


def load_config(path: Path) -> InstanceConfig:
    """Read `path`; a missing file means every default."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return InstanceConfig()
    try:
        document = tomllib.loads(raw.decode("utf-8"))
        return InstanceConfig.model_validate(document)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from error
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in error.errors()
        )
        raise ConfigError(f"{path}: {problems}") from error
