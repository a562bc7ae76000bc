"""The registry's FHIR interactions: PDQm search and $match, PIXm, and golden Patients.

Included before the general FHIR router so that these paths win: ``GET /fhir/Patient`` (PDQm
over master persons), ``POST /fhir/Patient/$match``, ``GET /fhir/Patient/$ihe-pix`` and
``GET /fhir/Patient/{master index id}`` (the ``mii`` path convertor matches only 64 uppercase
hex characters, so other Patient ids fall through to the FHIR store).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from starlette.convertors import Convertor, register_url_convertor

from healthroam.api.auth import cached_scoped, platform_of
from healthroam.api.errors import FHIR_JSON
from healthroam.api.fhir import fhir_response, json_body
from healthroam.errors import Conflict, Forbidden, InvalidInput, NotFound
from healthroam.exchange.care.service import Grant
from healthroam.records.everything import Everything, everything, everything_in
from healthroam.records.model import operation_outcome
from healthroam.records.searchset import bundle_json
from healthroam.records.validation import validate_resource
from healthroam.registry.fhir import (
    fhir_path,
    golden_patient,
    match_entry,
    patient_to_source,
    pix_parameters,
)
from healthroam.registry.model import MASTER_INDEX_SYSTEM, MatchGrade
from healthroam.registry.names import normalize_name
from healthroam.security.model import Principal


class MasterIndexIdConvertor(Convertor[str]):
    regex = "[0-9A-F]{64}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("mii", MasterIndexIdConvertor())

router = APIRouter(prefix="/fhir", tags=["registry"])
PatientReader = Annotated[Principal, Depends(cached_scoped("Patient", "r"))]
PatientSearcher = Annotated[Principal, Depends(cached_scoped("Patient", "s"))]


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


@router.get("/Patient/{master_index_id:mii}")
def read_golden_patient(
    master_index_id: str, request: Request, caller: PatientReader
) -> JSONResponse:
    """The golden Patient of a master person (the resident across all sources)."""
    view = platform_of(request).registry.person(caller, master_index_id)
    return fhir_response(golden_patient(view))


def _fhir_base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


def _everything_params(request: Request) -> dict[str, Any]:
    params = request.query_params
    known = {"_since", "_type", "_count", "_offset"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise InvalidInput(f"unsupported parameter {unknown[0]}", expression=unknown[0])
    since = None
    if "_since" in params:
        try:
            since = datetime.fromisoformat(params["_since"].replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput("_since must be a FHIR instant", expression="_since") from None
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
    types = frozenset(t.strip() for t in params["_type"].split(",")) if "_type" in params else None
    try:
        count = int(params.get("_count", "1000"))
        offset = int(params.get("_offset", "0"))
    except ValueError:
        raise InvalidInput("_count and _offset must be integers", expression="_count") from None
    if not 1 <= count <= 5000 or offset < 0:
        raise InvalidInput("_count is 1-5000 and _offset not negative", expression="_count")
    return {"since": since, "types": types, "count": count, "offset": offset}


def _everything_bundle(
    request: Request, result: Everything, options: dict[str, Any], grant: Grant | None = None
) -> Response:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": result.total,
        "link": [{"relation": "self", "url": str(request.url)}],
        "entry": [],
    }
    following = options["offset"] + options["count"]
    if following < result.total:
        kept = [(k, v) for k, v in request.query_params.multi_items() if k != "_offset"]
        kept.append(("_offset", str(following)))
        bundle["link"].append({"relation": "next", "url": f"{request.url.path}?{urlencode(kept)}"})
    if grant is not None:
        _consent_note(bundle, grant)
    # The entries come as JSON text (the resources' stored text spliced in, on PostgreSQL
    # the whole entry written by the database), not decoded and encoded again.
    return Response(bundle_json(bundle, result.entries), media_type=FHIR_JSON)


BREAK_GLASS_HEADER = "x-break-glass-reason"


def _consent_note(bundle: dict[str, Any], grant: Grant) -> None:
    """Say in the Bundle that other institutions' data was left out, and why."""
    notes = []
    if grant.decision.others_hidden:
        notes.append("only your institution's data is shown: " + (grant.decision.guidance or ""))
    if grant.decision.consent_refused and not grant.decision.consent_overridden:
        notes.append(
            "the resident's consent refuses sharing other institutions' data with yours; only "
            "your institution's data is shown"
        )
    bundle["entry"].extend(
        {
            "resource": operation_outcome("information", "suppressed", note),
            "search": {"mode": "outcome"},
        }
        for note in notes
    )


@router.get("/Patient/{master_index_id:mii}/$everything")
def golden_everything(master_index_id: str, request: Request, caller: PatientReader) -> Response:
    """The resident's whole record: every resource of every source Patient linked to this
    master person, from every institution (follows merges and splits at once).

    A hospital needs a care relationship with the resident (card check-in, active encounter)
    to see other institutions' data, or breaks the glass with ``X-Break-Glass-Reason``;
    see docs/cross-institution-care.md."""
    options = _everything_params(request)
    platform = platform_of(request)
    care = platform.care
    missing: NotFound | None = None
    # The access decision and the read in one transaction (two round trips fewer than a
    # transaction each). A refusal rolls it back and is audited in its own, as `authorize`
    # does; a 404 after the decision is raised once the decision's writes (a relationship
    # found, a break-the-glass exception) are committed, as when they had their own.
    try:
        with platform.db.transaction() as conn:
            grant, keys = care.gate_in(
                conn,
                caller,
                master_index_id,
                access="everything",
                break_glass_reason=request.headers.get(BREAK_GLASS_HEADER),
            )
            person = grant.person
            patient_ids = [s.fhir_patient_id for s in person.sources if s.fhir_patient_id]
            goldens = [pid for _, pid in person.patient_keys if pid not in patient_ids]
            if not patient_ids:
                missing = NotFound(
                    "no FHIR Patient is linked to this person yet", expression="Patient.id"
                )
            else:
                try:
                    result = everything_in(
                        conn,
                        platform.audit,
                        grant.principal,
                        [*patient_ids, *goldens],
                        audit_refs=[
                            f"Patient/{person.master_index_id}",
                            *(f"Patient/{p}" for p in patient_ids),
                        ],
                        base=_fhir_base(request),
                        visible=grant.visible,
                        detail=care.detail(grant),
                        compartment=[(k.resource_type, k.id) for k in keys],
                        **options,
                    )
                except NotFound as error:  # nothing written by the read yet
                    missing = error
    except Forbidden as error:
        care.audit_refusal(caller, master_index_id, "everything", error)
        raise
    if missing is not None:
        raise missing
    return _everything_bundle(request, result, options, grant)


@router.get("/Patient/{patient_id}/$everything")
def patient_everything(patient_id: str, request: Request, caller: PatientReader) -> Response:
    """One stored Patient's compartment and what it refers to. Other institutions' data in
    it follows the same access rules as the golden record; a hospital always sees its own."""
    options = _everything_params(request)
    platform = platform_of(request)
    found = platform.registry.source_patient(patient_id)
    grant = None
    if found is not None:
        grant = platform.care.authorize(
            caller,
            found[1].master_index_id,
            access="everything-patient",
            break_glass_reason=request.headers.get(BREAK_GLASS_HEADER),
        )
    result = everything(
        platform.db,
        platform.audit,
        grant.principal if grant else caller,
        [patient_id],
        audit_refs=[f"Patient/{patient_id}"],
        base=_fhir_base(request),
        visible=grant.visible if grant else None,
        detail=platform.care.detail(grant) if grant else None,
        **options,
    )
    return _everything_bundle(request, result, options, grant)
