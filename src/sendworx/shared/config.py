"""The instance configuration file (`sendworx.toml`): what the NodeWorx API does not expose.

The five Outbound Mail settings are control files (see `settings.py`); this file holds the
rest: host name, resolver, listeners, delivery tuning. Unknown keys are an error, not a shrug.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.fields import FieldInfo

Port = Annotated[int, Field(ge=0, le=65535)]
_Model = TypeVar("_Model", bound=BaseModel)


class ConfigError(Exception):
    """The instance configuration file cannot be used; the message says why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ResolverConfig(_Section):
    nameservers: list[str] = Field(
        default_factory=list, description="DNS servers (IP addresses); empty: /etc/resolv.conf"
    )
    port: Port = Field(default=53, description="DNS port")
    timeout_seconds: float = Field(default=10.0, gt=0, le=300, description="one lookup, in all")

    @field_validator("nameservers")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for server in value:
            ipaddress.ip_address(server)
        return value


class SmtpdConfig(_Section):
    listen: list[str] = Field(
        default_factory=lambda: ["127.0.0.1"], description="submission listen addresses"
    )
    port: Port = Field(default=2525, description="submission port")
    workers: int = Field(
        default=0, ge=0, le=64, description="listener processes; 0: one per CPU core"
    )
    max_message_bytes: int = Field(
        default=35 * 1024 * 1024, ge=1024, description="larger messages get 552"
    )
    max_recipients: int = Field(
        default=1000, ge=1, le=100_000, description="more recipients in one message get 452"
    )
    idle_timeout_seconds: float = Field(
        default=300.0, gt=0, le=3600, description="a client silent this long gets 421 and is cut"
    )
    max_connections: int = Field(
        default=1000, ge=1, le=100_000, description="open connections per worker; more get 421"
    )
    max_connections_per_address: int = Field(
        default=20,
        ge=1,
        le=100_000,
        description="per worker from one address outside relay_networks; more get 421",
    )
    relay_networks: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="peers that may relay; others get 554",
    )

    @field_validator("relay_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)
        return value


class DeliveryConfig(_Section):
    remote_port: Port = Field(default=25, description="port for MX and address-record delivery")
    destination_concurrency: int = Field(
        default=20, ge=1, le=1000, description="connections one destination may hold"
    )
    recipients_per_transaction: int = Field(
        default=50, ge=1, le=1000, description="recipients per SMTP transaction"
    )
    starttls: bool = Field(
        default=True, description="opportunistic STARTTLS (encrypt when offered, never verify)"
    )
    idle_connection_seconds: float = Field(
        default=2.0,
        ge=0,
        le=300,
        description="how long an idle connection waits for more mail to the same destination",
    )
    shutdown_grace_seconds: float = Field(
        default=30.0, ge=0, le=3600, description="how long SIGTERM lets deliveries in flight end"
    )
    max_active_messages: int = Field(
        default=5000, ge=1, le=1_000_000, description="messages being delivered at once"
    )
    rescan_seconds: float = Field(
        default=60.0, gt=0, le=86400, description="safety-net rescan of queue/new/"
    )
    double_bounce_to: str = Field(
        default="postmaster",
        min_length=1,
        max_length=320,
        description="default of control/doublebounceto: where failed bounces go",
    )


class SubmissionConfig(_Section):
    """Local submission: /usr/sbin/sendmail (`sendworx submitd`), for every account."""

    max_message_bytes: int = Field(
        default=35 * 1024 * 1024, ge=1024, description="a larger message is refused (exit 65)"
    )
    max_connections_per_account: int = Field(
        default=20, ge=1, le=10_000, description="sendmail calls of one account at once"
    )
    messages_per_hour_per_account: int = Field(
        default=50_000, ge=0, le=100_000_000, description="0: no cap; over it, exit 75"
    )
    megabytes_per_hour_per_account: int = Field(
        default=2048, ge=0, le=100_000_000, description="0: no cap; over it, exit 75"
    )
    min_free_megabytes: int = Field(
        default=200, ge=0, description="below this much free in the queue, exit 75 for all"
    )
    idle_timeout_seconds: float = Field(
        default=300.0, gt=0, le=3600, description="a sendmail that sends nothing this long"
    )


class PanelConfig(_Section):
    listen: str = Field(default="127.0.0.1", description="API listen address")
    https_port: Port = Field(default=2443, description="0 disables HTTPS")
    http_port: Port = Field(default=2080, description="0 disables plain HTTP")
    certificate: Path | None = Field(
        default=None,
        description="PEM chain replacing the generated certificate",
        examples=["/path/to/chain.pem"],
    )
    private_key: Path | None = Field(
        default=None, description="its private key", examples=["/path/to/key.pem"]
    )
    node_id: str | None = Field(
        default=None,
        description="this node's id in a cluster; default helo_name",
        examples=["node1.example.com"],
    )
    session_seconds: float = Field(
        default=3600.0, gt=0, le=30 * 86400, description="an unused session expires after this"
    )
    max_failures: int = Field(
        default=10, ge=1, le=10_000, description="failed logins from one address within..."
    )
    failure_window_seconds: float = Field(default=60.0, gt=0, description="...this window...")
    lockout_seconds: float = Field(default=60.0, ge=0, description="...lock it out this long")
    max_request_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, description="larger API requests are refused"
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses whose X-Forwarded-For is believed (lockouts, audit log)",
    )
    header_timeout_seconds: float = Field(
        default=10.0, gt=0, le=600, description="a request's headers must arrive within this"
    )
    body_timeout_seconds: float = Field(
        default=60.0, gt=0, le=3600, description="and its body within this after them"
    )
    max_connections: int = Field(
        default=800, ge=1, le=100_000, description="open connections per listener; more are closed"
    )
    max_connections_per_address: int = Field(
        default=100, ge=1, le=100_000, description="open connections from one client address"
    )


