"""The FHIR read (``GET /fhir/<type>/<id>``) and type search (``GET /fhir/<type>?...``)
answered ahead of the FastAPI routing.

They are the store's most frequent requests, and a profile of the server under read load put
about half of its Python time in FastAPI's routing (the generic read and search routes are
matched after every specific route), dependency solving and the thread-pool hop of a sync
route, around a read whose own work was the other half (docs/benchmarks.md, decision 0042).
This ASGI middleware runs the routes' own steps, in the routes' order, with the same functions
(:func:`cached_principal`, :func:`check_store_type`, :func:`require`, :func:`check_id`,
``RecordService.read`` and :func:`resource_response`; the search route's :func:`_search`)
and the same error answers, so a caller sees no difference. It takes only a request those
routes would get: ``GET /fhir/<type>/<id>`` without a query string, where no other ``GET``
route has a path of that shape for ``<type>`` (``/fhir/Patient/<master index id>``,
``/fhir/AuditEvent/<seq>`` ...) or ``<id>`` (``/fhir/<type>/_history``), and
``GET /fhir/<type>`` where no other ``GET`` route is ``/fhir/<type>`` (``/fhir/Patient``,
the registry's PDQm search; ``/fhir/metadata`` ...); everything else goes on to the routes.
``fhir_read_fast_path=false`` turns it off.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from healthroam.api.auth import cached_principal, platform_of
from healthroam.api.errors import healthroam_error_response
from healthroam.api.fhir import _search as search
from healthroam.api.fhir import read as read_route
from healthroam.api.fhir import resource_response
from healthroam.api.fhir import search_get as search_route
from healthroam.api.worker_threads import in_thread
from healthroam.errors import HealthroamError
from healthroam.records.service import check_id, check_store_type, require

PREFIX = "/fhir/"


def shadowing(
    routers: Iterable[APIRouter],
) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """What other ``GET`` routes take of the two shapes this handler answers: the literal
    ``<a>`` of ``/fhir/<a>`` paths (not the search), and the literal ``<a>`` and ``<b>``
    values of ``/fhir/<a>/<b>`` paths (not the read). A route ``/fhir/{x}`` or ``/fhir/{x}/{y}``
    other than the search or the read would take every request: refused at startup."""
    names: set[str] = set()
    types: set[str] = set()
    ids: set[str] = set()
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute) or "GET" not in (route.methods or ()):
                continue
            if route.endpoint in (read_route, search_route):
                continue
            parts = route.path.split("/")
            if len(parts) not in (3, 4) or parts[:2] != ["", "fhir"]:
                continue
            if len(parts) == 3:
                if parts[2].startswith("{"):
                    raise ValueError(f"{route.path} would shadow the FHIR search route")
                names.add(parts[2])
                continue
            first, second = parts[2], parts[3]
            if not first.startswith("{"):
                types.add(first)
            elif not second.startswith("{"):
                ids.add(second)
            else:
                raise ValueError(f"{route.path} would shadow the FHIR read route")
    return frozenset(names), frozenset(types), frozenset(ids)


class FhirReadFastPath:
    """ASGI middleware answering the FHIR read without FastAPI (see the module docstring)."""

    def __init__(self, app: ASGIApp, routers: Iterable[APIRouter] = ()) -> None:
        self.app = app
        self.other_names, self.other_types, self.other_ids = shadowing(routers)

    def takes(self, scope: Scope) -> tuple[str, str | None] | None:
        """(type, id) of a read or (type, None) of a search this handler answers, else None."""
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path"):
            return None
        path: str = scope["path"]
        if not path.startswith(PREFIX):
            return None
        resource_type, slash, resource_id = path[len(PREFIX) :].partition("/")
        if not resource_type:
            return None
        if not slash:  # a search: /fhir/<type>?...
            return None if resource_type in self.other_names else (resource_type, None)
        if (
            scope.get("query_string")
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
        response: Response
        try:
            # The routes' order: their dependencies (the caller, the type, the scope), then
            # their bodies.
            principal = await cached_principal(request)
            check_store_type(resource_type)
            if resource_id is None:
                require(principal, resource_type, "s")
                response = await search(request, principal, resource_type, form=False)
            else:
                require(principal, resource_type, "r")
                check_id(resource_id, resource_type)
                stored = await in_thread(
                    platform_of(request).records.read, principal, resource_type, resource_id
                )
                response = resource_response(stored, request)
        except HealthroamError as exc:
            response = await healthroam_error_response(request, exc)
        await response(scope, receive, send)
