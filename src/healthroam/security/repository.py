"""SQL storage for institutions, API clients and used client-assertion ids."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from healthroam.db.raw import RawSelect, is_postgres
from healthroam.db.schema import api_clients, client_assertions, institutions
from healthroam.security.model import ApiClient, Institution, InstitutionKind
from healthroam.security.scopes import ScopeSet


def _institution(row: Any) -> Institution:
    return Institution(
        code=row.code,
        name=row.name,
        kind=InstitutionKind(row.kind),
        region=row.region,
        level=row.level,
        active=row.active,
    )


# Read for every order's duplicate-test alerts and care decisions: built once.
_INSTITUTION = select(institutions).where(institutions.c.code == bindparam("code"))
_PG_INSTITUTION = RawSelect(_INSTITUTION)  # through psycopg (db/raw.py)


class InstitutionRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, institution: Institution, now: datetime) -> bool:
        """Insert; False when the code is already taken."""
        try:
            with self.conn.begin_nested():
                self.conn.execute(
                    insert(institutions).values(
                        code=institution.code,
                        name=institution.name,
                        kind=institution.kind.value,
                        level=institution.level,
                        region=institution.region,
                        active=institution.active,
                        created_at=now,
                    )
                )
        except IntegrityError:
            return False
        return True

    def get(self, code: str) -> Institution | None:
        if is_postgres(self.conn):
            row = _PG_INSTITUTION.first(self.conn, {"code": code})
        else:
            row = self.conn.execute(_INSTITUTION, {"code": code}).first()
        return _institution(row) if row else None

    def list(self) -> list[Institution]:
        rows = self.conn.execute(select(institutions).order_by(institutions.c.code))
        return [_institution(r) for r in rows]


def _client(row: Any) -> ApiClient:
    return ApiClient(
        client_id=row.client_id,
        institution_code=row.institution_code,
        name=row.name,
        scopes=ScopeSet.parse(row.scopes),
        active=row.active,
        created_at=row.created_at,
        has_secret=row.secret_hash is not None,
        jwks=row.jwks,
    )


class ClientRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, client: ApiClient, secret_hash: str | None) -> None:
        self.conn.execute(
            insert(api_clients).values(
                client_id=client.client_id,
                institution_code=client.institution_code,
                name=client.name,
                secret_hash=secret_hash,
                jwks=client.jwks,
                scopes=str(client.scopes),
                active=client.active,
                created_at=client.created_at,
            )
        )

    def get(self, client_id: str) -> ApiClient | None:
        row = self.conn.execute(
            select(api_clients).where(api_clients.c.client_id == client_id)
        ).first()
        return _client(row) if row else None

    def secret_hash(self, client_id: str) -> str | None:
        return self.conn.execute(
            select(api_clients.c.secret_hash).where(api_clients.c.client_id == client_id)
        ).scalar()

    def is_active(self, client_id: str) -> bool:
        """Whether the client and its institution are both active (checked on every request)."""
        row = self.conn.execute(
            select(api_clients.c.active, institutions.c.active)
            .join(institutions, institutions.c.code == api_clients.c.institution_code)
            .where(api_clients.c.client_id == client_id)
        ).first()
        return bool(row and row[0] and row[1])

    def set_active(self, client_id: str, active: bool, now: datetime) -> bool:
        result = self.conn.execute(
            update(api_clients)
            .where(api_clients.c.client_id == client_id)
            .values(active=active, disabled_at=None if active else now)
        )
        return result.rowcount == 1

    def list(self, institution_code: str | None = None) -> list[ApiClient]:
        query = select(api_clients).order_by(api_clients.c.created_at)
        if institution_code:
            query = query.where(api_clients.c.institution_code == institution_code)
        return [_client(r) for r in self.conn.execute(query)]

    def remember_assertion(self, client_id: str, jti: str, expires_at: datetime) -> bool:
        """Record a client-assertion id; False if it was seen before (a replay)."""
        try:
            with self.conn.begin_nested():
                self.conn.execute(
                    insert(client_assertions).values(
                        client_id=client_id, jti=jti, expires_at=expires_at
                    )
                )
        except IntegrityError:
            return False
        return True

    def forget_expired_assertions(self, now: datetime) -> None:
        self.conn.execute(delete(client_assertions).where(client_assertions.c.expires_at < now))
