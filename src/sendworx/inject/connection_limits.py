"""How many connections one listener worker holds: overall, and per client address for
clients outside `relay_networks`, which can send nothing and could only hold connections
(Postfix exempts its own networks the same way: `smtpd_client_event_limit_exceptions`)."""

from __future__ import annotations

from collections import Counter


class ConnectionLimits:
    def __init__(self, max_total: int, max_per_address: int) -> None:
        self._max_total = max_total
        self._max_per_address = max_per_address
        self._total = 0
        self._by_address: Counter[str] = Counter()

    def admit(self, address: str, *, exempt: bool) -> bool:
        """Count a new connection from `address` if the limits allow it (then `release` it
        when it ends); False: refuse it."""
        if self._total >= self._max_total:
            return False
        if not exempt:
            if self._by_address[address] >= self._max_per_address:
                return False
            self._by_address[address] += 1
        self._total += 1
        return True

    def release(self, address: str, *, exempt: bool) -> None:
        self._total -= 1
        if not exempt:
            self._by_address[address] -= 1
            if not self._by_address[address]:
                del self._by_address[address]
