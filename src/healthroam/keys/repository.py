"""SQL storage of the key hierarchy (table ``card_keys``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from healthroam.db.tables_cards import card_keys
from healthroam.keys.model import KeyPurpose, KeyRecord


def _record(row: Any) -> KeyRecord:
    return KeyRecord(
        key_id=row.key_id,
        purpose=KeyPurpose(row.purpose),
        algorithm=row.algorithm,
        region=row.region,
        version=row.version,
        backend=row.backend,
        public_key=bytes(row.public_key) if row.public_key is not None else None,
        valid_from=row.valid_from,
        valid_until=row.valid_until,
        publish_until=row.publish_until,
        created_at=row.created_at,
        certificate=bytes(row.certificate) if row.certificate is not None else None,
    )


_COLUMNS = [c for c in card_keys.c if c.name != "sealed_secret"]


class KeyRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def all(self) -> list[KeyRecord]:
        rows = self.conn.execute(select(*_COLUMNS).order_by(card_keys.c.key_id))
        return [_record(r) for r in rows]

    def sealed_secret(self, key_id: str) -> bytes | None:
        value = self.conn.execute(
            select(card_keys.c.sealed_secret).where(card_keys.c.key_id == key_id)
        ).scalar()
        return bytes(value) if value is not None else None

    def next_sequence(self, purpose: KeyPurpose) -> int:
        count = self.conn.execute(
            select(func.count()).select_from(card_keys).where(card_keys.c.purpose == purpose)
        ).scalar_one()
        return int(count) + 1

    def next_version(self, purpose: KeyPurpose, region: str | None) -> int:
        query = select(func.max(card_keys.c.version)).where(card_keys.c.purpose == purpose)
        query = query.where(
            card_keys.c.region == region if region is not None else card_keys.c.region.is_(None)
        )
        return int(self.conn.execute(query).scalar() or 0) + 1

    def add(self, record: KeyRecord, sealed_secret: bytes | None) -> None:
        self.conn.execute(
            insert(card_keys).values(
                key_id=record.key_id,
                purpose=record.purpose.value,
                algorithm=record.algorithm,
                region=record.region,
                version=record.version,
                backend=record.backend,
                public_key=record.public_key,
                sealed_secret=sealed_secret,
                certificate=record.certificate,
                valid_from=record.valid_from,
                valid_until=record.valid_until,
                publish_until=record.publish_until,
                created_at=record.created_at,
            )
        )

    def end(
        self, key_id: str, valid_until: int, publish_until: int | None, certificate: bytes | None
    ) -> None:
        self.conn.execute(
            update(card_keys)
            .where(card_keys.c.key_id == key_id)
            .values(valid_until=valid_until, publish_until=publish_until, certificate=certificate)
        )
