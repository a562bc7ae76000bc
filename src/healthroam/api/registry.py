"""Registry routes: the stewards' API (/registry) — reviews, merge, unmerge, split, history —
and the event feed that tells institutions about links, merges and splits."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from healthroam.api.auth import platform_of, scoped
from healthroam.errors import InvalidInput
from healthroam.registry.fhir import golden_patient
from healthroam.registry.model import Decision, check_master_index_id
from healthroam.registry.service import PersonView
from healthroam.security.model import Principal

router = APIRouter(prefix="/registry", tags=["registry"])
StewardReader = Annotated[Principal, Depends(scoped("MasterPerson", "r"))]
StewardSearcher = Annotated[Principal, Depends(scoped("MasterPerson", "s"))]
Steward = Annotated[Principal, Depends(scoped("MasterPerson", "u"))]
EventReader = Annotated[Principal, Depends(scoped("Patient", "r"))]


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise InvalidInput("the body must be a JSON object", expression="$") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object", expression="$")
    return body


def _reason(body: dict[str, Any]) -> str:
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInput("a reason is required for every registry change", expression="reason")
    return reason.strip()[:2000]


def _int(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer", expression=name) from None
    if not low <= number <= high:
        raise InvalidInput(f"{name} must be between {low} and {high}", expression=name)
    return number


def person_json(view: PersonView) -> dict[str, Any]:
    return {
        "master_index_id": view.master.master_index_id,
        "status": view.master.status,
        "survivor": view.survivor.master_index_id if view.survivor else None,
        "golden": view.master.golden,
        "patient": golden_patient(view),
        "source_records": [
            {
                "id": s.id,
                "institution": s.institution,
                "system": s.id_system,
                "local_id": s.local_id,
                "link_type": s.link_type,
                "fhir_patient_id": s.fhir_patient_id,
                "data": s.data,
                "updated_at": s.updated_at.isoformat(),
            }
            for s in view.sources
        ],
        "merged_from": [p.master_index_id for p in view.predecessors],
    }


@router.get("/reviews")
def list_reviews(request: Request, caller: StewardSearcher) -> JSONResponse:
    """Possible matches waiting for a steward (status=open by default)."""
    status = request.query_params.get("status", "open")
    if status not in ("open", "same", "different", "all"):
        raise InvalidInput("status is one of open, same, different, all", expression="status")
    limit = _int(request.query_params.get("limit"), "limit", 50, 1, 500)
    after = _int(request.query_params.get("after"), "after", 0, 0, 2**62)
    items = platform_of(request).registry.reviews(
        caller, None if status == "all" else status, limit, after or None
    )
    return JSONResponse({"items": items, "next_after": items[-1]["id"] if items else None})


@router.post("/reviews/{review_id}/decision")
async def decide_review(review_id: int, request: Request, caller: Steward) -> JSONResponse:
    """Record a steward's decision: {"decision": "same"|"different", "reason": "..."}."""
    body = await _json_object(request)
    try:
        decision = Decision(str(body.get("decision")))
    except ValueError:
        raise InvalidInput("decision is 'same' or 'different'", expression="decision") from None
    result = platform_of(request).registry.decide_review(caller, review_id, decision, _reason(body))
    return JSONResponse(result)


@router.get("/persons/{master_index_id}")
def read_person(master_index_id: str, request: Request, caller: StewardReader) -> JSONResponse:
    """A master person with its golden record, linked source records and predecessors."""
    view = platform_of(request).registry.person(caller, master_index_id)
    return JSONResponse(person_json(view))


@router.get("/persons/{master_index_id}/history")
def person_history(master_index_id: str, request: Request, caller: StewardReader) -> JSONResponse:
    """Every link, unlink, merge and split of this person (and its predecessors)."""
    return JSONResponse({"events": platform_of(request).registry.history(caller, master_index_id)})


@router.post("/persons/{master_index_id}/$merge")
async def merge(master_index_id: str, request: Request, caller: Steward) -> JSONResponse:
    """Merge another person into this one: {"source": "<master index id>", "reason": "..."}."""
    body = await _json_object(request)
    source = body.get("source")
    if not isinstance(source, str):
        raise InvalidInput("source is the master index ID to merge away", expression="source")
    check_master_index_id(source, "source")
    survivor = platform_of(request).registry.merge(caller, master_index_id, source, _reason(body))
    return JSONResponse({"survivor": survivor, "merged": source})


@router.post("/persons/{master_index_id}/$unmerge")
async def unmerge(master_index_id: str, request: Request, caller: Steward) -> JSONResponse:
    """Undo the merge of this (merged-away) person: {"reason": "..."}."""
    body = await _json_object(request)
    restored = platform_of(request).registry.unmerge(caller, master_index_id, _reason(body))
    return JSONResponse({"restored": restored})


@router.post("/persons/{master_index_id}/$split")
async def split(master_index_id: str, request: Request, caller: Steward) -> JSONResponse:
    """Move source records to a new person: {"sourceRecords": [ids], "reason": "..."}."""
    body = await _json_object(request)
    ids = body.get("sourceRecords")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) for i in ids):
        raise InvalidInput(
            "sourceRecords is a non-empty list of source record ids", expression="sourceRecords"
        )
    new_person = platform_of(request).registry.split(caller, master_index_id, ids, _reason(body))
    return JSONResponse({"person": master_index_id, "new_person": new_person})


@router.get("/events")
def events(request: Request, caller: EventReader) -> JSONResponse:
    """Changes to persons whose records the caller's institution holds (agencies: all).
    Poll with ?after=<next_after of the last answer> (the feed's position, decision 0044)."""
    after = _int(request.query_params.get("after"), "after", 0, 0, 2**62)
    limit = _int(request.query_params.get("limit"), "limit", 100, 1, 1000)
    items = platform_of(request).registry.events(caller, after, limit)
    return JSONResponse({"events": items, "next_after": items[-1]["position"] if items else after})
