"""The engine's hourly look after DKIM keys (`dkim.check_seconds`), in a worker thread:

1. retiring keys whose time has come are retired (their records may then be removed);
2. with `dkim.rotate_days`, an active key that old gets a successor, pending under a new
   selector: its record is logged and shown for the operator to publish;
3. every key in use has its record looked up through the engine's resolver: the
   `sendworx_dkim_record_ok` metric says what DNS shows, a log line what is wrong;
4. a pending key whose record DNS now shows becomes the domain's signing key, and the one it
   replaces starts retiring for the queue's lifetime (rotation with no gap, step 2).

Nothing here touches a message: signing happens at the door (shared/dkim_signer.py), which
reads the keys' states from keys.json as they change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sendworx.engine.metrics import EngineMetrics
from sendworx.shared.config import ResolverConfig
from sendworx.shared.dkim_dns import check_record
from sendworx.shared.dkim_keys import DkimKey, InputError, KeyStore

log = logging.getLogger("sendworx.dkim")
DAY_SECONDS = 86400
IN_USE = ("pending", "active", "retiring")


@dataclass
class DkimUpkeep:
    store: KeyStore
    resolver: ResolverConfig
    metrics: EngineMetrics
    queue_lifetime: Callable[[], float]  # how long a replaced key keeps retiring
    rotate_days: int  # 0: no automatic rotation
    stopping: Callable[[], bool]  # checked between lookups: a stop waits for one at most

    def run(self, now: float) -> None:
        for key in self.store.retire_due(now):
            log.info("DKIM key %s retired: its record may be removed", _name(key))
        if self.rotate_days:
            self._rotate_old_keys(now)
        self.metrics.dkim_record_ok.clear()
        for key in self.store.all_keys():
            if key.state not in IN_USE or self.stopping():
                continue
            check = check_record(key, self.resolver)
            ok = check.status == "ok"
            self.metrics.dkim_record_ok.labels(key.domain, key.selector, key.state).set(int(ok))
            if ok and key.state == "pending":
                self._activate(key, now)
            elif not ok:
                detail = f": {check.detail}" if check.detail else ""
                log.warning("DKIM record of %s (%s) is %s%s", _name(key), key.state,
                            check.status, detail)  # fmt: skip

    def _activate(self, key: DkimKey, now: float) -> None:
        try:
            self.store.activate(key.domain, key.selector, self.queue_lifetime(), now)
        except InputError as error:  # aborted or deleted since it was read
            log.info("DKIM key %s not activated: %s", _name(key), error)
            return
        log.info("DKIM key %s signs from now on: DNS shows its record", _name(key))

    def _rotate_old_keys(self, now: float) -> None:
        """A pending successor for each active key older than `rotate_days`, unless its
        domain already has one of that algorithm."""
        with self.store.changing():
            keys = self.store.all_keys()
            waiting = {(key.domain, key.algorithm) for key in keys if key.state == "pending"}
            for key in keys:
                since = key.activated or key.created
                old = now - since >= self.rotate_days * DAY_SECONDS
                if key.state != "active" or not old or (key.domain, key.algorithm) in waiting:
                    continue
                successor = self.store.add(
                    key.domain,
                    algorithm=key.algorithm,
                    bits=key.bits if key.algorithm == "rsa" else 2048,
                    origins=key.origins,
                    testing=key.testing,
                    pending=True,
                    now=now,
                )
                waiting.add((key.domain, key.algorithm))
                log.warning(
                    "DKIM key %s is %d days old: publish %s TXT %s; it signs once DNS shows it",
                    _name(key),
                    int((now - since) // DAY_SECONDS),
                    successor.record_name,
                    successor.record_text,
                )


def _name(key: DkimKey) -> str:
    return f"{key.selector} of {key.domain}"
