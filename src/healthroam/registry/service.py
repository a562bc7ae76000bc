"""Use cases of the population registry and master patient index (全员人口信息库 / 主索引).

register -> normalise, block, score, decide (link / new / review), all in one transaction
with the audit entry; stewards decide reviews, merge, unmerge and split; everyone else reads
through scoped clients, and every read of a person is audited.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection

from healthroam.db.engine import Database
from healthroam.errors import Conflict, Forbidden, InvalidInput, NotFound
from healthroam.registry.blocking import blocking_keys
from healthroam.registry.codec import compact_json, from_json, to_json
from healthroam.registry.model import (
    Decision,
    LinkType,
    MatchOutcome,
    NormalizedRecord,
    SourceKey,
    SourceRecord,
    check_master_index_id,
    new_master_index_id,
)
from healthroam.registry.normalize import normalize_record
from healthroam.registry.repository import (
    KnownPerson,
    MasterRow,
    NewSource,
    RegistryRepository,
    SourceRow,
)
from healthroam.registry.scoring import MatchModel, Score
from healthroam.registry.survivorship import LinkedRecord, golden_record, trust_of
from healthroam.security.audit import Action, AuditRecord
from healthroam.security.model import Principal
from healthroam.security.service import AuditTrail, Clock, utcnow

STEWARD_SCOPE = "MasterPerson"
POSITION_BATCH = 10_000  # events given feed positions per transaction (decision 0044)


@dataclass(frozen=True, slots=True)
class Registration:
    """The answer to registering a source record: which master person it joined, and how."""

    outcome: MatchOutcome
    master_index_id: str
    source_id: int
    weight: float | None = None
    reviews: int = 0
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PersonView:
    """A master person with its linked source records and merged-away predecessors."""

    master: MasterRow
    sources: list[SourceRow]
    predecessors: list[MasterRow] = field(default_factory=list)
    survivor: MasterRow | None = None  # set when the asked-for id was merged away


@dataclass(frozen=True, slots=True)
class Candidate:
    master_id: int
    source: SourceRow
    score: Score


def record_data(record: SourceRecord) -> dict[str, Any]:
    """The record as stored (JSON-ready), without its key. Keys in sorted order, so that its
    compact JSON text is also the text its content hash is taken over (``content_hash``)."""
    return {
        "address": record.address,
        "birth_date": record.birth_date.isoformat() if record.birth_date else None,
        "death_date": record.death_date.isoformat() if record.death_date else None,
        "ethnicity": record.ethnicity,
        "family": record.family,
        "fhir_patient_id": record.fhir_patient_id,
        "identifiers": [f"{i.system}|{i.value}" for i in record.identifiers],
        "name": record.name,
        "national_id": record.national_id,
        "phones": list(record.phones),
        "region": record.region,
        "sex": record.sex,
    }


def _hash(data: dict[str, Any]) -> str:
    return hashlib.sha256(compact_json(data, sort_keys=True).encode()).hexdigest()


def content_hash(data_json: str | bytes) -> str:
    """The content hash of ``record_data``'s compact JSON text (keys already sorted; as text
    or as its UTF-8 bytes): the same as ``_hash`` of the record without encoding it again."""
    raw = data_json.encode() if isinstance(data_json, str) else data_json
    return hashlib.sha256(raw).hexdigest()


def _golden_values(source: SourceRow) -> dict[str, Any]:
    return golden_values(source.data, source.normalized)


def golden_values(raw: dict[str, Any], n: dict[str, Any]) -> dict[str, Any]:
    """What survivorship takes from one source record: its stored data and normalised form."""
    return {
        "name": n.get("name") or (raw.get("name") if n.get("latin_name") else None),
        "latin_name": raw.get("name") if n.get("latin_name") else None,
        "sex": n.get("sex"),
        "birth_date": n.get("birth_date"),
        "national_id": n.get("national_id"),
        "phone": n.get("phone"),
        "address": raw.get("address"),
        "region": n.get("region"),
        "ethnicity": n.get("ethnicity"),
        "death_date": n.get("death_date"),
        "identifiers": list(n.get("identifiers") or []),
    }


ID_WARNINGS = frozenset(
    {
        "birth date differs from the one encoded in the ID number",
        "sex differs from the one encoded in the ID number",
    }
)


def different_trusted_ids(a: NormalizedRecord, b: NormalizedRecord) -> bool:
    """Two valid national IDs that differ, each consistent with its own record, are two
    people (namesakes born the same day are common in a province): never a match candidate.
    An ID that disagrees with its own record's birth date or sex is not trusted this way."""
    return (
        a.national_id is not None
        and b.national_id is not None
        and a.national_id != b.national_id
        and not ID_WARNINGS & set(a.warnings)
        and not ID_WARNINGS & set(b.warnings)
    )


