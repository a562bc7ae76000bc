"""FHIR R4 REST routes under /fhir (JSON)."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from healthroam import __version__
from healthroam.api.auth import cached_principal, platform_of, scoped
from healthroam.api.errors import FHIR_JSON
from healthroam.errors import Forbidden, InvalidInput
from healthroam.records.bundles import BundleProcessor
from healthroam.records.capability import (
    SEARCH_DOCUMENTATION,
    SYSTEM_INTERACTIONS,
    store_resources,
)
from healthroam.records.history import history_bundle, parse_history
from healthroam.records.model import StoredResource, operation_outcome
from healthroam.records.searchset import searchset_json
from healthroam.records.service import Notice, check_store_type, query_items, require
from healthroam.records.validation import ID_PATTERN
from healthroam.security.audit import Action
from healthroam.security.audit_fhir import to_audit_event
from healthroam.security.model import Principal

router = APIRouter(prefix="/fhir", tags=["fhir"])
public_router = APIRouter(prefix="/fhir", tags=["fhir"])
AuditSearcher = Annotated[Principal, Depends(scoped("AuditEvent", "s"))]
AuditReader = Annotated[Principal, Depends(scoped("AuditEvent", "r"))]
MASTER_INDEX_ID = re.compile(r"^[0-9A-F]{64}$")
_ACCEPTED_BODY_TYPES = {"application/fhir+json", "application/json"}


def fhir_response(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON, headers=headers)


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(moment: datetime) -> str:
    """An HTTP date (RFC 9110 IMF-fixdate) of ``moment`` in UTC (naive: UTC): what
    ``strftime("%a, %d %b %Y %H:%M:%S GMT")`` writes in the C locale, without its format
    parsing (every read's Last-Modified)."""
    m = moment.replace(tzinfo=moment.tzinfo or UTC).astimezone(UTC)
    return (
        f"{_DAYS[m.weekday()]}, {m.day:02d} {_MONTHS[m.month - 1]} {m.year} "
        f"{m.hour:02d}:{m.minute:02d}:{m.second:02d} GMT"
    )


def resource_response(stored: StoredResource, request: Request, status: int = 200) -> Response:
    headers = {"ETag": stored.etag, "Last-Modified": http_date(stored.last_updated)}
    if status == 201:
        base = str(request.base_url).rstrip("/")
        headers["Location"] = f"{base}/fhir/{stored.reference}/_history/{stored.version}"
    # The stored JSON text spliced with the served meta: no decoding and re-encoding.
    return Response(
        stored.served_json().encode(), status_code=status, media_type=FHIR_JSON, headers=headers
    )


async def json_body(request: Request) -> Any:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in _ACCEPTED_BODY_TYPES:
        raise InvalidInput("Content-Type must be application/fhir+json", expression="Content-Type")
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            f"the body is not valid JSON: {exc.__class__.__name__}", expression="$"
        ) from None


def _check_id(resource_id: str, resource_type: str) -> None:
    if not ID_PATTERN.match(resource_id):
        raise InvalidInput(
            "a resource id is 1-64 of A-Z a-z 0-9 - .", expression=f"{resource_type}.id"
        )


@public_router.get("/metadata")
def metadata(request: Request) -> JSONResponse:
    """The CapabilityStatement: exactly the interactions this server supports."""
    base = platform_of(request).settings.public_base_url.rstrip("/")
    token_url = base + "/auth/token"
    statement = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": datetime.now(UTC).date().isoformat(),
        "kind": "instance",
        "software": {"name": "healthroam", "version": __version__},
        "implementation": {"description": "healthroam shared health record", "url": base + "/fhir"},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                    "code": "SMART-on-FHIR",
                                }
                            ]
                        }
                    ],
                    "extension": [
                        {
                            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                            "extension": [{"url": "token", "valueUri": token_url}],
                        }
                    ],
                },
                "documentation": SEARCH_DOCUMENTATION,
                "interaction": SYSTEM_INTERACTIONS,
                "resource": [
                    *store_resources(),
                    {
                        "type": "AuditEvent",
                        "interaction": [{"code": "read"}, {"code": "search-type"}],
                        "searchParam": [
                            {"name": "patient", "type": "reference"},
                            {"name": "date", "type": "date"},
                            {"name": "agent", "type": "token"},
                            {"name": "_count", "type": "number"},
                        ],
                    },
                ],
            }
        ],
    }
    return fhir_response(statement)


