"""SQL storage of FHIR resources: the current row plus an append-only version table."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from healthroam.db.schema import fhir_resource_versions, fhir_resources
from healthroam.records.model import StoredResource


class ResourceRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def create(
        self,
        resource_type: str,
        resource_id: str,
        content: dict[str, Any],
        now: datetime,
        institution_code: str | None,
    ) -> StoredResource:
        body = {k: v for k, v in content.items() if k not in ("resourceType", "id")}
        meta = {
            k: v
            for k, v in (body.get("meta") or {}).items()
            if k not in ("versionId", "lastUpdated")
        }
        if meta:
            body["meta"] = meta
        else:
            body.pop("meta", None)
        self.conn.execute(
            insert(fhir_resources).values(
                resource_type=resource_type,
                id=resource_id,
                version=1,
                last_updated=now,
                deleted=False,
                institution_code=institution_code,
                content=body,
            )
        )
        self.conn.execute(
            insert(fhir_resource_versions).values(
                resource_type=resource_type,
                id=resource_id,
                version=1,
                last_updated=now,
                deleted=False,
                method="POST",
                content=body,
            )
        )
        return StoredResource(resource_type, resource_id, 1, now, body)

    def read(self, resource_type: str, resource_id: str) -> tuple[StoredResource | None, bool]:
        """The current version, and whether the resource exists but is deleted."""
        row = self.conn.execute(
            select(fhir_resources).where(
                fhir_resources.c.resource_type == resource_type, fhir_resources.c.id == resource_id
            )
        ).first()
        if row is None:
            return None, False
        if row.deleted:
            return None, True
        return StoredResource(
            row.resource_type, row.id, row.version, row.last_updated, row.content
        ), False