class RegistryService:
    def __init__(
        self,
        db: Database,
        audit: AuditTrail,
        model: MatchModel,
        *,
        steward_agencies: Iterable[str],
        candidate_limit: int = 500,
        clock: Clock = utcnow,
    ) -> None:
        self.db, self.audit, self.model, self.clock = db, audit, model, clock
        self.steward_agencies = frozenset(steward_agencies)
        self.candidate_limit = candidate_limit

    # --- authorisation ----------------------------------------------------------------------
    def require_steward(self, principal: Principal) -> None:
        """Stewards: a client of a co-owning agency, acting for a named person."""
        if principal.institution_code not in self.steward_agencies:
            raise Forbidden(
                "only stewards of the co-owning agencies may change the registry",
                expression="institution",
            )
        if not principal.end_user:
            raise InvalidInput(
                "steward actions must name the person acting (X-End-User)", expression="X-End-User"
            )

    # --- registration -----------------------------------------------------------------------
    def register(
        self, principal: Principal, record: SourceRecord, *, today: date | None = None
    ) -> Registration:
        normalized = normalize_record(record, today=today)
        with self.db.transaction() as conn:
            result = self.register_in(conn, principal, record, normalized)
        return result

    def register_in(
        self,
        conn: Connection,
        principal: Principal,
        record: SourceRecord,
        normalized: NormalizedRecord,
        *,
        audit: bool = True,
    ) -> Registration:
        """Register inside the caller's transaction (the FHIR create and the bulk loader)."""
        repo = RegistryRepository(conn)
        institution, existing = repo.institution_and_source(record.key)
        if institution is None:
            raise NotFound(
                f"no institution with code {record.key.institution}", expression="institution"
            )
        now = self.clock()
        data = record_data(record)
        content_hash = _hash(data)
        if existing is not None and existing.content_hash == content_hash:
            master = repo.merged_into_chain(self._master(repo, existing.master_id))
            return Registration(MatchOutcome.UNCHANGED, master.master_index_id, existing.id)
        keys = blocking_keys(normalized)
        norm_json = to_json(normalized)
        if existing is not None:
            result = self._update(
                repo, principal, existing, data, normalized, norm_json, content_hash, keys, now
            )
        else:
            result = self._insert(
                repo,
                principal,
                record,
                data,
                normalized,
                norm_json,
                content_hash,
                keys,
                now,
                institution,
            )
        if audit:
            self.audit.append(
                conn,
                [
                    self._audit(
                        principal,
                        Action.CREATE if existing is None else Action.UPDATE,
                        "register",
                        result.master_index_id,
                    )
                ],
            )
        return Registration(
            result.outcome,
            result.master_index_id,
            result.source_id,
            result.weight,
            result.reviews,
            normalized.warnings,
        )

    def _insert(
        self,
        repo: RegistryRepository,
        principal: Principal,
        record: SourceRecord,
        data: dict[str, Any],
        normalized: NormalizedRecord,
        norm_json: dict[str, Any],
        content_hash: str,
        keys: frozenset[str],
        now: datetime,
        institution: tuple[str, int | None],
    ) -> Registration:
        """A new source record: linked to the best candidate's person, or a new person.
        A new person's only record is this one, so its golden record and the events' recipients
        come from it without reading it back, and its rows are written together
        (:meth:`RegistryRepository.add_person`: one pipeline on PostgreSQL)."""
        ranked = self._rank(repo, normalized, keys, exclude_source=None, exclude_master=None)
        target, outcome, weight = self._decide(normalized, ranked)
        name = normalized.name or normalized.latin_name or None
        link = {
            "event_type": "link",
            "now": now,
            **self._actor(principal),
            "detail": {"outcome": outcome.value, "weight": weight},
        }
        master_index_id: str | None
        if target is None:
            master_index_id = new_master_index_id()
            new = NewSource(
                record.key,
                LinkType.AUTO.value,
                data,
                norm_json,
                content_hash,
                record.fhir_patient_id,
                now,
            )

            def golden_of(source_id: int) -> dict[str, Any]:
                row = SourceRow(
                    source_id,
                    record.key.institution,
                    record.key.system,
                    record.key.local_id,
                    0,  # not read by survivorship
                    new.link_type,
                    data,
                    norm_json,
                    content_hash,
                    record.fhir_patient_id,
                    now,
                )
                return golden_of_sources([row], {row.institution: institution})

            create = {
                "event_type": "create",
                "now": now,
                **self._actor(principal),
                "recipients": [record.key.institution],
            }
            link.update(recipients=[record.key.institution], names_source=True)
            master_id, source_id = repo.add_person(
                master_index_id, new, keys, name, golden_of, [create, link]
            )
        else:
            # The source, its keys and name count, the golden record refreshed and the link
            # event (RegistryRepository.link_source: two pipelines on PostgreSQL).
            master_id = target
            new = NewSource(
                record.key,
                LinkType.AUTO.value,
                data,
                norm_json,
                content_hash,
                record.fhir_patient_id,
                now,
            )
            source_id, _, master_index_id = repo.link_source(
                new, master_id, keys, name, golden_of_sources, link
            )
        reviews = self._open_reviews(
            repo, source_id, master_id, ranked, normalized.national_id, now
        )
        if reviews and outcome is MatchOutcome.NEW:
            outcome = MatchOutcome.REVIEW
        if master_index_id is None:
            master_index_id = self._master(repo, master_id).master_index_id
        return Registration(outcome, master_index_id, source_id, weight, reviews)

    def _update(
        self,
        repo: RegistryRepository,
        principal: Principal,
        existing: SourceRow,
        data: dict[str, Any],
        normalized: NormalizedRecord,
        norm_json: dict[str, Any],
        content_hash: str,
        keys: frozenset[str],
        now: datetime,
    ) -> Registration:
        old_name = existing.normalized.get("name") or existing.normalized.get("latin_name")
        new_name = normalized.name or normalized.latin_name
        repo.update_source(existing.id, data, norm_json, content_hash, now)
        repo.set_keys(existing.id, keys, replace=True)
        if old_name != new_name:
            if old_name:
                repo.count_name(old_name, -1)
            if new_name:
                repo.count_name(new_name, 1)
        master_id = existing.master_id
        outcome, weight = MatchOutcome.LINKED, None
        if existing.link_type == LinkType.AUTO.value:
            others = [s for s in repo.sources_of([master_id]) if s.id != existing.id]
            if others:
                best = max(
                    self.model.score(normalized, from_json(s.normalized), self._tf(repo)).weight
                    for s in others
                )
                if best < self.model.thresholds.review:
                    # No longer looks like the others: give it a person of its own.
                    new_master = repo.add_master(new_master_index_id(), now)
                    repo.move_sources([existing.id], new_master, LinkType.AUTO.value, now)
                    repo.add_event(
                        "unlink",
                        master_id,
                        now,
                        other_master_id=new_master,
                        source_id=existing.id,
                        **self._actor(principal),
                        recipients=self._refresh_golden(repo, master_id, now),
                        reason="record changed and no longer matches",
                    )
                    master_id, outcome = new_master, MatchOutcome.NEW
            else:
                ranked = self._rank(
                    repo, normalized, keys, exclude_source=existing.id, exclude_master=master_id
                )
                target, decided, weight = self._decide(normalized, ranked)
                if target is not None:
                    moved = repo.move_all(master_id, target, now)
                    repo.set_status(master_id, "merged", target, now)
                    repo.add_event(
                        "merge",
                        target,
                        now,
                        other_master_id=master_id,
                        source_id=existing.id,
                        **self._actor(principal),
                        recipients=self._refresh_golden(repo, target, now),
                        reason="record changed and now matches",
                        detail={"moved": moved},
                    )
                    master_id, outcome = target, decided
        recipients = self._refresh_golden(repo, master_id, now)
        repo.add_event(
            "update",
            master_id,
            now,
            source_id=existing.id,
            **self._actor(principal),
            recipients=recipients,
        )
        master = self._master(repo, master_id)
        return Registration(outcome, master.master_index_id, existing.id, weight)

    # --- matching ---------------------------------------------------------------------------
    def _tf(self, repo: RegistryRepository) -> Any:
        cache: dict[str, float] = {}

        def frequency(name: str) -> float:
            if name not in cache:
                cache[name] = repo.name_frequency(name)
            return cache[name]

        return frequency

    def _rank(
        self,
        repo: RegistryRepository,
        normalized: NormalizedRecord,
        keys: frozenset[str],
        *,
        exclude_source: int | None,
        exclude_master: int | None,
    ) -> list[Candidate]:
        """Best-scoring source record per candidate master, best first."""
        rows = repo.candidates(keys, exclude_source, self.candidate_limit)
        tf = self._tf(repo)
        forbidden = repo.different_from([exclude_source]) if exclude_source else set()
        blocked_masters = {r.master_id for r in rows if r.id in forbidden}
        best: dict[int, Candidate] = {}
        for row in rows:
            if row.master_id == exclude_master or row.master_id in blocked_masters:
                continue
            other = from_json(row.normalized)
            if different_trusted_ids(normalized, other):
                continue
            score = self.model.score(normalized, other, tf)
            current = best.get(row.master_id)
            if current is None or score.weight > current.score.weight:
                best[row.master_id] = Candidate(row.master_id, row, score)
        return sorted(best.values(), key=lambda c: c.score.weight, reverse=True)

    def _decide(
        self, normalized: NormalizedRecord, ranked: Sequence[Candidate]
    ) -> tuple[int | None, MatchOutcome, float | None]:
        if not ranked:
            return None, MatchOutcome.NEW, None
        if normalized.national_id:
            same_id = [
                c
                for c in ranked
                if c.source.normalized.get("national_id") == normalized.national_id
            ]
            if same_id:
                top = same_id[0]
                other = from_json(top.source.normalized)
                birth_differs = (
                    normalized.birth_date is not None
                    and other.birth_date is not None
                    and normalized.birth_date != other.birth_date
                )
                sex_differs = (
                    normalized.sex is not None
                    and other.sex is not None
                    and normalized.sex != other.sex
                )
                if birth_differs and sex_differs:
                    # Shared or mistyped ID: a steward decides.
                    return None, MatchOutcome.REVIEW, top.score.weight
                return top.master_id, MatchOutcome.LINKED, top.score.weight
        top = ranked[0]
        if top.score.weight >= self.model.thresholds.link:
            return top.master_id, MatchOutcome.LINKED, top.score.weight
        outcome = (
            MatchOutcome.REVIEW
            if top.score.weight >= self.model.thresholds.review
            else MatchOutcome.NEW
        )
        return None, outcome, top.score.weight

    def _open_reviews(
        self,
        repo: RegistryRepository,
        source_id: int,
        master_id: int,
        ranked: Sequence[Candidate],
        national_id: str | None,
        now: datetime,
    ) -> int:
        """Send every other plausible person to stewards (and any sharing the ID number)."""
        opened = 0
        for candidate in ranked:
            if candidate.master_id == master_id:
                continue
            same_id = (
                national_id is not None
                and candidate.source.normalized.get("national_id") == national_id
            )
            if candidate.score.weight < self.model.thresholds.review and not same_id:
                continue
            details = {
                "levels": candidate.score.explain(),
                "probability": candidate.score.probability,
            }
            if repo.add_review(
                source_id, candidate.source.id, candidate.score.weight, details, now
            ):
                opened += 1
        return opened

    # --- golden record ----------------------------------------------------------------------
    @staticmethod
    def _keep_apart(
        repo: RegistryRepository,
        principal: Principal,
        moved: Iterable[int],
        kept: Iterable[int],
        now: datetime,
    ) -> None:
        """Record the steward's decision that each moved source record is a different person
        from each kept one, so matching never links them again."""
        kept = list(kept)
        for a in moved:
            for b in kept:
                repo.set_decision(
                    a,
                    b,
                    Decision.DIFFERENT.value,
                    now,
                    principal.end_user,
                    principal.institution_code,
                )

    def _refresh_golden(self, repo: RegistryRepository, master_id: int, now: datetime) -> list[str]:
        sources = repo.sources_of([master_id])
        kinds = repo.institutions_of(s.institution for s in sources)
        return self._set_golden(repo, master_id, sources, kinds, now)

    @staticmethod
    def _set_golden(
        repo: RegistryRepository,
        master_id: int,
        sources: Sequence[SourceRow],
        kinds: dict[str, tuple[str, int | None]],
        now: datetime,
    ) -> list[str]:
        """Store the golden record of ``sources`` (all of the master's); their institutions."""
        repo.set_golden(master_id, golden_of_sources(sources, kinds), now)
        return sorted({s.institution for s in sources})

    # --- stewardship ------------------------------------------------------------------------
    def decide_review(
        self, principal: Principal, review_id: int, decision: Decision, reason: str | None
    ) -> dict[str, Any]:
        self.require_steward(principal)
        with self.db.transaction() as conn:
            repo = RegistryRepository(conn)
            review = repo.review(review_id, lock=True)
            if review is None:
                raise NotFound(f"no review {review_id}", expression="review")
            if review.status != "open":
                raise Conflict(
                    f"review {review_id} was already decided ({review.status})", expression="review"
                )
            now = self.clock()
            source = repo.source(review.source_id)
            candidate = repo.source(review.candidate_source_id)
            assert source is not None
            assert candidate is not None
            repo.set_decision(
                source.id,
                candidate.id,
                decision.value,
                now,
                principal.end_user,
                principal.institution_code,
            )
            repo.close_review(
                review_id,
                decision.value,
                now,
                principal.end_user,
                principal.institution_code,
                reason,
            )
            survivor_id = candidate.master_id
            if decision is Decision.SAME and source.master_id != candidate.master_id:
                self._merge(repo, principal, survivor_id, source.master_id, reason, now)
                repo.move_sources(
                    [source.id, candidate.id], survivor_id, LinkType.VERIFIED.value, now
                )
            elif decision is Decision.SAME:
                repo.move_sources(
                    [source.id, candidate.id], survivor_id, LinkType.VERIFIED.value, now
                )
            elif source.master_id == candidate.master_id:
                self._split(repo, principal, source.master_id, [source.id], reason, now)
            master = self._master(repo, repo.source(source.id).master_id)  # type: ignore[union-attr]
            self.audit.append(
                conn,
                [self._audit(principal, Action.UPDATE, "review-decision", master.master_index_id)],
            )
        return {
            "review": review_id,
            "decision": decision.value,
            "master_index_id": master.master_index_id,
        }

    def merge(
        self, principal: Principal, survivor_mii: str, merged_mii: str, reason: str | None
    ) -> str:
        self.require_steward(principal)
        with self.db.transaction() as conn:
            repo = RegistryRepository(conn)
            survivor = self._active(repo, survivor_mii, "survivor")
            merged = self._active(repo, merged_mii, "merged")
            if survivor.id == merged.id:
                raise InvalidInput("a person cannot be merged into itself", expression="source")
            self._merge(repo, principal, survivor.id, merged.id, reason, self.clock())
            self.audit.append(
                conn, [self._audit(principal, Action.UPDATE, "merge", survivor.master_index_id)]
            )
        return survivor.master_index_id

    def _merge(
        self,
        repo: RegistryRepository,
        principal: Principal,
        survivor_id: int,
        merged_id: int,
        reason: str | None,
        now: datetime,
    ) -> None:
        recipients = {s.institution for s in repo.sources_of([survivor_id, merged_id])}
        moved = repo.move_all(merged_id, survivor_id, now)
        repo.set_status(merged_id, "merged", survivor_id, now)
        self._refresh_golden(repo, survivor_id, now)
        repo.add_event(
            "merge",
            survivor_id,
            now,
            other_master_id=merged_id,
            **self._actor(principal),
            reason=reason,
            recipients=recipients,
            detail={"moved": moved},
        )

    def merge_sources_in(
        self,
        conn: Connection,
        principal: Principal,
        survivor: SourceKey,
        merged: SourceKey,
        reason: str,
    ) -> str:
        """A source merged two of its own records (HL7 v2 A40): put both on the survivor's
        person, merging the persons when they differ (undone by :meth:`unmerge` like any
        merge), and pin both records there (link type ``steward``) so a later update of
        either does not split them again. Runs in the caller's transaction; the caller has
        checked that ``principal`` holds both records. Returns the master index ID."""
        repo = RegistryRepository(conn)
        kept, gone = repo.source_by_key(survivor), repo.source_by_key(merged)
        if kept is None or gone is None:
            raise NotFound("no such source record", expression="source")
        now = self.clock()
        if kept.master_id != gone.master_id:
            self._merge(repo, principal, kept.master_id, gone.master_id, reason, now)
        repo.move_sources([kept.id, gone.id], kept.master_id, LinkType.STEWARD.value, now)
        master = self._master(repo, kept.master_id)
        self.audit.append(
            conn, [self._audit(principal, Action.UPDATE, "source-merge", master.master_index_id)]
        )
        return master.master_index_id

    def unmerge(self, principal: Principal, merged_mii: str, reason: str | None) -> str:
        """Undo a merge: the merged-away person comes back with the records it brought."""
        self.require_steward(principal)
        with self.db.transaction() as conn:
            repo = RegistryRepository(conn)
            merged = self._master_by_mii(repo, merged_mii, "merged")
            if merged.status != "merged" or merged.merged_into is None:
                raise Conflict("this person is not merged into another", expression="merged")
            event = repo.last_merge_event(merged.id)
            moved = [int(i) for i in ((event.detail or {}).get("moved") or [])] if event else []
            survivor_id = merged.merged_into
            now = self.clock()
            back = [s.id for s in repo.sources_of([survivor_id]) if s.id in set(moved)]
            repo.move_sources(back, merged.id, LinkType.STEWARD.value, now)
            repo.set_status(merged.id, "active", None, now)
            remaining = [s.id for s in repo.sources_of([survivor_id])]
            self._keep_apart(repo, principal, back, remaining, now)
            recipients = set(self._refresh_golden(repo, survivor_id, now))
            recipients |= set(self._refresh_golden(repo, merged.id, now))
            repo.add_event(
                "unmerge",
                survivor_id,
                now,
                other_master_id=merged.id,
                **self._actor(principal),
                reason=reason,
                recipients=recipients,
                detail={"moved": back},
            )
            self.audit.append(
                conn, [self._audit(principal, Action.UPDATE, "unmerge", merged.master_index_id)]
            )
        return merged.master_index_id

    def split(
        self, principal: Principal, mii: str, source_ids: Sequence[int], reason: str | None
    ) -> str:
        """Move the given source records of a person to a new person."""
        self.require_steward(principal)
        with self.db.transaction() as conn:
            repo = RegistryRepository(conn)
            master = self._active(repo, mii, "person")
            new_id = self._split(repo, principal, master.id, source_ids, reason, self.clock())
            new_master = self._master(repo, new_id)
            self.audit.append(
                conn, [self._audit(principal, Action.UPDATE, "split", master.master_index_id)]
            )
        return new_master.master_index_id

    def _split(
        self,
        repo: RegistryRepository,
        principal: Principal,
        master_id: int,
        source_ids: Sequence[int],
        reason: str | None,
        now: datetime,
    ) -> int:
        members = {s.id for s in repo.sources_of([master_id])}
        wanted = list(dict.fromkeys(source_ids))
        if not wanted or not set(wanted) <= members:
            raise InvalidInput(
                "split takes source records of this person", expression="sourceRecords"
            )
        if set(wanted) == members:
            raise InvalidInput(
                "a split must leave at least one record with the person", expression="sourceRecords"
            )
        new_id = repo.add_master(new_master_index_id(), now)
        repo.move_sources(wanted, new_id, LinkType.STEWARD.value, now)
        self._keep_apart(repo, principal, wanted, members - set(wanted), now)
        recipients = set(self._refresh_golden(repo, master_id, now))
        recipients |= set(self._refresh_golden(repo, new_id, now))
        repo.add_event(
            "split",
            master_id,
            now,
            other_master_id=new_id,
            **self._actor(principal),
            reason=reason,
            recipients=recipients,
            detail={"moved": wanted},
        )
        return new_id

    # --- reading ----------------------------------------------------------------------------
    def person(self, principal: Principal, mii: str, *, purpose: str = "read") -> PersonView:
        check_master_index_id(mii, "id")
        with self.db.transaction() as conn:
            repo = RegistryRepository(conn)
            view = self._view(repo, mii)
            self.audit.append(
                conn, [self._audit(principal, Action.READ, purpose, view.master.master_index_id)]
            )
        return view

    def _view(self, repo: RegistryRepository, mii: str) -> PersonView:
        asked = self._master_by_mii(repo, mii, "id")
        survivor = repo.merged_into_chain(asked)
        return PersonView(
            master=asked,
            sources=repo.sources_of([asked.id]) if asked.status == "active" else [],
            predecessors=repo.predecessors(asked.id),
            survivor=survivor if survivor.id != asked.id else None,
        )

    def resolve(self, mii: str) -> PersonView:
        """Without auditing: for callers that audit the read themselves ($everything)."""
        with self.db.transaction(readonly=True) as conn:
            return self._view(RegistryRepository(conn), mii)

    def fhir_patients_in(self, conn: Connection, mii: str) -> tuple[str, list[str]]:
        """The person's current master index id (merges followed) and the FHIR Patient ids of
        every source record linked to it: the person across institutions ($everything,
        $recent-results). Callers audit what they read."""
        repo = RegistryRepository(conn)
        return self._fhir_patients(repo, self._master_by_mii(repo, mii, "id"))

    @staticmethod
    def _fhir_patients(repo: RegistryRepository, asked: MasterRow) -> tuple[str, list[str]]:
        person = KnownPerson.of(repo, asked)
        return person.master.master_index_id, person.fhir_patient_ids

    def fhir_patients_of_patient_in(
        self, conn: Connection, patient_id: str
    ) -> tuple[str, list[str]] | None:
        """:meth:`fhir_patients_in` of the person a stored FHIR Patient was registered as
        (None when it was not), in two queries where no merge is to be followed."""
        found = self.person_of_patient_in(conn, patient_id)
        return None if found is None else (found.master.master_index_id, found.fhir_patient_ids)

    def person_of_live_patient_in(
        self, conn: Connection, patient_id: str
    ) -> tuple[bool, KnownPerson | None]:
        """Whether a FHIR Patient with this id is stored and not deleted, and
        :meth:`person_of_patient_in` (the existence and the master in one query)."""
        repo = RegistryRepository(conn)
        stored, master = repo.master_of_live_patient(patient_id)
        return stored, None if master is None else KnownPerson.of(repo, master)

    def person_of_patient_in(self, conn: Connection, patient_id: str) -> KnownPerson | None:
        """The person (merges followed) a stored FHIR Patient was registered as, with the
        source records read on the way (None when it was not registered)."""
        repo = RegistryRepository(conn)
        master = repo.master_of_fhir_patient(patient_id)
        return None if master is None else KnownPerson.of(repo, master)

    def source_patient(self, patient_id: str) -> tuple[SourceRow, MasterRow] | None:
        with self.db.transaction(readonly=True) as conn:
            repo = RegistryRepository(conn)
            source = repo.source_by_fhir_id(patient_id)
            if source is None:
                return None
            return source, self._master(repo, source.master_id)

    def history(self, principal: Principal, mii: str) -> list[dict[str, Any]]:
        view = self.person(principal, mii, purpose="history")
        with self.db.transaction(readonly=True) as conn:
            repo = RegistryRepository(conn)
            ids = {view.master.id} | {p.id for p in view.predecessors}
            rows = repo.history(ids)
            masters = repo.masters(
                {r.master_id for r in rows} | {r.other_master_id for r in rows if r.other_master_id}
            )
        return [self._event_json(r, masters) for r in rows]

    def events(self, principal: Principal, after: int, limit: int) -> list[dict[str, Any]]:
        institution = (
            None
            if principal.institution_code in self.steward_agencies
            else principal.institution_code
        )
        self.position_events()
        with self.db.transaction(readonly=True) as conn:
            repo = RegistryRepository(conn)
            rows = repo.events_for(institution, after, limit)
            masters = repo.masters(
                {r.master_id for r in rows} | {r.other_master_id for r in rows if r.other_master_id}
            )
        return [self._event_json(r, masters) for r in rows]

    def position_events(self) -> int:
        """Hand feed positions to every committed event still without one (decision 0044);
        how many. Each batch in its own short write transaction."""
        with self.db.transaction(readonly=True) as conn:
            if not RegistryRepository(conn).events_unpositioned():
                return 0
        total = 0
        while True:
            with self.db.transaction() as conn:
                given = RegistryRepository(conn).position_events(POSITION_BATCH)
            total += given
            if given < POSITION_BATCH:
                return total

    def reviews(
        self, principal: Principal, status: str | None, limit: int, after: int | None
    ) -> list[dict[str, Any]]:
        self.require_steward(principal)
        with self.db.transaction() as conn:
            repo = RegistryRepository(conn)
            rows = repo.reviews(status, limit, after)
            result = []
            for row in rows:
                source = repo.source(row.source_id)
                candidate = repo.source(row.candidate_source_id)
                assert source is not None
                assert candidate is not None
                result.append(
                    {
                        "id": row.id,
                        "status": row.status,
                        "weight": row.weight,
                        "details": row.details,
                        "created_at": row.created_at.isoformat(),
                        "record": self._source_json(repo, source),
                        "candidate": self._source_json(repo, candidate),
                        "decided_by": row.decided_by,
                        "decided_agency": row.decided_agency,
                        "reason": row.reason,
                    }
                )
            self.audit.append(conn, [self._audit(principal, Action.READ, "review-list", None)])
        return result

    def _source_json(self, repo: RegistryRepository, source: SourceRow) -> dict[str, Any]:
        master = self._master(repo, source.master_id)
        return {
            "id": source.id,
            "institution": source.institution,
            "system": source.id_system,
            "local_id": source.local_id,
            "master_index_id": master.master_index_id,
            "link_type": source.link_type,
            "data": source.data,
        }

    def _event_json(self, row: Any, masters: dict[int, MasterRow]) -> dict[str, Any]:
        other = masters.get(row.other_master_id) if row.other_master_id else None
        return {
            "seq": row.seq,
            "position": row.position,
            "type": row.event_type,
            "occurred_at": row.occurred_at.isoformat(),
            "master_index_id": masters[row.master_id].master_index_id,
            "other_master_index_id": other.master_index_id if other else None,
            "source_record": row.source_id,
            "actor": {
                "institution": row.actor_institution,
                "user": row.actor_user,
                "client": row.actor_client,
            },
            "reason": row.reason,
            "institutions": row.institutions,
            "detail": row.detail,
        }

    def candidates_for(
        self, principal: Principal, record: SourceRecord, limit: int
    ) -> list[tuple[PersonView, Score]]:
        """PDQm $match: the best master persons for a (possibly partial) record."""
        normalized = normalize_record(record)
        with self.db.transaction() as conn:
            repo = RegistryRepository(conn)
            ranked = self._rank(
                repo,
                normalized,
                blocking_keys(normalized),
                exclude_source=None,
                exclude_master=None,
            )[:limit]
            views = [
                (self._view(repo, self._master(repo, c.master_id).master_index_id), c.score)
                for c in ranked
            ]
            self.audit.append(
                conn,
                [
                    self._audit(principal, Action.EXECUTE, "match", v.master.master_index_id)
                    for v, _ in views
                ]
                or [self._audit(principal, Action.EXECUTE, "match", None)],
            )
        return views

    def masters_by_identifier(self, system: str, value: str) -> set[int]:
        from healthroam.registry.model import MASTER_INDEX_SYSTEM, NATIONAL_ID_SYSTEM
        from healthroam.registry.normalize import normalize_national_id

        with self.db.transaction(readonly=True) as conn:
            repo = RegistryRepository(conn)
            if system == MASTER_INDEX_SYSTEM:
                master = repo.master_by_index_id(value.upper())
                return {repo.merged_into_chain(master).id} if master else set()
            if system == NATIONAL_ID_SYSTEM:
                try:
                    value = normalize_national_id(value).number
                except InvalidInput:
                    return set()
                return repo.masters_with_key(f"id:{value}")
            return repo.masters_with_key(f"ox:{system}|{value.strip().upper()}")

    def rank(self, normalized: NormalizedRecord) -> list[Candidate]:
        """The matching engine alone: candidates through the blocking index, scored, best
        first (no writes, no audit: callers that show the result audit it)."""
        with self.db.transaction(readonly=True) as conn:
            return self._rank(
                RegistryRepository(conn),
                normalized,
                blocking_keys(normalized),
                exclude_source=None,
                exclude_master=None,
            )

    def index_id_of(self, master_id: int) -> str:
        with self.db.transaction(readonly=True) as conn:
            return self._master(RegistryRepository(conn), master_id).master_index_id

    def search(
        self,
        principal: Principal,
        *,
        master_ids: set[int] | None,
        name_prefix: str | None,
        name_contains: str | None,
        birth_date: str | None,
        sex: str | None,
        limit: int,
    ) -> list[PersonView]:
        with self.db.transaction() as conn:
            repo = RegistryRepository(conn)
            masters = repo.search_masters(
                master_ids=master_ids,
                name_prefix=name_prefix,
                name_contains=name_contains,
                birth_date=birth_date,
                sex=sex,
                limit=limit,
            )
            views = [
                PersonView(m, repo.sources_of([m.id]), repo.predecessors(m.id)) for m in masters
            ]
            records = [
                self._audit(principal, Action.EXECUTE, "search-type", v.master.master_index_id)
                for v in views
            ]
            self.audit.append(
                conn, records or [self._audit(principal, Action.EXECUTE, "search-type", None)]
            )
        return views

    # --- helpers ----------------------------------------------------------------------------
    def _master(self, repo: RegistryRepository, master_id: int) -> MasterRow:
        master = repo.master(master_id)
        assert master is not None
        return master

    def _master_by_mii(self, repo: RegistryRepository, mii: str, field_name: str) -> MasterRow:
        master = repo.master_by_index_id(check_master_index_id(mii, field_name))
        if master is None:
            raise NotFound("no person with this master index ID", expression=field_name)
        return master

    def _active(self, repo: RegistryRepository, mii: str, field_name: str) -> MasterRow:
        master = self._master_by_mii(repo, mii, field_name)
        if master.status != "active":
            raise Conflict(
                "this person was merged into another; use the survivor", expression=field_name
            )
        return master

    @staticmethod
    def _actor(principal: Principal) -> dict[str, Any]:
        return {
            "actor_institution": principal.institution_code,
            "actor_user": principal.end_user,
            "actor_client": principal.client_id,
        }

    def _audit(
        self, principal: Principal, action: Action, subtype: str, mii: str | None
    ) -> AuditRecord:
        return self.audit.event(
            principal,
            action=action,
            subtype=subtype,
            resource_type="Patient",
            resource_id=mii,
            patient_ref=f"Patient/{mii}" if mii else None,
        )


def golden_of_sources(
    sources: Sequence[SourceRow], kinds: dict[str, tuple[str, int | None]]
) -> dict[str, Any]:
    """The golden record of a master person's source records (``kinds``: their institutions'
    kind and level)."""
    return golden_record(
        [
            LinkedRecord(
                s.id,
                s.institution,
                trust_of(*kinds.get(s.institution, ("", None))),
                s.updated_at,
                _golden_values(s),
                s.fhir_patient_id,
            )
            for s in sources
        ]
    )


def today_utc() -> date:
    return datetime.now(UTC).date()