@public_router.get("/.well-known/smart-configuration")
def smart_configuration(request: Request) -> JSONResponse:
    """SMART discovery: where to get a token and how to authenticate."""
    base = platform_of(request).settings.public_base_url.rstrip("/")
    return JSONResponse(
        {
            "token_endpoint": base + "/auth/token",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": [
                "RS384",
                "ES384",
                "RS256",
                "ES256",
            ],
            "scopes_supported": ["system/*.cruds", "system/Patient.cruds", "system/AuditEvent.rs"],
            "capabilities": [
                "client-confidential-asymmetric",
                "client-confidential-symmetric",
                "permission-v2",
            ],
        }
    )


def _parse_date(value: str, name: str) -> tuple[str, datetime]:
    prefix = value[:2] if value[:2] in ("ge", "gt", "le", "lt", "eq") else "eq"
    text = value[2:] if value[:2] == prefix else value
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{name} must be a FHIR date or dateTime", expression=name) from None
    return prefix, moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@router.get("/AuditEvent")
def search_audit(request: Request, caller: AuditSearcher) -> JSONResponse:
    """Search the audit trail (auditors only: system/AuditEvent.s)."""
    params = request.query_params
    known = {"patient", "date", "agent", "_count", "_before"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise InvalidInput(f"unsupported search parameter {unknown[0]}", expression=unknown[0])
    criteria: dict[str, Any] = {}
    if "patient" in params:
        criteria["patient_ref"] = params["patient"]
    for value in params.getlist("date"):
        prefix, moment = _parse_date(value, "date")
        if prefix in ("ge", "gt"):
            criteria["since"] = moment
        elif prefix in ("le", "lt"):
            criteria["until"] = moment
        else:
            raise InvalidInput("date takes ge/gt/le/lt prefixes", expression="date")
    if "agent" in params:
        criteria["client_id"] = params["agent"].split("|")[-1]
    try:
        count = min(int(params.get("_count", "50")), 1000)
        before = int(params["_before"]) if "_before" in params else None
    except ValueError:
        raise InvalidInput("_count and _before must be integers", expression="_count") from None
    if count < 1:
        raise InvalidInput("_count must be at least 1", expression="_count")
    platform = platform_of(request)
    rows, total = platform.audit.search(limit=count, before=before, **criteria)
    platform.audit.record(
        [
            platform.audit.event(
                caller,
                action=Action.EXECUTE,
                event_type="query",
                subtype="search-type",
                resource_type="AuditEvent",
                query=str(request.url.query),
            )
        ]
    )
    base = str(request.base_url).rstrip("/") + "/fhir/AuditEvent"
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": [{"relation": "self", "url": f"{base}?{request.url.query}"}],
        "entry": [
            {
                "fullUrl": f"{base}/{seq}",
                "resource": to_audit_event(seq, record),
                "search": {"mode": "match"},
            }
            for seq, record in rows
        ],
    }
    if len(rows) == count:
        # Keyset paging: the next page starts below the last entry shown, so entries appended
        # meanwhile (this search itself is audited) never shift a page.
        kept = [(k, v) for k, v in params.multi_items() if k != "_before"]
        kept.append(("_before", str(rows[-1][0])))
        bundle["link"].append({"relation": "next", "url": f"{base}?{urlencode(kept)}"})
    return fhir_response(bundle)


@router.get("/AuditEvent/{seq}")
def read_audit(seq: str, request: Request, caller: AuditReader) -> Response:
    """Read one audit entry as an AuditEvent."""
    if not seq.isdigit():
        raise InvalidInput("an AuditEvent id is a positive integer", expression="AuditEvent.id")
    platform = platform_of(request)
    record = platform.audit.get(int(seq))
    platform.audit.record(
        [
            platform.audit.event(
                caller,
                action=Action.READ,
                subtype="read",
                resource_type="AuditEvent",
                resource_id=seq,
            )
        ]
    )
    return fhir_response(to_audit_event(int(seq), record))


# --- the FHIR store: generic interactions on every R4 resource type --------------------------


def typed(interaction: str) -> Callable[..., Awaitable[Principal]]:
    """Authenticate, answer 404 for an unknown type, then check the scope on the path's type,
    all before the body is read (on the event loop; the client's state is cached briefly)."""

    async def dependency(
        resource_type: str,
        principal: Principal = Depends(cached_principal),  # noqa: B008
    ) -> Principal:
        check_store_type(resource_type)
        require(principal, resource_type, interaction)
        return principal

    return dependency


async def writer(principal: Principal = Depends(cached_principal)) -> Principal:  # noqa: B008
    """Batch/transaction: the token must grant some write scope; each entry is checked too."""
    if not any(set(s.interactions) & set("cud") for s in principal.scopes.scopes):
        raise Forbidden(
            "batch and transaction Bundles need a write scope (c, u or d)", expression="Bundle"
        )
    return principal


