"""Bulk issuance (批量发卡): a card for every active master person in scope who has none.

Resumable and idempotent: people are taken in master-person id order in batches; each batch's
cards, their events, one audit record and the run's resume point commit in one transaction.
A crash loses at most the batch in flight; running again continues after the last committed
batch, and people who already hold a card that is not cancelled are never given a second.

Signing runs in ``workers`` processes (each opens its own signer from a
:class:`~healthroam.keys.backends.SignerSpec`) while the main process reads and writes the
database, with a bounded number of batches in flight. If a worker process dies (killed, out of
memory) the run stops with :class:`~healthroam.errors.Unavailable` instead of waiting for the
lost batch for ever; what committed before stays, and running again continues from there.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from healthroam.cards.cose import Signer
from healthroam.cards.issuing import card_material
from healthroam.cards.model import (
    CardKind,
    CardStatus,
    Holder,
    holder_from_golden,
    masked_document,
    region_prefix,
)
from healthroam.cards.repository import CardRepository
from healthroam.cards.service import CardService
from healthroam.errors import InvalidInput, Unavailable
from healthroam.keys.backends import SignerSpec, open_signer
from healthroam.keys.model import KeyPurpose
from healthroam.security.audit import Action

# One row of the personalisation file for the card vendor (documented in docs/health-card.md).
CSV_COLUMNS = (
    "card_id",
    "kind",
    "ehc_id",
    "master_index_id",
    "name",
    "sex",
    "birth_date",
    "id_type",
    "masked_id_number",
    "region",
    "issuer",
    "valid_from",
    "valid_until",
    "status",
    "static_code",
    "credential",
)

# (card id, holder fields..., region, issuing key id, status version, issued at, expires at)
WorkItem = tuple[str, int, str, str, str, str, int, str, str, str, int, int, int]
Signed = list[tuple[str, str, bytes, str, str]]  # (card id, EHC ID, card ref, credential, code)
# A batch on its way: (signing result, work items, card rows by id, last master id, skipped).
InFlight = tuple["Future[Signed] | _Done", list[WorkItem], dict[str, Any], int, int]

WORKER_LOST = (
    "a card-signing worker process died (killed, or out of memory?); the cards of every "
    "batch committed before it are kept: run the same command again to continue"
)


@dataclass
class IssueSummary:
    run_id: str
    scope: str
    issued: int = 0
    skipped: int = 0
    skipped_reasons: Counter[str] = field(default_factory=Counter)
    resumed: bool = False
    seconds: float = 0.0
    csv_path: Path | None = None


# --- worker side ---------------------------------------------------------------------------

_W: dict[str, Any] = {}


def _init_worker(specs: dict[str, SignerSpec], root_key: bytes, issuer: str) -> None:
    _W["signers"] = {key_id: open_signer(spec) for key_id, spec in specs.items()}
    _W["root"], _W["issuer"] = root_key, issuer


def _sign_batch(items: list[WorkItem]) -> Signed:
    signers: dict[str, Signer] = _W["signers"]
    out = []
    for card_id, mpid, mid, name, birth, id_type, sex, id_number, region, kid, ver, t, exp in items:
        holder = Holder(mpid, mid, name, sex, date.fromisoformat(birth), region, id_type, id_number)
        material = card_material(
            holder,
            _W["root"],
            signers[kid],
            region=region,
            issuer=_W["issuer"],
            status_version=ver,
            issued_at=t,
            expires_at=exp,
        )
        out.append(
            (card_id, material.ehc_id, material.card_ref, material.credential, material.static_code)
        )
    return out


# --- main side ---------------------------------------------------------------------------


class BulkIssuer:
    def __init__(self, cards: CardService, *, workers: int = 2, batch_size: int = 2000) -> None:
        if batch_size < 1:
            raise InvalidInput("batch size must be positive", expression="batchSize")
        self.cards, self.workers, self.batch_size = cards, workers, batch_size
        self.db, self.keys, self.policy = cards.db, cards.keys, cards.policy

    def _scope(self, region: str | None, all_: bool) -> tuple[str, str | None]:
        if all_ == (region is not None):
            raise InvalidInput("give either a region or --all", expression="region")
        if region is None:
            return "all", None
        return region, region_prefix(region)

    def run(
        self,
        *,
        region: str | None = None,
        all_: bool = False,
        activate: bool = False,
        csv_path: Path | None = None,
        progress: Callable[[int, int], None] | None = None,
        after_batch: Callable[[int], None] | None = None,
    ) -> IssueSummary:
        """Issue cards in scope; ``progress(issued, skipped)`` after each batch commits."""
        scope, prefix = self._scope(region, all_)
        self.keys.current(KeyPurpose.ISSUING)  # fail early without keys
        root_id, root_key = self.keys.symmetric(KeyPurpose.EHC_ROOT)
        now = datetime.now(UTC)
        with self.db.transaction() as conn:
            repo = CardRepository(conn)
            run = repo.unfinished_run(scope)
            if run is None:
                run_id = f"R{now:%Y%m%d%H%M%S}-{uuid.uuid4().hex[:8]}"
                repo.start_run(run_id, scope, now)
                cursor, resumed = 0, False
            else:
                run_id, cursor, resumed = run.run_id, run.last_master_id, True
        summary = IssueSummary(run_id, scope, resumed=resumed)
        started = time.perf_counter()
        specs = {
            r.key_id: self.keys.signer_spec(r.key_id)
            for r in self.keys.records()
            if r.purpose is KeyPurpose.ISSUING and r.in_use_at(now.timestamp())
        }
        key_for: dict[str, str] = {}

        def issuing_key(card_region: str) -> str:
            if card_region not in key_for:
                key_for[card_region] = self.keys.current(KeyPurpose.ISSUING, card_region).key_id
            return key_for[card_region]

        status = CardStatus.ACTIVE if activate else CardStatus.PENDING_ACTIVATION
        batches = self._batches(cursor, prefix, summary, issuing_key, now)
        if self.workers > 0:
            method = "forkserver" if os.name == "posix" else "spawn"
            # Not multiprocessing.Pool: a Pool whose worker dies waits for the lost batch for
            # ever; the executor breaks, and every pending result raises BrokenProcessPool.
            pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context(method),
                initializer=_init_worker,
                initargs=(specs, root_key, self.policy.issuer_code),
            )
            try:
                pending: deque[InFlight] = deque()
                for items, rows, last_id, skipped in batches:
                    pending.append((pool.submit(_sign_batch, items), items, rows, last_id, skipped))
                    if len(pending) > 2 * self.workers:
                        self._commit(pending.popleft(), run_id, root_id, status, summary, now)
                        self._report(summary, progress, after_batch)
                while pending:
                    self._commit(pending.popleft(), run_id, root_id, status, summary, now)
                    self._report(summary, progress, after_batch)
            except BrokenProcessPool:
                raise Unavailable(WORKER_LOST, expression="workers") from None
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        else:
            _init_worker(specs, root_key, self.policy.issuer_code)
            for items, rows, last_id, skipped in batches:
                done = _Done(_sign_batch(items))
                self._commit(
                    (done, items, rows, last_id, skipped), run_id, root_id, status, summary, now
                )
                self._report(summary, progress, after_batch)
        with self.db.transaction() as conn:
            CardRepository(conn).advance_run(
                run_id,
                self._cursor,
                0,
                0,
                datetime.now(UTC),
                finished=True,
                summary={"issued": summary.issued, "skipped": dict(summary.skipped_reasons)},
            )
        self.cards._trust_dirty = True
        if csv_path is not None:
            summary.csv_path = self.export_csv(run_id, csv_path)
        summary.seconds = time.perf_counter() - started
        return summary

    _cursor = 0

    def _report(
        self,
        summary: IssueSummary,
        progress: Callable[[int, int], None] | None,
        after_batch: Callable[[int], None] | None,
    ) -> None:
        if progress is not None:
            progress(summary.issued, summary.skipped)
        if after_batch is not None:
            after_batch(summary.issued)

    def _batches(
        self,
        cursor: int,
        prefix: str | None,
        summary: IssueSummary,
        issuing_key: Callable[[str], str],
        now: datetime,
    ) -> Iterator[tuple[list[WorkItem], dict[str, Any], int, int]]:
        """(work items, card rows by id, last master id, people skipped) per batch."""
        t = int(now.timestamp())
        self._cursor = cursor
        while True:
            with self.db.transaction(readonly=True) as conn:
                people, last = CardRepository(conn).persons_without_card(cursor, self.batch_size)
            if last is None:
                return
            cursor = last
            if not people:
                continue
            items: list[WorkItem] = []
            rows: dict[str, Any] = {}
            skipped = 0
            for person in people:
                holder = holder_from_golden(person.id, person.master_index_id, person.golden)
                card_region = holder.region or self.policy.default_region
                if prefix is not None and not card_region.startswith(prefix):
                    continue
                reason = _unissuable(holder)
                if reason:
                    skipped += 1
                    summary.skipped_reasons[reason] += 1
                    continue
                assert holder.name is not None
                assert holder.birth_date is not None
                assert holder.id_type is not None
                assert holder.id_number is not None
                kind = holder.kind
                days = (
                    self.policy.temporary_validity_days
                    if kind is CardKind.TEMPORARY
                    else 365 * self.policy.validity_years + 2
                )
                valid_until = now + timedelta(days=days)
                expires = min(
                    int(valid_until.timestamp()), t + self.policy.credential_validity_days * 86_400
                )
                card_id = uuid.uuid4().hex
                items.append(
                    (
                        card_id,
                        person.id,
                        person.master_index_id,
                        holder.name,
                        holder.birth_date.isoformat(),
                        holder.id_type,
                        holder.sex,
                        holder.id_number,
                        card_region,
                        issuing_key(card_region),
                        1,
                        t,
                        expires,
                    )
                )
                rows[card_id] = {
                    "id": card_id,
                    "master_person_id": person.id,
                    "master_index_id": person.master_index_id,
                    "kind": kind.value,
                    "card_no": None,
                    "id_type": holder.id_type,
                    "region": card_region,
                    "issuer": self.policy.issuer_code,
                    "valid_from": now,
                    "valid_until": valid_until,
                    "credential_version": 1,
                    "created_at": now,
                    "updated_at": now,
                }
            yield items, rows, cursor, skipped

    def _commit(
        self,
        pending: InFlight,
        run_id: str,
        root_id: str,
        status: CardStatus,
        summary: IssueSummary,
        now: datetime,
    ) -> None:
        result, items, rows, last_id, skipped = pending
        signed = result.result()
        card_rows, events = [], []
        for (card_id, ehc_id, ref, credential, static_code), item in zip(
            signed, items, strict=True
        ):
            row = rows[card_id]
            row.update(
                ehc_id=ehc_id,
                card_ref=ref,
                credential=credential,
                static_code=static_code,
                status=status.value,
                status_version=1,
                issuing_key_id=item[9],
                ehc_root_key_id=root_id,
                batch_id=run_id,
            )
            card_rows.append(row)
            events.append(
                {
                    "card_id": card_id,
                    "occurred_at": now,
                    "action": "issue",
                    "from_status": None,
                    "to_status": status.value,
                    "status_version": 1,
                    "client_id": None,
                    "institution_code": self.policy.issuer_code,
                    "end_user": None,
                    "reason": f"bulk issuance {run_id}",
                }
            )
        with self.db.transaction() as conn:
            repo = CardRepository(conn)
            repo.add_cards(card_rows, bulk=True)
            repo.add_events(events, bulk=True)
            repo.advance_run(run_id, last_id, len(card_rows), skipped, datetime.now(UTC))
            if card_rows:
                self.cards.audit.append(
                    conn,
                    [
                        self.cards.audit.event(
                            None,
                            action=Action.CREATE,
                            subtype="card-bulk-issue",
                            event_type="admin",
                            resource_type="Card",
                            query=f"run={run_id}",
                            detail=f"{len(card_rows)} cards, master persons up to id {last_id}",
                        )
                    ],
                )
        self._cursor = last_id
        summary.issued += len(card_rows)
        summary.skipped += skipped

    def export_csv(self, run_id: str, path: Path) -> Path:
        """Write the personalisation file of a run (mode 0600: it holds names)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            with self.db.transaction(readonly=True) as conn:
                for card, golden in CardRepository(conn).batch(run_id):
                    holder = holder_from_golden(card.master_person_id, card.master_index_id, golden)
                    writer.writerow(
                        (
                            card.id,
                            card.kind.value,
                            card.ehc_id,
                            card.master_index_id,
                            holder.name,
                            holder.sex,
                            holder.birth_date.isoformat() if holder.birth_date else "",
                            card.id_type,
                            masked_document(holder.id_number) if holder.id_number else "",
                            card.region,
                            card.issuer,
                            card.valid_from.date().isoformat(),
                            card.valid_until.date().isoformat(),
                            card.status.value,
                            card.static_code,
                            card.credential,
                        )
                    )
        return path


class _Done:
    """A finished result with the ``result()`` of a Future (in-process signing)."""

    def __init__(self, value: Signed) -> None:
        self.value = value

    def result(self) -> Signed:
        return self.value


def _unissuable(holder: Holder) -> str | None:
    if holder.id_type is None or holder.id_number is None:
        return "no-identity-document"
    if not holder.name:
        return "no-name"
    if holder.birth_date is None:
        return "no-birth-date"
    return None
