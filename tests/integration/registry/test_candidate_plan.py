"""The real-time matcher's candidate query stays an index look-up per blocking key under the
generic plan PostgreSQL settles on for a prepared statement (psycopg prepares on the fifth
execution), never a walk over every blocking key."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import text

from healthroam.bootstrap import Platform
from healthroam.registry import repository


def _generic_plan(platform: Platform, sql: str) -> str:
    numbered = {"keys": "$1", "limit": "$2", "exclude": "$3"}
    prepared = re.sub(r"%\((\w+)\)s", lambda m: numbered[m.group(1)], sql)
    with platform.db.transaction() as conn:
        # 20,000 people and no statistics yet (as between a load and its ANALYZE, or with
        # autovacuum off): the generic plan of ``key = ANY($1)`` then walked the source-id
        # index filtering every blocking key.
        conn.execute(
            text(
                "INSERT INTO institutions (code, name, kind, region, active, created_at)"
                " VALUES ('PLAN', 'plan', 'hospital', '460100', true, now())"
            )
        )
        conn.execute(
            text(
                "INSERT INTO master_persons (id, master_index_id, status, golden, version,"
                " created_at, updated_at) SELECT g, lpad(g::text, 64, '0'), 'active', '{}', 1,"
                " now(), now() FROM generate_series(1, 20000) g"
            )
        )
        conn.execute(
            text(
                "INSERT INTO source_records (id, institution_code, id_system, local_id,"
                " master_id, link_type, data, normalized, content_hash, created_at,"
                " updated_at) SELECT g, 'PLAN', 'mrn', g::text, g, 'auto', '{}', '{}', '',"
                " now(), now() FROM generate_series(1, 20000) g"
            )
        )
        conn.execute(
            text(
                "INSERT INTO mpi_blocking_keys (key, source_id)"
                " SELECT k || ':' || (g % 5000)::text, g FROM generate_series(1, 20000) g,"
                " unnest(ARRAY['n', 'b', 'p', 'i', 'a']) k"
            )
        )
        conn.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        types = "varchar[], integer" + (", bigint" if "$3" in prepared else "")
        conn.execute(text(f"PREPARE candidates ({types}) AS {prepared}"))
        args = "ARRAY['n:1', 'b:2'], 200" + (", 7" if "$3" in prepared else "")
        plan = "\n".join(conn.execute(text(f"EXPLAIN EXECUTE candidates({args})")).scalars())
        conn.execute(text("DEALLOCATE candidates"))
    return plan


@pytest.mark.parametrize("statement", ["_PG_CANDIDATES_ANY", "_PG_CANDIDATES_EXCLUDING"])
def test_candidates_are_looked_up_by_key_under_a_generic_plan(
    platform: Platform, statement: str
) -> None:
    if platform.db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite neither prepares generic plans nor runs this statement")
    plan = _generic_plan(platform, getattr(repository, statement).sql)
    assert "pk_mpi_blocking_keys" in plan, plan
    assert "Seq Scan on mpi_blocking_keys" not in plan, plan
    assert "ix_mpi_blocking_keys_source_id" not in plan, plan