class ClusterConfig(_Section):
    timeout_seconds: float = Field(
        default=10.0, gt=0, le=600, description="a node that takes longer is reported as timed out"
    )


class MetricsConfig(_Section):
    listen: str = Field(default="127.0.0.1", description="Prometheus endpoint address")
    port: Port = Field(default=9465, description="0 disables the metrics endpoint")
    panel_port: Port = Field(
        default=9466,
        description="the panel's endpoint for the queue's shape (oldest pending mail per"
        " destination); 0 disables it",
    )


class DkimConfig(_Section):
    check_seconds: float = Field(
        default=3600.0,
        gt=0,
        le=86400,
        description="how often the engine looks up every DKIM record, retires keys and"
        " switches to a pending key once DNS shows it",
    )
    rotate_days: int = Field(
        default=0,
        ge=0,
        le=3650,
        description="start a rotation for an active key this old (0: only by hand)",
    )


class HistoryConfig(_Section):
    enabled: bool = Field(default=True, description="record every message's events")
    retention_days: int = Field(
        default=30, ge=1, le=3650, description="events older than this are pruned"
    )
    flush_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="how often recorded events are written: at most this much is lost to a"
        " kill -9 or a power loss",
    )
    json_lines_file: str = Field(
        default="",
        max_length=4096,
        description="also append every event as a line of JSON to this file, for log shippers"
        " (relative to the state directory; empty: not written)",
    )


class SuppressionConfig(_Section):
    enabled: bool = Field(
        default=True, description="stop trying addresses that hard-bounce or expire"
    )
    mode: Literal["bounce", "hold"] = Field(
        default="bounce",
        description="new mail to a suppressed address: bounced at once with a DSN saying why,"
        " or held (reason `suppressed`) for an operator to release",
    )
    hard_bounces: int = Field(
        default=2, ge=1, le=100, description="hard bounces within the window that suppress"
    )
    window_hours: float = Field(
        default=24.0, gt=0, le=24 * 365, description="the window hard bounces are counted in"
    )
    days: float = Field(default=30.0, gt=0, le=3650, description="how long a suppression lasts")


