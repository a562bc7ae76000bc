"""Every error path answers in its protocol's one shape: OperationOutcome under /fhir,
problem JSON elsewhere (plus RFC 6749 fields at the token endpoint). Never a traceback."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from healthroam.bootstrap import Platform

from helpers import Province


def assert_operation_outcome(
    response: Any, status: int, code: str, expression: str | None = None
) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue["severity"] in ("error", "fatal")
    assert issue["code"] == code
    assert issue["diagnostics"]
    assert "Traceback" not in response.text
    if expression is not None:
        assert issue["expression"] == [expression]


def assert_problem(response: Any, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert set(body) >= {"type", "title", "status", "detail", "instance"}
    assert body["status"] == status
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code", "expression"),
    [
        (b"{not json", "application/fhir+json", 400, "invalid", "$"),
        (b"[]", "application/fhir+json", 400, "invalid", "$"),
        (b'{"resourceType": "Patient"}', "text/plain", 400, "invalid", "Content-Type"),
        (b'{"name": []}', "application/fhir+json", 400, "invalid", "resourceType"),
        (
            b'{"resourceType": "Observation"}',
            "application/fhir+json",
            400,
            "invalid",
            "resourceType",
        ),
        (
            b'{"resourceType": "Patient", "gender": "M"}',
            "application/fhir+json",
            422,
            "processing",
            "Patient.gender",
        ),
        (
            b'{"resourceType": "Patient", "birthDate": "1990-13-01"}',
            "application/fhir+json",
            422,
            "processing",
            "Patient.birthDate",
        ),
        (
            b'{"resourceType": "Patient", "nickname": "x"}',
            "application/fhir+json",
            422,
            "processing",
            "Patient.nickname",
        ),
        (
            b'{"resourceType": "Patient", "name": [{"given": "Wei"}]}',
            "application/fhir+json",
            422,
            "processing",
            "Patient.name[0].given",
        ),
        (
            b'{"resourceType": "Patient", "name": {"family": "Wang"}}',
            "application/fhir+json",
            422,
            "processing",
            "Patient.name",
        ),
        (
            b'{"resourceType": "Patient", "active": "yes"}',
            "application/fhir+json",
            422,
            "processing",
            "Patient.active",
        ),
    ],
)
def test_bad_patient_bodies(
    province: Province,
    http: TestClient,
    body: bytes,
    content_type: str,
    status: int,
    code: str,
    expression: str,
) -> None:
    response = http.post(
        "/fhir/Patient", content=body, headers={**province.headers(), "Content-Type": content_type}
    )
    assert_operation_outcome(response, status, code, expression)


def test_fhir_not_found_and_bad_id(province: Province, http: TestClient) -> None:
    headers = province.headers()
    assert_operation_outcome(http.get("/fhir/Patient/nope", headers=headers), 404, "not-found")
    assert_operation_outcome(
        http.get("/fhir/Patient/" + "x" * 65, headers=headers), 400, "invalid", "Patient.id"
    )
    assert_operation_outcome(http.get("/fhir/NoSuchType/1", headers=headers), 404, "not-found")
    assert_operation_outcome(http.delete("/fhir/Patient/1", headers=headers), 405, "not-supported")


def test_fhir_auth_errors(province: Province, http: TestClient) -> None:
    assert_operation_outcome(http.get("/fhir/Patient/1"), 401, "login")
    assert_operation_outcome(
        http.get("/fhir/Patient/1", headers=province.headers("system/Observation.rs")),
        403,
        "forbidden",
    )


def test_problem_shape_outside_fhir(http: TestClient) -> None:
    assert_problem(http.get("/no/such/route"), 404)
    assert_problem(http.delete("/healthz"), 405)


def test_token_errors_are_problem_and_oauth(http: TestClient) -> None:
    response = http.post(
        "/auth/token", data={"grant_type": "client_credentials"}, auth=("ghost", "secret")
    )
    assert_problem(response, 401)
    assert response.json()["error"] == "invalid_client"


def test_unexpected_failure_is_a_500_without_internals(
    platform: Platform,
    province: Province,
    http: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    headers = province.headers()

    def explode(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("secret detail 460106199001011234")

    monkeypatch.setattr(platform.records, "read", explode)
    response = http.get("/fhir/Patient/abc", headers=headers)
    assert_operation_outcome(response, 500, "exception")
    assert "460106199001011234" not in response.text
    assert "RuntimeError" in caplog.text
    assert "460106199001011234" not in caplog.text
