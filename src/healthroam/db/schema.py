"""The relational schema, one ``MetaData`` for every area (Alembic migrates it).

Tables are grouped by the domain folder that owns them; only that folder's repository reads
or writes them. Areas with many tables keep them in ``db/tables_<area>.py`` (imported at the
end of this module so that ``metadata`` always holds every table); each area's migrations form
their own Alembic branch from ``0001``, and ``db upgrade`` applies all heads.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Computed,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement

from healthroam.db.metadata import BigId, Document, metadata

__all__ = ["metadata"]

# --- security: institutions, API clients ---------------------------------------------------

institutions = Table(
    "institutions",
    metadata,
    Column("code", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("level", Integer, nullable=True),
    Column("region", String(6), nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

api_clients = Table(
    "api_clients",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column(
        "institution_code",
        String(64),
        ForeignKey("institutions.code"),
        nullable=False,
        index=True,
    ),
    Column("name", String(200), nullable=False),
    Column("secret_hash", String(200), nullable=True),
    Column("jwks", Document, nullable=True),
    Column("scopes", Text, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("disabled_at", DateTime(timezone=True), nullable=True),
)

# jti values of accepted private_key_jwt assertions, kept until they expire (replay guard).
client_assertions = Table(
    "client_assertions",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)

# --- security: audit trail ------------------------------------------------------------------

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, index=True),
    Column("action", String(1), nullable=False),  # C R U D E (FHIR AuditEvent.action)
    Column("event_type", String(32), nullable=False),  # rest | query | auth | admin ...
    Column("subtype", String(64), nullable=False),  # read, create, search-type, token ...
    Column("outcome", String(2), nullable=False),  # 0 4 8 12 (AuditEvent.outcome)
    Column("client_id", String(64), nullable=True),
    Column("institution_code", String(64), nullable=True),
    Column("end_user", String(200), nullable=True),
    Column("purpose_of_use", String(32), nullable=False),
    Column("resource_type", String(64), nullable=True),
    Column("resource_id", String(128), nullable=True),
    Column("patient_ref", String(200), nullable=True, index=True),
    Column("query", Text, nullable=True),
    Column("source_address", String(64), nullable=True),
    Column("detail", Text, nullable=True),
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
)

# Audit entries committed with the data they describe, waiting to be sealed into the chain.
# Writers only insert here (no lock), so audited transactions run in parallel; one sealer at a
# time moves them, in batches, into audit_events under the head lock.
audit_inbox = Table(
    "audit_inbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("action", String(1), nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("subtype", String(64), nullable=False),
    Column("outcome", String(2), nullable=False),
    Column("client_id", String(64), nullable=True),
    Column("institution_code", String(64), nullable=True),
    Column("end_user", String(200), nullable=True),
    Column("purpose_of_use", String(32), nullable=False),
    Column("resource_type", String(64), nullable=True),
    Column("resource_id", String(128), nullable=True),
    Column("patient_ref", String(200), nullable=True),
    Column("query", Text, nullable=True),
    Column("source_address", String(64), nullable=True),
    Column("detail", Text, nullable=True),
)

# One row: the chain's head. Appends lock it, so the chain is a total order; deleting the
# newest entries is caught because the head no longer matches.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
)

# --- records: FHIR resources ----------------------------------------------------------------


class StoredBodyTail(ColumnElement[str]):
    """The expression of ``fhir_resources.body_tail``: the stored document's JSON text as the
    database writes it, without ``meta`` and without its opening brace (``}`` for an empty
    body; NULL for a deletion), i.e. exactly what ``substr((content - 'meta')::text, 2)``
    gave the read paths before (decision 0055). Serving reads and ``$everything`` from it
    spares PostgreSQL writing each ``jsonb`` as text (and cutting its first character, a walk
    over the UTF-8 text) at every read; it is written once, with the row. SQLite stores the
    text itself, so there the column is virtual (computed when read, as before)."""

    inherit_cache = True
    type = Text()


@compiles(StoredBodyTail, "postgresql")
def _body_tail_postgresql(element: StoredBodyTail, compiler: Any, **kw: Any) -> str:
    # '-' rebuilds the whole document: only for the few with a stored meta.
    return (
        "CASE WHEN jsonb_typeof(content) = 'object' THEN substr(("
        "CASE WHEN content ? 'meta' THEN content - 'meta' ELSE content END)::text, 2) END"
    )


@compiles(StoredBodyTail)
def _body_tail_sqlite(element: StoredBodyTail, compiler: Any, **kw: Any) -> str:
    return (
        "CASE WHEN json_type(content) = 'object' THEN substr(json_remove(content, '$.meta'), 2) END"
    )


fhir_resources = Table(
    "fhir_resources",
    metadata,
    Column("resource_type", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("institution_code", String(64), nullable=True),
    Column("content", Document, nullable=True),
    # Computed by the database from content, never written by the application (migration
    # 0012_bodytail, decision 0055): stored on PostgreSQL; the migration adds it to SQLite as
    # a virtual column (SQLite adds no stored one to an existing table, and has the text).
    Column("body_tail", Text, Computed(StoredBodyTail(), persisted=True), nullable=True),
    Index("ix_fhir_resources_type_updated", "resource_type", "last_updated"),
)

fhir_resource_versions = Table(
    "fhir_resource_versions",
    metadata,
    Column("resource_type", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("method", String(8), nullable=False),
    Column("content", Document, nullable=True),
)


# Areas in their own modules (import for the side effect of registering their tables).
from healthroam.db import tables_bulk as tables_bulk  # noqa: E402
from healthroam.db import tables_cards as tables_cards  # noqa: E402
from healthroam.db import tables_care as tables_care  # noqa: E402
from healthroam.db import tables_clinicians as tables_clinicians  # noqa: E402
from healthroam.db import tables_exchange as tables_exchange  # noqa: E402
from healthroam.db import tables_recognition as tables_recognition  # noqa: E402
from healthroam.db import tables_records as tables_records  # noqa: E402
from healthroam.db import tables_registry as tables_registry  # noqa: E402