class WebhooksConfig(_Section):
    enabled: bool = Field(
        default=True, description="queue events for the webhook endpoints (none: costs nothing)"
    )
    flush_seconds: float = Field(
        default=0.2,
        gt=0,
        le=10,
        description="how often the engine queues its events for the sender: at most this much"
        " is lost to a kill -9 of the engine",
    )
    allow_networks: list[str] = Field(
        default_factory=list,
        description="networks webhooks may reach though not public (loopback, private,"
        ' link-local...), e.g. ["10.1.2.0/24"]; empty: public addresses only',
    )
    timeout_seconds: float = Field(
        default=10.0, gt=0, le=120, description="one request, connecting to the last byte read"
    )
    connections_per_endpoint: int = Field(
        default=4, ge=1, le=64, description="requests in flight to one endpoint at once"
    )
    max_age_hours: float = Field(
        default=24.0,
        gt=0,
        le=24 * 30,
        description="an event not delivered after this long is given up (dead-lettered)",
    )
    retry_seconds: float = Field(
        default=10.0, gt=0, le=3600, description="the first retry's delay; each next doubles"
    )
    max_retry_seconds: float = Field(
        default=3600.0, gt=0, le=86400, description="the longest delay between two retries"
    )
    breaker_failures: int = Field(
        default=5, ge=1, le=1000, description="failures in a row that pause an endpoint"
    )
    breaker_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="an endpoint's first pause; each next doubles, up to max_retry_seconds;"
        " then one request probes it",
    )
    reply_bytes: int = Field(
        default=65536, ge=1024, le=1 << 24, description="at most this much of a reply is read"
    )
    priority: Literal["idle", "low", "normal"] = Field(
        default="idle",
        description="the sender's CPU priority: idle (only CPU that mail leaves unused:"
        " SCHED_IDLE), low (nice 10) or normal; on a busy server mail goes first and the"
        " events, queued, catch up",
    )
    tls_verify: bool = Field(default=True, description="verify https receivers' certificates")
    ca_file: Path | None = Field(
        default=None,
        examples=["/etc/sendworx/webhooks-ca.pem"],
        description="certificates to trust besides the system's (PEM)",
    )

    @field_validator("allow_networks")
    @classmethod
    def _networks(cls, networks: list[str]) -> list[str]:
        for network in networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as error:
                raise ValueError(f"{network!r} is not a network: {error}") from error
        return networks


class InstanceConfig(_Section):
    helo_name: str = Field(
        default_factory=socket.getfqdn,
        min_length=1,
        max_length=253,
        description="default of control/me (EHLO name, Received: host); default this host's FQDN",
        examples=["mail.example.com"],
    )
    resolver: ResolverConfig = Field(default_factory=ResolverConfig)
    smtpd: SmtpdConfig = Field(default_factory=SmtpdConfig)
    submission: SubmissionConfig = Field(default_factory=SubmissionConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    panel: PanelConfig = Field(default_factory=PanelConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    dkim: DkimConfig = Field(default_factory=DkimConfig)
    history: HistoryConfig = Field(default_factory=HistoryConfig)
    suppression: SuppressionConfig = Field(default_factory=SuppressionConfig)
    webhooks: WebhooksConfig = Field(default_factory=WebhooksConfig)

    @field_validator("helo_name")
    @classmethod
    def _no_spaces(cls, value: str) -> str:
        if any(ch.isspace() or ord(ch) < 32 for ch in value):
            raise ValueError("must not contain spaces or control characters")
        return value


_HEADER = """\
# sendworx instance configuration. Every key is optional; the values shown are the defaults.
# The five Outbound Mail settings are not here: they are the control files in ./control
# (concurrencyremote, timeoutremote, timeoutconnect, queuelifetime, smtproutes).
"""


def _commented(name: str, field: FieldInfo) -> str:
    """One key as a comment: its default (or an example where the default depends on the
    host or is unset) and what it means."""
    if field.examples:
        value = field.examples[0]
    elif field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    shown = f"{name} = {json.dumps(value if not isinstance(value, Path) else str(value))}"
    return f"# {shown:<44} # {field.description}" if field.description else f"# {shown}"


def default_config_text() -> str:
    """The commented file `sendworx init` writes, made from the model: it cannot go stale."""
    lines = [_HEADER]
    sections = []
    for name, field in InstanceConfig.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, _Section):
            sections.append((name, annotation))
        else:
            lines.append(_commented(name, field))
    for name, section in sections:
        lines.append(f"\n[{name}]")
        lines.extend(_commented(key, field) for key, field in section.model_fields.items())
    return "\n".join(lines) + "\n"


def load_config(path: Path) -> InstanceConfig:
    """Read `path`; a missing file means every default."""
    return load_toml_model(path, InstanceConfig)


def load_toml_model(path: Path, model: type[_Model]) -> _Model:
    """A TOML file validated as `model`, every problem named; a missing file is all defaults."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return model()
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror or error}") from error
    return parse_toml_model(raw, model, str(path))


def parse_toml_model(raw: bytes, model: type[_Model], where: str) -> _Model:
    """TOML text validated as `model`; ConfigError names `where` and every problem."""
    try:
        document = tomllib.loads(raw.decode("utf-8"))
        return model.model_validate(document)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{where}: not valid TOML: {error}") from error
    except RecursionError as error:  # tomllib recurses into nested arrays and tables
        raise ConfigError(f"{where}: not valid TOML: nested too deeply") from error
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in error.errors()
        )
        raise ConfigError(f"{where}: {problems}") from error
