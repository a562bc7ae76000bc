"""Terminal verifications in group-committed batches (用卡验证, 用卡监控, anti-replay).

A verification is checked in two halves. The caller's half needs no database: the code's
format, key, check value and time (:class:`PendingUse`). The batch half runs in one
transaction for every verification waiting at that moment, on a background writer thread:

1. the calling clients are still active (for HTTP callers: a client disabled in any process
   is refused by the next batch);
2. dynamic codes are claimed in ``card_replays`` (a primary key, so across server processes
   exactly one use of a code wins; the others are ``replayed``);
3. the cards are read with one query (live card first, else the latest cancelled one) and
   their status checked (lost, frozen, cancelled, not yet active, expired, superseded);
4. holders' golden records are read for callers allowed to see demographics;
5. every use, accepted or refused, is written to ``card_uses`` with its audit record.

Nothing is answered before that transaction commits: an acknowledged verification is logged,
audited and its code spent; if the commit fails, every caller of the batch gets the error and
nothing of it is kept (the terminal may retry the same code).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from healthroam.cards.model import (
    STEP_CODES,
    Card,
    CardStatus,
    Holder,
    holder_from_golden,
    masked_document,
)
from healthroam.cards.qr import BEIJING
from healthroam.cards.repository import CardRepository
from healthroam.db.engine import Database
from healthroam.errors import HealthroamError, NotAuthenticated
from healthroam.security.audit import Action, AuditRecord, Outcome
from healthroam.security.model import Principal
from healthroam.security.repository import ClientRepository
from healthroam.security.service import AuditTrail

CARD = "Card"
# Refusal reasons about the card itself (the code was fine), with their HTTP status.
STATE_REASONS = {
    "unknown-card": 404,
    "card-not-active": 409,
    "card-lost": 409,
    "card-frozen": 409,
    "card-cancelled": 409,
    "card-expired": 409,
    "superseded": 409,
}
_STATUS_REASONS = {
    CardStatus.LOST: "card-lost",
    CardStatus.FROZEN: "card-frozen",
    CardStatus.CANCELLED: "card-cancelled",
    CardStatus.APPLIED: "card-not-active",
    CardStatus.PENDING_ACTIVATION: "card-not-active",
}
# Used codes are forgotten this long after they expire (clocks of several servers differ).
_FORGET_GRACE_SECONDS = 60
_FORGET_EVERY_SECONDS = 30.0


class CardRefused(HealthroamError):
    """A terminal's verification was refused; ``reason`` is machine-readable (see
    docs/health-card.md: QR reasons, credential reasons and :data:`STATE_REASONS`)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail, expression="text")
        self.reason = reason
        self.status = STATE_REASONS.get(reason, 400)
        self.code = {404: "not-found", 409: "conflict"}.get(self.status, "invalid")
        self.title = "Card refused"


@dataclass(frozen=True, slots=True)
class Verification:
    """An accepted card use. ``holder`` is set only for callers allowed to read demographics."""

    card: Card
    code_kind: str
    step: str
    holder: Holder | None
    masked_id_number: str | None


@dataclass(slots=True, eq=False)
class PendingUse:
    """One verification whose code has been checked and whose database half is waiting.

    ``refused`` is set when the code itself was refused (the use is still logged); else the
    card is found by ``ehc_id`` or ``card_ref``. ``code_hash``/``expires_at`` mark a dynamic
    code to be spent. ``check_client`` asks the batch to confirm the client is active.
    The outcome goes to ``waiter`` (an event loop's future) if set, else to ``future``.
    """

    principal: Principal
    now: float
    step: str
    channel: str
    terminal: str
    kind: str
    ehc_id: str | None = None
    card_ref: bytes | None = None
    code_hash: bytes | None = None
    expires_at: int | None = None
    credential_version: int | None = None
    masked: str | None = None
    refused: CardRefused | None = None
    check_client: bool = False
    future: Future[Verification] = field(default_factory=Future)
    waiter: asyncio.Future[Verification] | None = None

    @property
    def with_holder(self) -> bool:
        return self.principal.scopes.allows("Patient", "r")


