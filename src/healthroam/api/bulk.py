"""FHIR Bulk Data 2.0 `$export` (kick-off, status, output files) and NDJSON `$import`."""

from __future__ import annotations

import tempfile
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse

from healthroam.api.auth import current_principal, platform_of
from healthroam.api.fhir import fhir_response
from healthroam.errors import Forbidden, InvalidInput
from healthroam.records.bulk_export import parse_kickoff
from healthroam.records.model import operation_outcome
from healthroam.records.validation import ID_PATTERN
from healthroam.security.model import Principal

router = APIRouter(prefix="/fhir", tags=["bulk data"])


def exporter(principal: Principal = Depends(current_principal)) -> Principal:  # noqa: B008
    """An export is a search and a read of every type it writes out: the token needs some
    ``rs`` scope for any export route (the types exported are those it grants)."""
    if not any({"r", "s"} <= set(s.interactions) for s in principal.scopes.scopes):
        raise Forbidden("an $export needs read and search scopes (system/<type>.rs)")
    return principal


Caller = Annotated[Principal, Depends(exporter)]
NDJSON = "application/fhir+ndjson"
NDJSON_TYPES = frozenset({NDJSON, "application/ndjson", "application/x-ndjson"})
_ACCEPT = ("application/fhir+json", "application/json", "*/*")


def _prefer(request: Request) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in request.headers.get("prefer", "").replace(";", ",").split(","):
        key, _, value = part.strip().partition("=")
        if key:
            found[key.strip()] = value.strip().strip('"')
    return found


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


def _kick_off(request: Request, caller: Principal, level: str, group_id: str | None) -> Response:
    if level == "patient" and not caller.scopes.allows("Patient", "r"):
        raise Forbidden("a Patient-level $export needs system/Patient.rs", expression="Patient")
    prefer = _prefer(request)
    if "respond-async" not in prefer:
        raise InvalidInput("an $export needs the header Prefer: respond-async", expression="Prefer")
    accept = request.headers.get("accept")
    if accept and not any(a in accept for a in _ACCEPT):
        raise InvalidInput("an $export answers application/fhir+json", expression="Accept")
    export = parse_kickoff(
        level,
        request.query_params.multi_items(),
        request_url=str(request.url),
        group_id=group_id,
        lenient=prefer.get("handling") == "lenient",
    )
    platform = platform_of(request)
    job_id = platform.bulk_export.kick_off(caller, export)
    worker = getattr(request.app.state, "export_worker", None)
    if worker is not None:
        worker.wake()
    return Response(
        status_code=202,
        headers={"Content-Location": f"{_base(request)}/$export-status/{job_id}"},
    )


@router.get("/$export")
def export_system(request: Request, caller: Caller) -> Response:
    """System-level export: every resource the caller's scopes may read."""
    return _kick_off(request, caller, "system", None)


@router.get("/Patient/$export")
def export_patients(request: Request, caller: Caller) -> Response:
    """Every Patient and every resource in a Patient's compartment."""
    return _kick_off(request, caller, "patient", None)


@router.get("/Group/{group_id}/$export")
def export_group(group_id: str, request: Request, caller: Caller) -> Response:
    """The compartments of one Group's member Patients (golden members bring all sources)."""
    if not ID_PATTERN.match(group_id):
        raise InvalidInput("a resource id is 1-64 of A-Z a-z 0-9 - .", expression="Group.id")
    return _kick_off(request, caller, "group", group_id)


def importer(principal: Principal = Depends(current_principal)) -> Principal:  # noqa: B008
    if not any("c" in s.interactions for s in principal.scopes.scopes):
        raise Forbidden("an $import needs create scopes (system/<type>.c)")
    return principal


@router.post("/$import")
async def bulk_import(
    request: Request, caller: Annotated[Principal, Depends(importer)]
) -> JSONResponse:
    """NDJSON in the body, one resource per line; answers after every chunk is committed."""
    media = request.headers.get("content-type", "").split(";")[0].strip()
    if media not in NDJSON_TYPES:
        raise InvalidInput(
            "an $import body is NDJSON (Content-Type: application/fhir+ndjson)",
            expression="Content-Type",
        )
    platform = platform_of(request)
    limit = platform.settings.bulk_import_max_mb * 1024 * 1024
    with tempfile.TemporaryFile() as spool:
        size = 0
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise InvalidInput(
                    f"an $import body is at most {platform.settings.bulk_import_max_mb} MB; "
                    "split the file or use `healthroam records import`",
                    expression="body",
                )
            spool.write(part)
        spool.seek(0)
        report = await run_in_threadpool(platform.bulk_import.import_lines, caller, spool)
    issues: list[dict[str, Any]] = [
        {
            "severity": "information",
            "code": "informational",
            "diagnostics": f"created {report.created}, updated {report.updated}, "
            f"unchanged {report.unchanged}, failed {report.failed}",
        }
    ]
    for error in report.errors:
        issue: dict[str, Any] = {
            "severity": "error",
            "code": "invalid",
            "diagnostics": f"line {error.line}: {error.detail}",
        }
        if error.expression:
            issue["expression"] = [error.expression]
        issues.append(issue)
    return fhir_response({"resourceType": "OperationOutcome", "issue": issues})


@router.get("/$export-status/{job_id}")
def export_status(job_id: str, request: Request, caller: Caller) -> Response:
    status = platform_of(request).bulk_export.status(caller, job_id)
    if status.status in ("accepted", "running"):
        return Response(
            status_code=202,
            headers={"X-Progress": status.progress or status.status, "Retry-After": "2"},
        )
    if status.status == "failed":
        outcome = operation_outcome(
            "error", "exception", f"the export failed ({status.error}); start a new one"
        )
        return fhir_response(outcome, status=500)
    manifest: dict[str, Any] = dict(status.manifest or {})
    base = _base(request)
    manifest["output"] = [
        {
            "type": o["type"],
            "url": f"{base}/$export-file/{job_id}/{o['file']}",
            "count": o["count"],
        }
        for o in manifest.get("output", [])
    ]
    return JSONResponse(manifest, headers={"Cache-Control": "no-store"})


@router.delete("/$export-status/{job_id}")
def export_cancel(job_id: str, request: Request, caller: Caller) -> Response:
    platform_of(request).bulk_export.cancel(caller, job_id)
    return Response(status_code=202)


@router.get("/$export-file/{job_id}/{name}")
def export_file(job_id: str, name: str, request: Request, caller: Caller) -> Response:
    path = platform_of(request).bulk_export.file(caller, job_id, name)
    return FileResponse(path, media_type=NDJSON, headers={"Cache-Control": "no-store"})