async def system_reader(principal: Principal = Depends(cached_principal)) -> Principal:  # noqa: B008
    require(principal, "*", "s")
    return principal


Creator = Annotated[Principal, Depends(typed("c"))]
Reader = Annotated[Principal, Depends(typed("r"))]
Updater = Annotated[Principal, Depends(typed("u"))]
Deleter = Annotated[Principal, Depends(typed("d"))]
Searcher = Annotated[Principal, Depends(typed("s"))]


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


def _prefer(request: Request, name: str) -> str | None:
    for part in request.headers.get("prefer", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key.strip() == name:
            return value.strip().strip('"')
    return None


def _written(stored: StoredResource, request: Request, status: int) -> Response:
    if _prefer(request, "return") == "OperationOutcome":
        # RFC 7240 / FHIR http.html#return: an OperationOutcome instead of the resource,
        # carrying what listeners had to say (e.g. duplicate-test alerts on an order).
        response = resource_response(stored, request, status)
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        outcome = operation_outcome(
            "information", "informational", f"{stored.reference} version {stored.version}"
        )
        return fhir_response(outcome, status, headers)
    if _prefer(request, "return") == "minimal":
        response = resource_response(stored, request, status)
        return Response(status_code=status, headers=dict(response.headers))
    return resource_response(stored, request, status)


def _withheld(stored: StoredResource, why: str, request: Request) -> Response:
    """A conditional create matched a resource the caller may not read: 200 with where it is
    (``Location``, ``ETag``) and an OperationOutcome saying why it is not shown, never its
    body; nothing was created (decision 0028)."""
    headers = {
        "Location": f"{_base(request)}/{stored.reference}/_history/{stored.version}",
        "ETag": stored.etag,
    }
    if _prefer(request, "return") == "minimal":
        return Response(status_code=200, headers=headers)
    return fhir_response(operation_outcome("information", "suppressed", why), 200, headers)


def _notify(response: Response, request: Request, notice: Notice) -> None:
    """Listener notices: issues go into a ``Prefer: return=OperationOutcome`` body, links into
    a ``Link`` header (e.g. to the order's ``$recent-results``)."""
    if notice.issues and _prefer(request, "return") == "OperationOutcome":
        body = json.loads(bytes(response.body))
        body["issue"].extend(notice.issues)
        fresh = fhir_response(body, response.status_code)
        response.body = fresh.body
        response.headers["content-length"] = str(len(fresh.body))
    if notice.links:
        response.headers["Link"] = ", ".join(
            f'<{_base(request)}/{path}>; rel="{rel}"' for path, rel in notice.links
        )


@router.post("")
async def transaction(request: Request, caller: Annotated[Principal, Depends(writer)]) -> Response:
    """Batch and transaction Bundles."""
    body = await json_body(request)
    processor = BundleProcessor(platform_of(request).records)
    # The database work runs in the thread pool: on the event loop it would stall every
    # other request while it waits for the database.
    return fhir_response(await run_in_threadpool(processor.process, caller, body, _base(request)))


@router.get("/_history")
def system_history(
    request: Request, caller: Annotated[Principal, Depends(system_reader)]
) -> Response:
    """Every version of every resource, newest first (needs a system/*.s scope)."""
    return _history(request, caller, None, None)


def _history(
    request: Request, caller: Principal, resource_type: str | None, resource_id: str | None
) -> Response:
    items = list(request.query_params.multi_items())
    query = parse_history(items)
    rows = platform_of(request).records.history(
        caller,
        resource_type,
        resource_id,
        since=query.since,
        at=query.at,
        before=query.before,
        count=query.count,
    )
    self_url = str(request.url).split("?", 1)[0]
    return fhir_response(history_bundle(rows, query, items, self_url, _base(request)))


@router.get("/{resource_type}/_history")
def type_history(resource_type: str, request: Request, caller: Searcher) -> Response:
    return _history(request, caller, resource_type, None)


async def _search(request: Request, caller: Principal, resource_type: str, form: bool) -> Response:
    items = list(request.query_params.multi_items())
    if form:
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type != "application/x-www-form-urlencoded":
            raise InvalidInput(
                "_search takes application/x-www-form-urlencoded", expression="Content-Type"
            )
        items += query_items((await request.body()).decode())
    strict = _prefer(request, "handling") == "strict"
    result = await run_in_threadpool(
        platform_of(request).records.search,
        caller,
        resource_type,
        items,
        strict=strict,
        base_url=_base(request),
        query=urlencode(items),
    )
    self_url = f"{_base(request)}/{resource_type}"
    return Response(
        searchset_json(result, self_url, _base(request), urlencode(items)), media_type=FHIR_JSON
    )


@router.post("/{resource_type}/_search")
async def search_post(resource_type: str, request: Request, caller: Searcher) -> Response:
    """Search with the parameters in a form body (and the query)."""
    return await _search(request, caller, resource_type, form=True)


@router.get("/{resource_type}/{resource_id}/_history/{version_id}")
def vread(
    resource_type: str, resource_id: str, version_id: str, request: Request, caller: Reader
) -> Response:
    _check_id(resource_id, resource_type)
    stored = platform_of(request).records.vread(caller, resource_type, resource_id, version_id)
    return resource_response(stored, request)


@router.get("/{resource_type}/{resource_id}/_history")
def instance_history(
    resource_type: str, resource_id: str, request: Request, caller: Reader
) -> Response:
    _check_id(resource_id, resource_type)
    return _history(request, caller, resource_type, resource_id)


@router.get("/{resource_type}/{resource_id}")
def read(resource_type: str, resource_id: str, request: Request, caller: Reader) -> Response:
    """Read the current version; the read is audited with the caller and purpose of use."""
    _check_id(resource_id, resource_type)
    stored = platform_of(request).records.read(caller, resource_type, resource_id)
    return resource_response(stored, request)


@router.get("/{resource_type}")
async def search_get(resource_type: str, request: Request, caller: Searcher) -> Response:
    """Search (GET /fhir/Patient is the registry's PDQm route, registered before this)."""
    return await _search(request, caller, resource_type, form=False)


@router.post("/{resource_type}")
async def create(resource_type: str, request: Request, caller: Creator) -> Response:
    """Create (conditional with If-None-Exist); a Patient also joins the registry."""
    body = await json_body(request)
    created = await run_in_threadpool(
        platform_of(request).records.create,
        caller,
        resource_type,
        body,
        if_none_exist=request.headers.get("if-none-exist"),
        base_url=_base(request),
    )
    if created.withheld is not None:
        return _withheld(created.stored, created.withheld, request)
    response = _written(created.stored, request, 201 if created.created else 200)
    _notify(response, request, created.notice)
    if created.registration is not None:
        # Which master person (主索引) the registration joined, and how it was decided.
        response.headers["X-Master-Index-Id"] = created.registration.master_index_id
        response.headers["X-Match-Outcome"] = created.registration.outcome.value
    return response


@router.put("/{resource_type}/{resource_id}")
async def update(
    resource_type: str, resource_id: str, request: Request, caller: Updater
) -> Response:
    """Update (If-Match for optimistic locking); creates the resource with this id if new."""
    _check_id(resource_id, resource_type)
    body = await json_body(request)
    created = await run_in_threadpool(
        platform_of(request).records.update,
        caller,
        resource_type,
        resource_id,
        body,
        if_match=request.headers.get("if-match"),
    )
    return _written(created.stored, request, 201 if created.created else 200)


@router.put("/{resource_type}")
async def conditional_update(resource_type: str, request: Request, caller: Updater) -> Response:
    body = await json_body(request)
    created = await run_in_threadpool(
        platform_of(request).records.update,
        caller,
        resource_type,
        None,
        body,
        if_match=request.headers.get("if-match"),
        condition=request.url.query,
        base_url=_base(request),
    )
    return _written(created.stored, request, 201 if created.created else 200)


@router.patch("/{resource_type}/{resource_id}")
async def patch(
    resource_type: str, resource_id: str, request: Request, caller: Updater
) -> Response:
    """JSON Patch (application/json-patch+json)."""
    _check_id(resource_id, resource_type)
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type != "application/json-patch+json":
        raise InvalidInput("PATCH takes application/json-patch+json", expression="Content-Type")
    try:
        operations = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidInput("the body is not valid JSON", expression="$") from None
    stored = await run_in_threadpool(
        platform_of(request).records.patch,
        caller,
        resource_type,
        resource_id,
        operations,
        if_match=request.headers.get("if-match"),
    )
    return _written(stored, request, 200)


@router.delete("/{resource_type}/{resource_id}")
def delete(resource_type: str, resource_id: str, request: Request, caller: Deleter) -> Response:
    _check_id(resource_id, resource_type)
    deleted = platform_of(request).records.delete(caller, resource_type, resource_id)
    return fhir_response(
        operation_outcome(
            "information",
            "informational",
            "deleted" if deleted else "nothing to delete (unknown or already deleted)",
        )
    )


@router.delete("/{resource_type}")
def conditional_delete(resource_type: str, request: Request, caller: Deleter) -> Response:
    deleted = platform_of(request).records.delete(
        caller, resource_type, None, condition=request.url.query, base_url=_base(request)
    )
    return fhir_response(
        operation_outcome(
            "information", "informational", "deleted" if deleted else "no resource matched"
        )
    )
