"""Result recognition routes: ``Patient/[id]/$recent-results`` under /fhir, and the outcome
and count routes under /recognition (docs/result-recognition.md).

``fhir_router`` is included before the generic FHIR router, like the registry's routes.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from healthroam.api.auth import platform_of, scoped
from healthroam.api.fhir import fhir_response, json_body
from healthroam.api.fhir_registry import BREAK_GLASS_HEADER
from healthroam.errors import InvalidInput
from healthroam.exchange.recognition.model import local_day, parse_day
from healthroam.exchange.recognition.service import (
    COUNT_SCOPE_TYPE,
    RecentResults,
    recognition_extension,
)
from healthroam.security.model import Principal

fhir_router = APIRouter(prefix="/fhir", tags=["recognition"])
router = APIRouter(prefix="/recognition", tags=["recognition"])
PatientReader = Annotated[Principal, Depends(scoped("Patient", "r"))]
OrderUpdater = Annotated[Principal, Depends(scoped("ServiceRequest", "u"))]
CountReader = Annotated[Principal, Depends(scoped(COUNT_SCOPE_TYPE, "s"))]
MAX_CODES = 50


def _tokens(values: list[str]) -> list[str]:
    tokens = [t.strip() for v in values for t in v.split(",") if t.strip()]
    if len(tokens) > MAX_CODES:
        raise InvalidInput(f"at most {MAX_CODES} codes per request", expression="code")
    return tokens


def _parameters(body: Any) -> tuple[list[str], str | None]:
    """``code`` (valueString system|code, or valueCoding) and ``institution`` (valueString,
    or valueIdentifier) from a Parameters resource."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidInput("the body must be a Parameters resource", expression="Parameters")
    codes: list[str] = []
    institution: str | None = None
    for index, parameter in enumerate(body.get("parameter") or []):
        where = f"Parameters.parameter[{index}]"
        if not isinstance(parameter, dict):
            raise InvalidInput("a parameter must be an object", expression=where)
        name = parameter.get("name")
        if name == "code":
            coding = parameter.get("valueCoding")
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                system = coding.get("system")
                codes.append(
                    f"{system}|{coding['code']}" if isinstance(system, str) else coding["code"]
                )
            elif isinstance(parameter.get("valueString"), str):
                codes.append(parameter["valueString"])
            else:
                raise InvalidInput(
                    "code takes valueCoding or valueString (system|code)", expression=where
                )
        elif name == "institution":
            ident = parameter.get("valueIdentifier")
            value = ident.get("value") if isinstance(ident, dict) else parameter.get("valueString")
            if not isinstance(value, str) or not value:
                raise InvalidInput(
                    "institution takes valueString or valueIdentifier", expression=where
                )
            institution = value
        else:
            raise InvalidInput(f"unknown parameter {name!r}", expression=f"{where}.name")
    return _tokens(codes), institution


def _bundle(request: Request, result: RecentResults) -> JSONResponse:
    base = str(request.base_url).rstrip("/") + "/fhir"
    entries: list[dict[str, Any]] = []
    issues: list[dict[str, Any]] = []
    for finding in result.findings:
        entries.append(
            {
                "fullUrl": f"{base}/{finding.reference}",
                "extension": [recognition_extension(finding)],
                "resource": dict(finding.resource),
                "search": {"mode": "match"},
            }
        )
        verdict = "recognised" if finding.decision.recognised else "not recognised"
        issues.append(
            {
                "severity": "information",
                "code": "informational",
                "diagnostics": f"{finding.reference}: {finding.test.name} "
                f"({local_day(finding.taken).isoformat()}, valid until "
                f"{finding.valid_until.isoformat()}) {verdict}: {finding.decision.detail}",
            }
        )
    for token in result.unmatched:
        issues.append(
            {
                "severity": "warning",
                "code": "not-found",
                "diagnostics": f"{token} is not in the result recognition table (no validity "
                "window): no results are returned for it",
                "expression": ["code"],
            }
        )
    if result.guidance is not None:
        issues.append(
            {
                "severity": "warning",
                "code": "suppressed",
                "diagnostics": "other institutions' results about this person are not shown: "
                + result.guidance,
                "expression": ["X-Break-Glass-Reason"],
            }
        )
    if result.break_glass_exception is not None:
        issues.append(
            {
                "severity": "information",
                "code": "informational",
                "diagnostics": "break-the-glass access: audited with purpose of use BTG and "
                f"opened for review (access exception {result.break_glass_exception})",
            }
        )
    if not issues:
        issues.append(
            {
                "severity": "information",
                "code": "informational",
                "diagnostics": "no equivalent result within its validity window",
            }
        )
    entries.append(
        {
            "resource": {"resourceType": "OperationOutcome", "issue": issues},
            "search": {"mode": "outcome"},
        }
    )
    return fhir_response(
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(result.findings),
            "link": [{"relation": "self", "url": str(request.url)}],
            "entry": entries,
        }
    )


