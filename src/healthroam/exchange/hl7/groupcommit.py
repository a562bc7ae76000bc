"""Group commit: many connections' messages, one transaction, one commit, then every ACK.

Writer threads (the synchronous SQLAlchemy engine, off the event loop) take whatever messages
are waiting, up to a maximum, and apply each in its own savepoint of one transaction. A message
that fails rolls back only its savepoint and gets its AE/AR; the others are unaffected. After
the commit returns, each message's ACK is handed back to its connection. While one group
commits, the next one gathers, so batches grow with the load and a lone message is not held
back by any timer.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass

from healthroam.exchange.hl7.service import (
    Deliver,
    GatewayService,
    NeedsSavepoints,
    Outcome,
    Prepared,
    Race,
    Refusal,
)

log = logging.getLogger("healthroam.exchange.hl7")

_STOP = None


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A received message not yet decoded: the writer thread prepares it, so that decoding and
    parsing (CPU) stay off the event loop."""

    payload: bytes
    peer: str | None


Job = Prepared | RawMessage


class GroupCommitter:
    def __init__(self, service: GatewayService, *, threads: int = 1, batch_max: int = 200) -> None:
        self.service = service
        self.threads = 1 if service.db.dialect == "sqlite" else max(1, threads)
        self.batch_max = batch_max
        self._queue: queue.Queue[tuple[Job, Deliver] | None] = queue.Queue()
        self._workers: list[threading.Thread] = []
        self.batches = 0
        self.messages = 0
        self.retries = 0  # batches applied again with savepoints

    def start(self) -> None:
        for n in range(self.threads):
            worker = threading.Thread(target=self._run, name=f"hl7-writer-{n}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def submit(self, job: Job, deliver: Deliver) -> None:
        """Queue one message; ``deliver`` is called (from a writer thread) with its outcome
        once the transaction holding it has committed, or with None when nothing was stored."""
        self._queue.put((job, deliver))

    def close(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then stop the writers."""
        for _ in self._workers:
            self._queue.put(_STOP)
        for worker in self._workers:
            worker.join(timeout)
        self._workers.clear()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            stop = False
            while len(batch) < self.batch_max:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            try:
                self._commit(batch)
            except Exception as exc:  # never let the writer thread die
                log.error("hl7 writer error (%s)", type(exc).__name__)
                for _, deliver in batch:
                    _safe(deliver, None)
            if stop:
                return

    def _commit(self, batch: list[tuple[Job, Deliver]]) -> None:
        prepared: list[tuple[Prepared, Deliver]] = []
        for job, deliver in batch:
            if isinstance(job, RawMessage):
                try:
                    job = self.service.prepare(job.payload, job.peer)
                except Exception as exc:  # a decoding bug must not stop the writer
                    log.error(
                        "hl7 message not decodable (%s); connection closed", type(exc).__name__
                    )
                    _safe(deliver, None)
                    continue
            prepared.append((job, deliver))
        if not prepared:
            return
        jobs = [job for job, _ in prepared]
        try:
            try:  # optimistic: no savepoints (two statements less per message)
                with self.service.db.transaction() as conn:
                    results, view = self.service.apply_batch(conn, jobs, savepoints=False)
            except NeedsSavepoints:  # one failed after writing: again, one savepoint each
                self.retries += 1
                with self.service.db.transaction() as conn:
                    results, view = self.service.apply_batch(conn, jobs, savepoints=True)
        except Exception as exc:
            log.error(
                "hl7 group commit of %d messages failed (%s); none acknowledged",
                len(prepared),
                type(exc).__name__,
            )
            for job, deliver in prepared:
                _safe(deliver, Outcome(job.ack, job.code) if isinstance(job, Refusal) else None)
            return
        view.log_refusals()
        self.batches += 1
        self.messages += len(prepared)
        for (_, deliver), result in zip(prepared, results, strict=True):
            if isinstance(result, Race):
                try:
                    result = self.service.resolve_race(result)
                except Exception as exc:
                    log.error("hl7 stored ACK not readable (%s)", type(exc).__name__)
                    result = None
            _safe(deliver, result)


def _safe(deliver: Deliver, outcome: Outcome | None) -> None:
    try:
        deliver(outcome)
    except Exception as exc:  # a closed event loop must not kill the writer
        log.debug("hl7 ACK not delivered (%s)", type(exc).__name__)
