"""The FastAPI application: routers, error handlers, access log. Built by ``create_app``."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from healthroam import __version__
from healthroam.api import (
    bulk,
    cards,
    care,
    fhir,
    fhir_registry,
    health,
    recognition,
    registry,
    token,
    web,
)
from healthroam.api.errors import install_error_handlers
from healthroam.api.fhir_read import FhirReadFastPath
from healthroam.bootstrap import Platform, build
from healthroam.config import get_settings
from healthroam.db.leader import LeaderElection
from healthroam.db.statistics import StatisticsRefresher
from healthroam.db.tables_records import STORE_TABLES
from healthroam.logs import configure_logging
from healthroam.records.bulk_export import ExportWorker
from healthroam.records.search_params import search_index
from healthroam.security.sealer import AuditSealer

access_log = logging.getLogger("healthroam.access")

# Every router the app serves, in order. Tests enumerate this to check each route's auth.
# Terminals verify cards at the highest rate of any route: the cards router comes before the
# FHIR routers so a verification is matched against a handful of routes, not every FHIR one
# (no path overlaps: each router has its own prefix).
ROUTERS = (
    health.router,
    token.router,
    cards.router,
    fhir.public_router,
    bulk.router,
    fhir_registry.router,
    recognition.fhir_router,
    fhir.router,
    registry.router,
    care.router,
    recognition.router,
)
# Pages for people (the clinician page): authenticated by a session cookie, not a bearer token,
# and left out of the OpenAPI document. tests/browser and tests/integration/web cover them.
PAGE_ROUTERS = (web.router,)


class AccessLog:
    """Logs each request (method, path without query string: query strings can carry
    identifiers such as ?identifier=<ID number>, status, time) and answers with its
    X-Request-Id. A plain ASGI middleware: Starlette's BaseHTTPMiddleware costs a task group
    and a body stream per request, a third of the CPU of a card verification."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # A request id needs to be unique, not secret: os.urandom (uuid4) is a system call that
        # hands the GIL to the background writers and costs the event loop milliseconds.
        request_id = (
            next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), None)
            or f"{random.getrandbits(128):032x}"
        )
        header = (b"x-request-id", request_id.encode("latin-1"))
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [h for h in message.get("headers", ()) if h[0] != b"x-request-id"]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        await self.app(scope, receive, send_with_id)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "%s %s %d %.1fms rid=%s",
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - started) * 1000,
                request_id,
            )


def create_app(platform: Platform | None = None) -> FastAPI:
    """Build the app around ``platform`` (or one built from the process's settings)."""
    owned = platform is None
    if owned:
        # The processes of `healthroam serve --workers N` are started afresh by Uvicorn
        # (spawn): they log only if configured here (a no-op where logging already is).
        configure_logging(get_settings().log_level)
    the_platform = platform or build(get_settings())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Compile the FHIR search parameters in the background from the start: done lazily,
        # the first search (or write) of the process waited seconds for it. Not awaited, so
        # the server is ready (and the health checks answer) at once.
        threading.Thread(target=search_index, name="search-index", daemon=True).start()
        settings = the_platform.settings
        # Background work (decision 0048). In every process: the export worker (each claims a
        # job under a row lock, SKIP LOCKED on PostgreSQL, so a job runs once). In the leader
        # process only (the one holding the PostgreSQL advisory lock; on SQLite, the one
        # process): the audit sealer (correct anywhere, but N sealers would queue on the chain
        # head's lock) and SQLite's statistics refresher (PostgreSQL: autovacuum's job).
        exports = ExportWorker(the_platform.bulk_export, settings.bulk_export_interval_ms)
        _app.state.export_worker = exports
        exports.start()
        leader = LeaderElection(
            the_platform.db,
            [
                AuditSealer(the_platform.audit, settings.audit_seal_interval_ms),
                StatisticsRefresher(
                    the_platform.db,
                    STORE_TABLES,
                    settings.sqlite_statistics_interval_seconds
                    if the_platform.db.dialect == "sqlite"
                    else 0,
                ),
            ],
            poll_seconds=settings.server_leader_poll_ms / 1000,
        )
        _app.state.leader = leader
        leader.start()
        try:
            yield
        finally:
            exports.stop()
            leader.stop()  # after the exports: a leader's sealer seals their entries too
            if owned:
                the_platform.close()

    app = FastAPI(
        title="healthroam",
        version=__version__,
        description="Provincial population-health information platform",
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry hooks: not used here (no OpenTelemetry SDK is
        # configured), but with them on, every request pays the check whether a provider was
        # configured meanwhile (about 40 us, a few per cent of a card verification).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.platform = the_platform
    install_error_handlers(app)
    for router in (*ROUTERS, *PAGE_ROUTERS):
        app.include_router(router)

    app.add_middleware(FhirReadFastPath, routers=(*ROUTERS, *PAGE_ROUTERS))
    app.add_middleware(cards.VerifyFastPath)  # inside the access log (added last: outermost)
    app.add_middleware(AccessLog)
    return app