@fhir_router.get("/Patient/{patient_id}/$recent-results")
def recent_results(patient_id: str, request: Request, caller: PatientReader) -> JSONResponse:
    """Equivalent results of the person (every institution) within their validity window,
    each marked recognised or not for the ordering institution."""
    params = request.query_params
    unknown = sorted(set(params) - {"code", "institution"})
    if unknown:
        raise InvalidInput(f"unsupported parameter {unknown[0]}", expression=unknown[0])
    result = platform_of(request).recognition.recent_results(
        caller,
        patient_id,
        _tokens(params.getlist("code")),
        params.get("institution"),
        break_glass_reason=request.headers.get(BREAK_GLASS_HEADER),
    )
    return _bundle(request, result)


@fhir_router.post("/Patient/{patient_id}/$recent-results")
async def recent_results_post(
    patient_id: str, request: Request, caller: PatientReader
) -> JSONResponse:
    """The same with a Parameters body."""
    codes, institution = _parameters(await json_body(request))
    result = platform_of(request).recognition.recent_results(
        caller,
        patient_id,
        codes,
        institution,
        break_glass_reason=request.headers.get(BREAK_GLASS_HEADER),
    )
    return _bundle(request, result)


@router.post("/acknowledgements")
async def acknowledge(request: Request, caller: OrderUpdater) -> JSONResponse:
    """The ordering institution records what it did about an alerted order."""
    try:
        body = await request.json()
    except ValueError:
        raise InvalidInput("the body must be a JSON object", expression="$") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object", expression="$")
    order = body.get("order")
    if not isinstance(order, str) or not order.startswith("ServiceRequest/"):
        raise InvalidInput("order must be ServiceRequest/<id>", expression="order")
    result = body.get("result")
    if result is not None and not isinstance(result, str):
        raise InvalidInput(
            "result must be a reference such as Observation/<id>", expression="result"
        )
    decision = body.get("decision")
    if not isinstance(decision, str):
        raise InvalidInput("decision must be use-existing or repeat", expression="decision")
    done = platform_of(request).recognition.acknowledge(
        caller, order.removeprefix("ServiceRequest/"), decision, result
    )
    return JSONResponse(
        {"order": f"ServiceRequest/{done.order_id}", "outcome": done.outcome, "result": done.result}
    )


@router.get("/counts")
def counts(request: Request, caller: CountReader) -> JSONResponse:
    """Alerts and avoided duplicates per test and institution (no personal data)."""
    params = request.query_params
    since = parse_day(params.get("since"), "since")
    if since is None:
        raise InvalidInput("since is required", expression="since")
    until = parse_day(params.get("until"), "until")
    by = params.get("by", "ordering")
    rows = platform_of(request).recognition.counts(since, until, by)
    return JSONResponse(
        {
            "since": since.isoformat(),
            "until": until.isoformat() if until else None,
            "by": by,
            "rows": [row.as_dict() for row in rows],
        }
    )
