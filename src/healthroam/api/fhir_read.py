"""``GET /fhir/<type>/<id>`` (the FHIR read) answered ahead of the FastAPI routing.

Reads are the store's most frequent request, and a profile of the server under read load put
about half of its Python time in FastAPI's routing (the generic read route is matched after
every specific route), dependency solving and the thread-pool hop of a sync route, around a
read whose own work was the other half (docs/benchmarks.md, decision 0042). This ASGI
middleware runs the route's own steps, in the route's order, with the same functions
(:func:`cached_principal`, :func:`check_store_type`, :func:`require`, :func:`check_id`,
``RecordService.read``, :func:`resource_response`) and the same error answers, so a caller
sees no difference. It takes only a request the read route would get: ``GET`` of exactly
``/fhir/<type>/<id>`` without a query string, where no other ``GET`` route of the app has a
path of that shape for ``<type>`` (``/fhir/Patient/<master index id>``, ``/fhir/AuditEvent/<seq>``
...) or ``<id>`` (``/fhir/<type>/_history``); everything else goes on to the routes.
``fhir_read_fast_path=false`` turns it off.
"""

from __future__ import annotations

from collections.abc import Iterable

import anyio
from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from healthroam.api.auth import cached_principal, platform_of
from healthroam.api.errors import healthroam_error_response
from healthroam.api.fhir import read as read_route
from healthroam.api.fhir import resource_response
from healthroam.errors import HealthroamError
from healthroam.records.service import check_id, check_store_type, require

PREFIX = "/fhir/"


def shadowing(routers: Iterable[APIRouter]) -> tuple[frozenset[str], frozenset[str]]:
    """The types and the ids for which another ``GET`` route has a ``/fhir/<a>/<b>`` path:
    (literal ``<a>`` values, literal ``<b>`` values). A route ``/fhir/{x}/{y}`` other than the
    read itself would take every read: refused at startup."""
    types: set[str] = set()
    ids: set[str] = set()
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute) or "GET" not in (route.methods or ()):
                continue
            if route.endpoint is read_route:
                continue
            parts = route.path.split("/")
            if len(parts) != 4 or parts[:2] != ["", "fhir"]:
                continue
            first, second = parts[2], parts[3]
            if not first.startswith("{"):
                types.add(first)
            elif not second.startswith("{"):
                ids.add(second)
            else:
                raise ValueError(f"{route.path} would shadow the FHIR read route")
    return frozenset(types), frozenset(ids)


class FhirReadFastPath:
    """ASGI middleware answering the FHIR read without FastAPI (see the module docstring)."""

    def __init__(self, app: ASGIApp, routers: Iterable[APIRouter] = ()) -> None:
        self.app = app
        self.other_types, self.other_ids = shadowing(routers)

    def takes(self, scope: Scope) -> tuple[str, str] | None:
        """(type, id) of a request this handler answers, else None."""
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or scope.get("query_string")
            or scope.get("root_path")
        ):
            return None
        path: str = scope["path"]
        if not path.startswith(PREFIX):
            return None
        resource_type, slash, resource_id = path[len(PREFIX) :].partition("/")
        if (
            not slash
            or not resource_type
            or not resource_id
            or "/" in resource_id
            or resource_type in self.other_types
            or resource_id in self.other_ids
        ):
            return None
        return resource_type, resource_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.takes(scope)
        if found is None or not scope["app"].state.platform.settings.fhir_read_fast_path:
            await self.app(scope, receive, send)
            return
        resource_type, resource_id = found
        request = Request(scope, receive)
        try:
            # The route's order: its dependencies (the caller, the type, the scope), then
            # its body (the id, the audited read).
            principal = await cached_principal(request)
            check_store_type(resource_type)
            require(principal, resource_type, "r")
            check_id(resource_id, resource_type)
            stored = await anyio.to_thread.run_sync(
                platform_of(request).records.read, principal, resource_type, resource_id
            )
            response = resource_response(stored, request)
        except HealthroamError as exc:
            response = await healthroam_error_response(request, exc)
        await response(scope, receive, send)
