"""FHIR R4 REST routes under /fhir (JSON)."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from healthroam import __version__
from healthroam.api.auth import platform_of, scoped
from healthroam.api.errors import FHIR_JSON
from healthroam.errors import Conflict, InvalidInput, NotFound
from healthroam.records.model import StoredResource
from healthroam.records.validation import ID_PATTERN, validate_resource
from healthroam.registry.fhir import (
    fhir_path,
    golden_patient,
    match_entry,
    patient_to_source,
    pix_parameters,
)
from healthroam.registry.model import MASTER_INDEX_SYSTEM, MatchGrade
from healthroam.registry.names import normalize_name
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


@router.get("/Patient")
def search_patients(request: Request, caller: PatientSearcher) -> JSONResponse:
    """PDQm (ITI-78) over the registry's master persons (golden Patients)."""
    params = request.query_params
    known = {"identifier", "family", "given", "name", "birthdate", "gender", "_count", "_id"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise InvalidInput(f"unsupported search parameter {unknown[0]}", expression=unknown[0])
    registry = platform_of(request).registry
    master_ids: set[int] | None = None
    for value in params.getlist("identifier") + [
        f"{MASTER_INDEX_SYSTEM}|{v}" for v in params.getlist("_id")
    ]:
        system, sep, code = value.partition("|")
        if not sep or not system or not code:
            raise InvalidInput("identifier must be system|value", expression="identifier")
        found = registry.masters_by_identifier(system, code)
        master_ids = found if master_ids is None else master_ids & found
    birth = params.get("birthdate")
    if birth is not None:
        birth = birth.removeprefix("eq")
        try:
            date.fromisoformat(birth)
        except ValueError:
            raise InvalidInput(
                "birthdate must be a full date (YYYY-MM-DD)", expression="birthdate"
            ) from None
    gender = params.get("gender")
    sex = {"male": "1", "female": "2"}.get(gender or "")
    if gender is not None and sex is None:
        raise InvalidInput("gender must be male or female", expression="gender")
    try:
        count = min(int(params.get("_count", "20")), 200)
    except ValueError:
        raise InvalidInput("_count must be an integer", expression="_count") from None
    name_contains = params.get("given") or params.get("name")
    if master_ids is None and not (params.get("family") or name_contains or birth):
        raise InvalidInput(
            "give an identifier, a name or a birth date to search on", expression="identifier"
        )
    views = registry.search(
        caller,
        master_ids=master_ids,
        name_prefix=normalize_name(params["family"]).key if params.get("family") else None,
        name_contains=normalize_name(name_contains).key if name_contains else None,
        birth_date=birth,
        sex=sex,
        limit=count,
    )
    base = str(request.base_url).rstrip("/") + "/fhir"
    return fhir_response(
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(views),
            "link": [{"relation": "self", "url": f"{base}/Patient?{request.url.query}"}],
            "entry": [
                {
                    "fullUrl": f"{base}/Patient/{v.master.master_index_id}",
                    "resource": golden_patient(v),
                    "search": {"mode": "match"},
                }
                for v in views
            ],
        }
    )


@router.post("/Patient/$match")
async def match_patient(request: Request, caller: PatientSearcher) -> JSONResponse:
    """PDQm $match (ITI-119): scored master persons for a Patient."""
    body = await json_body(request)
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidInput("the body must be a Parameters resource", expression="Parameters")
    patient: Any = None
    only_certain, count = False, 10
    for index, parameter in enumerate(body.get("parameter") or []):
        name = parameter.get("name") if isinstance(parameter, dict) else None
        if name == "resource":
            patient = parameter.get("resource")
        elif name == "onlyCertainMatches":
            only_certain = parameter.get("valueBoolean") is True
        elif name == "count":
            value = parameter.get("valueInteger")
            if not isinstance(value, int) or value < 1:
                raise InvalidInput(
                    "count must be a positive integer",
                    expression=f"Parameters.parameter[{index}].valueInteger",
                )
            count = min(value, 100)
    if not isinstance(patient, dict) or patient.get("resourceType") != "Patient":
        raise InvalidInput(
            "a Patient is required in the 'resource' parameter",
            expression="Parameters.parameter.resource",
        )
    validate_resource(patient, "Patient")
    record, paths = patient_to_source(patient, caller.institution_code, "match")
    registry = platform_of(request).registry
    try:
        results = registry.candidates_for(caller, record, count)
    except InvalidInput as error:
        raise fhir_path(error, paths) from None
    base = str(request.base_url).rstrip("/") + "/fhir"
    entries = []
    for view, score in results:
        grade = registry.model.grade(score.weight)
        if grade is MatchGrade.CERTAINLY_NOT or (only_certain and grade is not MatchGrade.CERTAIN):
            continue
        entries.append(match_entry(view, score.probability, grade, base))
    if only_certain and len(entries) > 1:
        entries = []  # ITI-119: only return a certain match when it is the only one
    return fhir_response(
        {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}
    )


@router.get("/Patient/$ihe-pix")
def pix_query(request: Request, caller: PatientReader) -> JSONResponse:
    """PIXm (ITI-83): every identifier the person has across sources."""
    params = request.query_params
    source = params.get("sourceIdentifier")
    if not source or "|" not in source:
        raise InvalidInput("sourceIdentifier must be system|value", expression="sourceIdentifier")
    system, _, value = source.partition("|")
    targets = set(params.getlist("targetSystem")) or None
    registry = platform_of(request).registry
    masters = registry.masters_by_identifier(system, value)
    if not masters:
        raise NotFound("no person with this identifier", expression="sourceIdentifier")
    if len(masters) > 1:
        raise Conflict(
            "this identifier belongs to more than one person; a steward must resolve it",
            expression="sourceIdentifier",
        )
    view = registry.person(caller, registry.index_id_of(next(iter(masters))), purpose="pix")
    return fhir_response(pix_parameters(view, targets))


@router.get("/Patient/{resource_id}")
def read_patient(resource_id: str, request: Request, caller: PatientReader) -> JSONResponse:
    """Read a Patient; the read is audited with the caller and purpose of use."""
    _check_id(resource_id, "Patient")
    platform = platform_of(request)
    if MASTER_INDEX_ID.match(resource_id):
        # A master index ID: the golden Patient of the registry.
        view = platform.registry.person(caller, resource_id)
        return fhir_response(golden_patient(view))
    stored = platform.records.read(caller, "Patient", resource_id)
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
