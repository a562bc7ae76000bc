"""Alembic, driven from code: ``healthroam db upgrade`` calls :func:`upgrade`."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", "healthroam.db:migrations")
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "heads") -> None:
    """Bring the schema to ``revision`` (default: the newest of every area's branch)."""
    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        heads = MigrationContext.configure(conn).get_current_heads()
    return "+".join(sorted(heads)) if heads else None


def expected_heads() -> set[str]:
    """The newest revision of every branch in the code."""
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", "healthroam.db:migrations")
    return set(ScriptDirectory.from_config(config).get_heads())


def is_up_to_date(engine: Engine) -> bool:
    current = current_revision(engine)
    return current is not None and set(current.split("+")) == expected_heads()
