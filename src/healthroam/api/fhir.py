"""FHIR R4 REST routes under /fhir (JSON)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from healthroam import __version__
from healthroam.api.auth import platform_of, scoped
from healthroam.api.errors import FHIR_JSON
from healthroam.errors import InvalidInput
from healthroam.records.model import StoredResource
from healthroam.records.validation import ID_PATTERN
from healthroam.security.audit import Action
from healthroam.security.audit_fhir import to_audit_event
from healthroam.security.model import Principal

router = APIRouter(prefix="/fhir", tags=["fhir"])
public_router = APIRouter(prefix="/fhir", tags=["fhir"])
PatientCreator = Annotated[Principal, Depends(scoped("Patient", "c"))]
PatientReader = Annotated[Principal, Depends(scoped("Patient", "r"))]
PatientSearcher = Annotated[Principal, Depends(scoped("Patient", "s"))]
AuditSearcher = Annotated[Principal, Depends(scoped("AuditEvent", "s"))]
AuditReader = Annotated[Principal, Depends(scoped("AuditEvent", "r"))]
MASTER_INDEX_ID = re.compile(r"^[0-9A-F]{64}$")
_ACCEPTED_BODY_TYPES = {"application/fhir+json", "application/json"}


def fhir_response(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON, headers=headers)


def resource_response(stored: StoredResource, request: Request, status: int = 200) -> JSONResponse:
    headers = {
        "ETag": stored.etag,
        "Last-Modified": stored.last_updated.replace(tzinfo=stored.last_updated.tzinfo or UTC)
        .astimezone(UTC)
        .strftime("%a, %d %b %Y %H:%M:%S GMT"),
    }
    if status == 201:
        base = str(request.base_url).rstrip("/")
        headers["Location"] = f"{base}/fhir/{stored.reference}/_history/{stored.version}"
    return fhir_response(stored.with_meta(), status, headers)


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
                "resource": [
                    {
                        "type": "Patient",
                        "versioning": "versioned",
                        "readHistory": False,
                        "updateCreate": False,
                        "interaction": [{"code": "read"}, {"code": "create"}],
                    },
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


@router.post("/Patient")
async def create_patient(request: Request, caller: PatientCreator) -> JSONResponse:
    """Create a Patient (an institution's registration of a person)."""
    body = await json_body(request)
    created = platform_of(request).records.create(caller, "Patient", body)
    response = resource_response(created.stored, request, status=201)
    if created.registration is not None:
        # Which master person (主索引) the registration joined, and how it was decided.
        response.headers["X-Master-Index-Id"] = created.registration.master_index_id
        response.headers["X-Match-Outcome"] = created.registration.outcome.value
    return response


@router.get("/Patient/{resource_id}")
def read_patient(resource_id: str, request: Request, caller: PatientReader) -> JSONResponse:
    """Read a Patient; the read is audited with the caller and purpose of use."""
    _check_id(resource_id, "Patient")
    stored = platform_of(request).records.read(caller, "Patient", resource_id)
    return resource_response(stored, request)


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
