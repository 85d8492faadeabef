"""The listener's connection caps (inject/connection_limits.py)."""

from __future__ import annotations

from sendworx.inject.connection_limits import ConnectionLimits


def test_caps_overall_and_per_address_with_exempt_clients_counted_overall_only() -> None:
    limits = ConnectionLimits(max_total=4, max_per_address=2)
    assert limits.admit("192.0.2.1", exempt=False)
    assert limits.admit("192.0.2.1", exempt=False)
    assert not limits.admit("192.0.2.1", exempt=False)
    assert limits.admit("192.0.2.2", exempt=False)
    assert limits.admit("127.0.0.1", exempt=True)
    assert not limits.admit("127.0.0.1", exempt=True)  # four open: the overall cap
    limits.release("192.0.2.1", exempt=False)
    assert limits.admit("192.0.2.1", exempt=False)
    limits.release("127.0.0.1", exempt=True)
    limits.release("192.0.2.2", exempt=False)
    assert limits.admit("127.0.0.1", exempt=True) and limits.admit("127.0.0.1", exempt=True)
