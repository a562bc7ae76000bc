"""Test helpers: set up institutions, clients and tokens through the real services."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient

from healthroam.bootstrap import Platform


@dataclass
class Client:
    client_id: str
    secret: str
    institution: str


class Province:
    """Sets up institutions and clients through the real services."""

    def __init__(self, platform: Platform, http: TestClient) -> None:
        self.platform, self.http = platform, http
        self._n = 0

    def institution(
        self, code: str | None = None, *, kind: str = "hospital", level: int | None = 3
    ) -> str:
        self._n += 1
        code = code or f"H{self._n:03d}"
        self.platform.institutions.add(
            code=code,
            name=f"测试医院{self._n}",
            kind=kind,
            region="460106",
            level=level if kind == "hospital" else None,
        )
        return code

    def client(self, scope: str = "system/Patient.cruds", institution: str | None = None) -> Client:
        institution = institution or self.institution()
        created = self.platform.clients.add(institution_code=institution, scopes=scope)
        assert created.client_secret
        return Client(created.client.client_id, created.client_secret, institution)

    def token(self, client: Client, scope: str | None = None) -> str:
        data = {"grant_type": "client_credentials"}
        if scope:
            data["scope"] = scope
        response = self.http.post("/auth/token", data=data, auth=(client.client_id, client.secret))
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def headers(
        self, scope: str = "system/Patient.cruds", institution: str | None = None
    ) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(self.client(scope, institution))}"}


def national_id(region: str = "460106", born: str = "19900101", sequence: int = 123) -> str:
    """A valid 18-digit resident ID number (GB 11643) for tests."""
    from healthroam.registry.idnumber import check_character

    body = f"{region}{born}{sequence:03d}"
    return body + check_character(body)


def patient(
    name: str = "黎阿妹",
    *,
    gender: str = "female",
    born: str = "1990-01-01",
    sequence: int = 124,
    region: str = "460106",
    **extra: Any,
) -> dict[str, Any]:
    """A Patient that the registry accepts (name, birth date, a valid national ID)."""
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "name": [{"text": name}],
        "gender": gender,
        "birthDate": born,
        "identifier": [
            {
                "system": "urn:oid:2.16.156.10011.1.3",
                "value": national_id(region, born.replace("-", ""), sequence),
            }
        ],
    }
    resource.update(extra)
    return resource


def post_created(
    http: TestClient, headers: dict[str, str], resource: dict[str, Any]
) -> dict[str, Any]:
    """POST ``resource`` to /fhir/<type>; it must be created (201). Returns the stored body."""
    r = http.post(f"/fhir/{resource['resourceType']}", json=resource, headers=headers)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def make_patient(http: TestClient, headers: dict[str, str], seq: int = 124, **extra: Any) -> str:
    """Create :func:`patient` (national ID sequence ``seq``) over the API; returns its id."""
    return str(post_created(http, headers, patient(sequence=seq, **extra))["id"])


def make_observation(http: TestClient, headers: dict[str, str]) -> tuple[str, str]:
    """Create a Patient and an Observation about it over the API; returns both ids."""
    pid = make_patient(http, headers)
    created = post_created(
        http,
        headers,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "pulse"},
            "subject": {"reference": f"Patient/{pid}"},
        },
    )
    return pid, str(created["id"])
