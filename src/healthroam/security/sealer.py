"""The background sealer: moves committed audit entries into the hash chain, in batches."""

from __future__ import annotations

import logging
import threading

from healthroam.security.service import AuditTrail

log = logging.getLogger("healthroam.audit")


class AuditSealer:
    """A daemon thread that calls ``audit.seal()`` every ``interval_ms`` (0: never starts).

    Several processes may each run one: sealing takes the chain head's lock, so they take turns
    and the chain stays one total order. The server runs it only in its leader process
    (``db/leader.py``, decision 0048), so that N processes do not contend for that lock.
    """

    def __init__(self, audit: AuditTrail, interval_ms: int) -> None:
        self.audit, self.interval = audit, interval_ms / 1000
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval <= 0 or self._thread is not None:
            return
        self._stop.clear()  # started again after a stop (leadership regained)
        self._thread = threading.Thread(target=self._run, name="audit-sealer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.audit.seal()
            except Exception as exc:  # keep sealing; the entries stay safe in the inbox
                log.warning("audit sealing failed: %s", type(exc).__name__)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        try:
            self.audit.seal()  # leave nothing waiting at shutdown
        except Exception as exc:
            log.warning("audit sealing at shutdown failed: %s", type(exc).__name__)
