"""FHIR interactions on the shared health record, each audited."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from healthroam.db.engine import Database
from healthroam.errors import Forbidden, Gone, InvalidInput, NotFound
from healthroam.records.model import StoredResource, patient_reference
from healthroam.records.repository import ResourceRepository
from healthroam.records.validation import validate_resource
from healthroam.registry.fhir import fhir_path, patient_to_source
from healthroam.registry.normalize import normalize_record
from healthroam.registry.service import Registration, RegistryService
from healthroam.security.audit import Action, Outcome
from healthroam.security.model import Principal
from healthroam.security.service import AuditTrail, Clock, utcnow


def require(principal: Principal, resource_type: str, interaction: str) -> None:
    """Refuse unless the principal's scopes grant ``interaction`` on ``resource_type``."""
    if not principal.scopes.allows(resource_type, interaction):
        raise Forbidden(
            f"token scopes do not allow '{interaction}' on {resource_type} "
            f"(need system/{resource_type}.{interaction})",
            expression=resource_type,
        )


@dataclass(frozen=True, slots=True)
class Created:
    stored: StoredResource
    registration: Registration | None = None  # for a Patient: the master person it joined


class RecordService:
    def __init__(
        self, db: Database, audit: AuditTrail, registry: RegistryService, clock: Clock = utcnow
    ) -> None:
        self.db, self.audit, self.registry, self.clock = db, audit, registry, clock

    def create(self, principal: Principal, resource_type: str, body: Any) -> Created:
        """Store a new resource; a Patient is also registered (matched) in the registry, in
        the same transaction, so the answer can say which master person it joined."""
        require(principal, resource_type, "c")
        resource = validate_resource(body, resource_type)
        resource_id = str(uuid.uuid4())
        source = None
        if resource_type == "Patient":
            record, paths = patient_to_source(resource, principal.institution_code, resource_id)
            try:
                source = (record, normalize_record(record))
            except InvalidInput as error:
                raise fhir_path(error, paths) from None
        registration = None
        with self.db.transaction() as conn:
            stored = ResourceRepository(conn).create(
                resource_type, resource_id, resource, self.clock(), principal.institution_code
            )
            if source is not None:
                registration = self.registry.register_in(conn, principal, *source)
            self.audit.append(
                conn,
                [
                    self.audit.event(
                        principal,
                        action=Action.CREATE,
                        subtype="create",
                        resource_type=resource_type,
                        resource_id=resource_id,
                        patient_ref=patient_reference(resource_type, resource_id, resource),
                    )
                ],
            )
        return Created(stored, registration)

    def read(self, principal: Principal, resource_type: str, resource_id: str) -> StoredResource:
        require(principal, resource_type, "r")
        with self.db.transaction() as conn:
            stored, deleted = ResourceRepository(conn).read(resource_type, resource_id)
            outcome = Outcome.SUCCESS if stored else Outcome.MINOR_FAILURE
            self.audit.append(
                conn,
                [
                    self.audit.event(
                        principal,
                        action=Action.READ,
                        subtype="read",
                        outcome=outcome,
                        resource_type=resource_type,
                        resource_id=resource_id,
                        patient_ref=patient_reference(resource_type, resource_id, stored.content)
                        if stored
                        else None,
                        detail=None if stored else ("deleted" if deleted else "not found"),
                    )
                ],
            )
        if stored is None:
            if deleted:
                raise Gone(
                    f"{resource_type}/{resource_id} has been deleted", expression=resource_type
                )
            raise NotFound(f"{resource_type}/{resource_id} is not known", expression=resource_type)
        return stored