def card_refusal(
    card: Card | None, now: float, credential_version: int | None
) -> CardRefused | None:
    """Why ``card`` may not be used at ``now`` (None: it may)."""
    if card is None:
        return CardRefused("unknown-card", "no card has this code")
    reason = _STATUS_REASONS.get(card.status)
    if reason:
        return CardRefused(reason, f"card is {card.status.value}")
    until = card.valid_until if card.valid_until.tzinfo else card.valid_until.replace(tzinfo=UTC)
    if until.timestamp() <= now:
        return CardRefused("card-expired", "card is past its validity")
    if (
        credential_version is not None
        and card.credential_version is not None
        and credential_version < card.credential_version
    ):
        return CardRefused("superseded", "credential belongs to a card since re-issued")
    return None


class VerificationBatcher:
    """Runs the database half of verifications, many per transaction.

    ``writers`` threads take turns: while one batch commits, the next gathers. ``flush_ms``
    adds a wait after the first use of a batch arrives (larger batches, higher latency);
    with 0 a batch is whatever arrived while the previous one was being written.
    """

    def __init__(
        self,
        db: Database,
        audit: AuditTrail,
        *,
        flush_ms: int = 0,
        writers: int = 2,
        max_batch: int = 500,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db, self.audit, self.clock = db, audit, clock
        self.flush_seconds = flush_ms / 1000
        self.writers = max(1, writers)
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: list[PendingUse] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._next_forget = 0.0
        self.batches = 0  # written so far (for tests and benchmarks)
        self.uses = 0

    # --- callers ------------------------------------------------------------------------------

    def submit(self, use: PendingUse) -> Future[Verification]:
        """Queue ``use``; its ``waiter`` or ``future`` resolves once the batch holding it has
        committed."""
        with self._cond:
            if self._closed:
                inline = True
            else:
                inline = False
                self._queue.append(use)
                if len(self._threads) < self.writers:
                    thread = threading.Thread(
                        target=self._run, name="card-verify-writer", daemon=True
                    )
                    self._threads.append(thread)
                    thread.start()
                self._cond.notify()
        if inline:
            self._process([use])
        return use.future

    def close(self) -> None:
        """Write what is queued, then stop the writers (later uses are written inline)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=10)

    # --- writers ------------------------------------------------------------------------------

    def _take(self) -> list[PendingUse] | None:
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
        if self.flush_seconds > 0 and not self._closed:
            time.sleep(self.flush_seconds)
        with self._cond:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
        return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            if batch:
                self._process(batch)

    def _process(self, batch: Sequence[PendingUse]) -> None:
        outcomes: list[Verification | BaseException]
        try:
            outcomes = list(self._write(batch))
        except BaseException as exc:  # handed to every caller of the batch
            outcomes = [exc] * len(batch)
        else:
            self.batches += 1
            self.uses += len(batch)
        # Event-loop callers are woken once per loop and batch, not once each: every wake-up
        # from this thread is a system call and a GIL hand-off.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[PendingUse, Any]]] = {}
        for use, outcome in zip(batch, outcomes, strict=True):
            if use.waiter is not None:
                by_loop.setdefault(use.waiter.get_loop(), []).append((use, outcome))
            elif isinstance(outcome, BaseException):
                use.future.set_exception(outcome)
            else:
                use.future.set_result(outcome)
        for loop, resolved in by_loop.items():
            # RuntimeError: the loop has closed, nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, resolved)

    def _write(self, batch: Sequence[PendingUse]) -> list[Verification | BaseException]:
        results: list[Verification | BaseException | None] = [None] * len(batch)
        now = self.clock()
        with self.db.transaction() as conn:
            repo = CardRepository(conn)
            clients = ClientRepository(conn)
            # 1. callers whose client was disabled meanwhile: refused, nothing logged.
            inactive = {
                client_id
                for client_id in {u.principal.client_id for u in batch if u.check_client}
                if not clients.is_active(client_id)
            }
            for i, use in enumerate(batch):
                if use.check_client and use.principal.client_id in inactive:
                    results[i] = NotAuthenticated("the client that holds this token is disabled")
            live = [i for i, r in enumerate(results) if r is None]
            # 2. spend dynamic codes; a code seen twice in one batch is spent by the first.
            refusals: dict[int, CardRefused | None] = {i: batch[i].refused for i in live}
            wanted: dict[bytes, int] = {}
            for i in live:
                use = batch[i]
                if use.refused is None and use.code_hash is not None:
                    if use.code_hash in wanted:
                        refusals[i] = _replayed()
                    else:
                        wanted[use.code_hash] = i
            claimed = repo.claim_codes([(h, batch[i].expires_at or 0) for h, i in wanted.items()])
            for code_hash, i in wanted.items():
                if code_hash not in claimed:
                    refusals[i] = _replayed()
            # 3. the cards, one query per kind of key.
            checking = [i for i in live if refusals[i] is None]
            ehc_ids = {e for e in (batch[i].ehc_id for i in checking) if e}
            refs = {r for r in (batch[i].card_ref for i in checking) if r}
            by_ehc = repo.latest_by_ehc_ids(sorted(ehc_ids))
            by_ref = repo.latest_by_card_refs(sorted(refs))
            cards: dict[int, Card | None] = {}
            for i in live:
                use = batch[i]
                card = by_ehc.get(use.ehc_id) if use.ehc_id else by_ref.get(use.card_ref or b"")
                cards[i] = card
                if refusals[i] is None:
                    refusals[i] = card_refusal(card, use.now, use.credential_version)
            # 4. holders, for callers that may read demographics.
            accepted = [i for i in live if refusals[i] is None]
            need = {cards[i].master_person_id for i in accepted if batch[i].with_holder}  # type: ignore[union-attr]
            goldens = repo.goldens(sorted(need))
            rows: list[dict[str, Any]] = []
            audits: list[AuditRecord] = []
            for i in live:
                use, card, refusal = batch[i], cards[i], refusals[i]
                holder: Holder | None = None
                if refusal is None:
                    assert card is not None
                    masked = use.masked
                    if use.with_holder:
                        holder = holder_from_golden(
                            card.master_person_id,
                            card.master_index_id,
                            goldens.get(card.master_person_id),
                        )
                        if holder.id_number:
                            masked = masked_document(holder.id_number)
                    results[i] = Verification(
                        card, use.kind, STEP_CODES[use.step][0], holder, masked if holder else None
                    )
                else:
                    results[i] = refusal
                    card = card if refusal.reason in STATE_REASONS else None
                rows.append(_use_row(use, card, refusal))
                audits.append(self._audit_record(use, card, refusal, holder))
            repo.add_uses(rows)
            self.audit.append(conn, audits)
            if now >= self._next_forget:
                self._next_forget = now + _FORGET_EVERY_SECONDS
                repo.forget_codes(int(now) - _FORGET_GRACE_SECONDS)
        return [r for r in results if r is not None]

    def _audit_record(
        self, use: PendingUse, card: Card | None, refusal: CardRefused | None, holder: Holder | None
    ) -> AuditRecord:
        detail = f"step={use.step} channel={use.channel} terminal={use.terminal}"
        return self.audit.event(
            use.principal,
            action=Action.READ if holder is not None else Action.EXECUTE,
            subtype="card-verify",
            outcome=Outcome.SUCCESS if refusal is None else Outcome.MINOR_FAILURE,
            resource_type=CARD,
            resource_id=card.id if card else None,
            patient_ref=f"MasterPerson/{card.master_index_id}" if card else None,
            detail=detail + (f" refused={refusal.reason}" if refusal else ""),
        )


def _resolve(resolved: list[tuple[PendingUse, Any]]) -> None:
    for use, outcome in resolved:
        waiter = use.waiter
        if waiter is None or waiter.done():  # cancelled meanwhile (client went away)
            continue
        if isinstance(outcome, BaseException):
            waiter.set_exception(outcome)
        else:
            waiter.set_result(outcome)


def _replayed() -> CardRefused:
    return CardRefused("replayed", "dynamic code was already used")


def _use_row(use: PendingUse, card: Card | None, refusal: CardRefused | None) -> dict[str, Any]:
    return {
        "used_at": datetime.fromtimestamp(use.now, UTC),
        "day": datetime.fromtimestamp(use.now, BEIJING).date().isoformat(),
        "institution_code": use.principal.institution_code,
        "client_id": use.principal.client_id,
        "terminal_code": use.terminal,
        "channel_code": use.channel,
        "step_code": use.step,
        "code_kind": use.kind,
        "card_id": card.id if card else None,
        "master_index_id": card.master_index_id if card else None,
        "accepted": refusal is None,
        "reason": refusal.reason if refusal else None,
    }
