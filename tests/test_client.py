"""sendworx.client against a real panel: typed payloads, one exception per status, TLS pinning."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator

import pytest
import trustme
from support.net import free_port
from support.panel import Panel, control_file

from sendworx.client import (
    ActionFailed,
    AsyncClient,
    AuthenticationFailed,
    CertificateRejected,
    Client,
    PermissionDenied,
    TimedOut,
    UnknownAction,
    Unreachable,
    ValidationFailed,
    ca_context,
    calls,
    pinned_context,
)


def _https(panel: Panel) -> str:
    return f"https://127.0.0.1:{panel.https_port}"


def _client(panel: Panel, auth: object = None, **options: object) -> Client:
    options.setdefault("verify", ca_context(str(panel.ca)))
    return Client(_https(panel), panel.key if auth is None else auth, **options)  # type: ignore[arg-type]


def test_typed_payloads_and_a_real_update(panel: Panel) -> None:
    with _client(panel) as api:
        assert api.run(calls.is_running()) is False
        assert api.run(calls.service_info())["ctrl"] == "/nodeworx/mail/send"
        api.run(calls.update({"queue_lifetime": 3600}))
        assert api.run(calls.query_update())["queue_lifetime"] == 3600
    assert control_file(panel.home, "queuelifetime") == "3600\n"


def test_each_status_raises_its_own_exception(panel: Panel) -> None:
    limited = panel.add_user("ops@example.test", "SERVICES")
    with _client(panel) as api:
        with pytest.raises(ValidationFailed) as invalid:
            api.run(calls.update({"concurrency_remote": -1, "timeout_connect": "x"}))
        assert invalid.value.problems == {
            "concurrency_remote": "must be between 0 and 1000",
            "timeout_connect": "must be an integer",
        }
        with pytest.raises(UnknownAction):
            api.run(calls.route("/nodeworx/mail/send", "explode"))
        with pytest.raises(ActionFailed) as failed:
            api.run(calls.route("/nodeworx/mail/send", "fail"))
        assert (failed.value.status, failed.value.reply_code) == (1, 500)
    with _client(panel, "wrong key") as api, pytest.raises(AuthenticationFailed):
        api.run(calls.is_running())
    with _client(panel, limited) as api, pytest.raises(PermissionDenied):
        api.run(calls.is_running())


def test_login_switches_to_a_session(panel: Panel) -> None:
    with _client(panel, {"email": panel.email, "password": panel.password}) as api:
        session = api.login()
        assert api.auth == {"sessionid": session}
        assert api.run(calls.is_running()) is False


def test_async_client_runs_the_same_calls(panel: Panel) -> None:
    async def scenario() -> tuple[bool, str]:
        async with AsyncClient(_https(panel), panel.key, verify=ca_context(str(panel.ca))) as api:
            results = await asyncio.gather(
                api.run(calls.is_running()),
                api.run(calls.route("/nodeworx/mail/send", "listServiceName")),
            )
            with pytest.raises(ValidationFailed):
                await api.run(calls.update({"timeout_remote": 0}))
            return results[0], results[1]

    assert asyncio.run(scenario()) == (False, "send")


def test_a_pinned_certificate_is_the_only_one_accepted(panel: Panel) -> None:
    presented = ssl.get_server_certificate(("127.0.0.1", panel.https_port))
    with _client(panel, verify=pinned_context(presented)) as api:
        assert api.run(calls.is_running()) is False
    stranger = trustme.CA().cert_pem.bytes().decode()
    with _client(panel, verify=pinned_context(stranger)) as api, pytest.raises(CertificateRejected):
        api.run(calls.is_running())


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def test_no_reply_is_a_client_error_that_says_why(silent_port: int) -> None:
    with Client(f"http://127.0.0.1:{free_port()}", "k") as api, pytest.raises(Unreachable):
        api.run(calls.is_running())
    with (
        Client(f"http://127.0.0.1:{silent_port}", "k", timeout=0.5) as api,
        pytest.raises(TimedOut),
    ):
        api.run(calls.is_running())
