"""The FastAPI application: routers, error handlers, access log. Built by ``create_app``."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

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
from healthroam.bootstrap import Platform, build
from healthroam.config import get_settings
from healthroam.records.bulk_export import ExportWorker
from healthroam.security.sealer import AuditSealer

access_log = logging.getLogger("healthroam.access")

# Every router the app serves, in order. Tests enumerate this to check each route's auth.
ROUTERS = (
    health.router,
    token.router,
    fhir.public_router,
    bulk.router,
    fhir_registry.router,
    recognition.fhir_router,
    fhir.router,
    registry.router,
    cards.router,
    care.router,
    recognition.router,
)
# Pages for people (the clinician page): authenticated by a session cookie, not a bearer token,
# and left out of the OpenAPI document. tests/browser and tests/integration/web cover them.
PAGE_ROUTERS = (web.router,)


def create_app(platform: Platform | None = None) -> FastAPI:
    """Build the app around ``platform`` (or one built from the process's settings)."""
    owned = platform is None
    the_platform = platform or build(get_settings())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        sealer = AuditSealer(the_platform.audit, the_platform.settings.audit_seal_interval_ms)
        sealer.start()
        exports = ExportWorker(
            the_platform.bulk_export, the_platform.settings.bulk_export_interval_ms
        )
        _app.state.export_worker = exports
        exports.start()
        try:
            yield
        finally:
            exports.stop()
            sealer.stop()
            if owned:
                the_platform.close()

    app = FastAPI(
        title="healthroam",
        version=__version__,
        description="Provincial population-health information platform",
        lifespan=lifespan,
    )
    app.state.platform = the_platform
    install_error_handlers(app)
    for router in (*ROUTERS, *PAGE_ROUTERS):
        app.include_router(router)

    @app.middleware("http")
    async def log_access(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        # Path only: query strings can carry identifiers (e.g. ?identifier=<ID number>).
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        started = time.perf_counter()
        response = await call_next(request)
        response.headers["X-Request-Id"] = request_id
        access_log.info(
            "%s %s %d %.1fms rid=%s",
            request.method,
            request.url.path,
            response.status_code,
            (time.perf_counter() - started) * 1000,
            request_id,
        )
        return response

    return app
