"""Liveness and readiness: the only routes, with the token endpoint, that need no token."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from healthroam import __version__
from healthroam.api.auth import platform_of
from healthroam.db.migrate import current_revision, is_up_to_date

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok", "version": __version__}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    """The database answers and its schema is migrated."""
    platform = platform_of(request)
    try:
        with platform.db.transaction(readonly=True) as conn:
            conn.execute(text("SELECT 1"))
        revision = current_revision(platform.db.engine)
    except Exception as exc:  # readiness reports, it does not raise
        return JSONResponse(
            {"status": "unavailable", "database": type(exc).__name__}, status_code=503
        )
    if revision is None or not is_up_to_date(platform.db.engine):
        return JSONResponse(
            {"status": "unavailable", "database": "schema not up to date", "schema": revision},
            status_code=503,
        )
    return JSONResponse({"status": "ready", "database": platform.db.dialect, "schema": revision})
