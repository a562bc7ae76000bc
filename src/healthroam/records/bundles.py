"""Batch and transaction Bundles (``POST /fhir``).

A transaction runs in one database transaction: entries are processed DELETE, POST, PUT/PATCH,
GET (FHIR R4 3.1.0.11.2), ``urn:uuid:`` fullUrls of created resources and conditional
references (``Patient?identifier=...``) are replaced by the real ``Type/id`` everywhere in the
Bundle, and any failure rolls everything back (the answer is that entry's OperationOutcome,
with the entry's index in the expression). A batch runs each entry in its own transaction and
reports each outcome in the response Bundle.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection

from healthroam.errors import (
    Gone,
    HealthroamError,
    InvalidInput,
    NotFound,
    PreconditionFailed,
)
from healthroam.records.deferred import deferring
from healthroam.records.model import StoredResource, instant, operation_outcome
from healthroam.records.search import parse_search
from healthroam.records.service import (
    Created,
    RecordService,
    check_id,
    check_store_type,
    query_items,
    require,
)
from healthroam.records.validation import validate_resource
from healthroam.security.model import Principal

ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


class EntryFailed(HealthroamError):
    """A transaction entry failed: carries the original error and the entry's index."""

    def __init__(self, index: int, error: HealthroamError) -> None:
        super().__init__(f"entry {index}: {error.detail}", expression=error.expression)
        self.status, self.code, self.title = error.status, error.code, error.title
        self.index, self.error = index, error
        expression = f"Bundle.entry[{index}]"
        self.expression = f"{expression}.{error.expression}" if error.expression else expression


@dataclass(slots=True)
class Entry:
    index: int
    method: str
    url: str
    resource: Any
    full_url: str | None
    if_none_exist: str | None
    if_match: str | None
    resource_type: str = ""
    resource_id: str | None = None
    query: str | None = None


def _entries(bundle: dict[str, Any]) -> list[Entry]:
    out = []
    for index, raw in enumerate(bundle.get("entry") or []):
        request = raw.get("request") or {}
        method = str(request.get("method", "")).upper()
        url = str(request.get("url", ""))
        if method not in ORDER or not url:
            raise EntryFailed(
                index, InvalidInput("entry.request needs a method and a url", expression="request")
            )
        entry = Entry(
            index,
            method,
            url,
            raw.get("resource"),
            raw.get("fullUrl"),
            request.get("ifNoneExist"),
            request.get("ifMatch"),
        )
        path, _, query = url.partition("?")
        parts = [p for p in path.split("/") if p]
        if not parts:
            raise EntryFailed(index, InvalidInput("entry.request.url names no resource type"))
        entry.resource_type = parts[0]
        entry.resource_id = parts[1] if len(parts) > 1 else None
        entry.query = query if "?" in url else None
        out.append(entry)
    return out


def _replace_references(node: Any, mapping: dict[str, str]) -> None:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref in mapping:
            node["reference"] = mapping[ref]
        for value in node.values():
            if isinstance(value, dict | list):
                _replace_references(value, mapping)
    elif isinstance(node, list):
        for value in node:
            _replace_references(value, mapping)


def _conditional_references(node: Any, found: list[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and "?" in ref and not ref.startswith(("http", "urn:")):
            found.append(ref)
        for value in node.values():
            if isinstance(value, dict | list):
                _conditional_references(value, found)
    elif isinstance(node, list):
        for value in node:
            _conditional_references(value, found)


def _response(
    stored: StoredResource | None, status: str, base: str, resource: bool = True
) -> dict[str, Any]:
    response: dict[str, Any] = {"status": status}
    entry: dict[str, Any] = {"response": response}
    if stored is not None:
        response["location"] = f"{stored.reference}/_history/{stored.version}"
        response["etag"] = stored.etag
        response["lastModified"] = instant(stored.last_updated)
        entry["fullUrl"] = f"{base}/{stored.reference}"
        if resource:
            entry["resource"] = stored.with_meta()
    return entry


def _created(created: Created, base: str) -> dict[str, Any]:
    """The entry answering a create: a conditional create's match the caller may not read
    is answered by where it is and why it is not shown (decision 0028)."""
    status = "201 Created" if created.created else "200 OK"
    answer = _response(created.stored, status, base, resource=created.withheld is None)
    issues = list(created.notice.issues)  # e.g. duplicate-test alerts on a new ServiceRequest
    if created.withheld is not None:
        issues += operation_outcome("information", "suppressed", created.withheld)["issue"]
    if issues:
        answer["response"]["outcome"] = {"resourceType": "OperationOutcome", "issue": issues}
    return answer


class BundleProcessor:
    def __init__(self, records: RecordService) -> None:
        self.records = records

    def process(self, principal: Principal, bundle: Any, base: str) -> dict[str, Any]:
        """The response Bundle of a batch or transaction (``base`` ends in ``/fhir``)."""
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise InvalidInput("the body must be a Bundle", expression="Bundle")
        kind = bundle.get("type")
        if kind not in ("batch", "transaction"):
            raise InvalidInput("Bundle.type must be batch or transaction", expression="Bundle.type")
        validate_resource(bundle, "Bundle")
        entries = _entries(bundle)
        if kind == "transaction":
            responses = self._transaction(principal, entries, base)
        else:
            responses = self._batch(principal, entries, base)
        return {
            "resourceType": "Bundle",
            "id": str(uuid.uuid4()),
            "type": f"{kind}-response",
            "entry": responses,
        }

    def _batch(self, principal: Principal, entries: list[Entry], base: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{} for _ in entries]
        for entry in sorted(entries, key=lambda e: (ORDER[e.method], e.index)):
            try:
                with self.records.db.transaction() as conn:
                    out[entry.index] = self._run(conn, principal, entry, base)
            except HealthroamError as error:
                self.records.record_refusal(error)  # after the entry's rollback
                out[entry.index] = {
                    "response": {
                        "status": f"{error.status} {error.title}",
                        "outcome": operation_outcome(
                            "error", error.code, error.detail, error.expression
                        ),
                    }
                }
        return out

    def _transaction(
        self, principal: Principal, entries: list[Entry], base: str
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{} for _ in entries]
        ordered = sorted(entries, key=lambda e: (ORDER[e.method], e.index))
        try:
            self._transaction_in(principal, ordered, base, out)
        except EntryFailed as failed:
            self.records.record_refusal(failed.error)  # after the rollback
            raise
        return out

    def _transaction_in(
        self, principal: Principal, ordered: list[Entry], base: str, out: list[dict[str, Any]]
    ) -> None:
        with self.records.db.transaction() as conn:
            current: Entry | None = None
            try:
                # The entries' audit entries in one insert at the end, and on PostgreSQL their
                # version and index rows too (records/deferred.py: a read of those tables in
                # between, a conditional reference or update, flushes first; an error drops
                # them with the rollback). Decision 0058.
                with self.records.audit.collecting(conn), deferring(conn):
                    mapping: dict[str, str] = {}
                    # ids first, so that references between entries can be rewritten
                    for entry in ordered:
                        current = entry
                        check_store_type(entry.resource_type)
                        if entry.method == "POST":
                            self._assign(conn, principal, entry, base, mapping)
                        elif entry.method == "PUT" and entry.full_url and entry.resource_id:
                            mapping[entry.full_url] = f"{entry.resource_type}/{entry.resource_id}"
                    for entry in ordered:
                        current = entry
                        if entry.resource is not None:
                            _replace_references(entry.resource, mapping)
                            self._resolve_conditional(conn, entry, base)
                    for run in self._runs(ordered):
                        if len(run) == 1:
                            current = run[0]
                            out[current.index] = self._run(conn, principal, current, base)
                            continue
                        # Plain creates in a row: checked one by one, then written together
                        resources = []
                        for entry in run:
                            current = entry
                            resources.append(self._checked_create(principal, entry))
                        current = run[0]
                        created = self.records.create_many_in(conn, principal, resources)
                        for entry, one in zip(run, created, strict=True):
                            out[entry.index] = _created(one, base)
            except HealthroamError as error:
                if isinstance(error, EntryFailed):
                    raise
                index = current.index if current is not None else 0
                raise EntryFailed(index, error) from None

    def _plain_create(self, entry: Entry) -> bool:
        """A POST that creates a resource no listener watches and that is not registered:
        what ``create_in`` does for it, ``create_many_in`` does for several (decision 0058)."""
        return (
            entry.method == "POST"
            and entry.resource_type != "Patient"
            and not self.records.listeners.get(entry.resource_type)
        )

    def _runs(self, ordered: list[Entry]) -> list[list[Entry]]:
        """The entries in order, consecutive plain creates grouped."""
        runs: list[list[Entry]] = []
        for entry in ordered:
            if runs and self._plain_create(entry) and self._plain_create(runs[-1][-1]):
                runs[-1].append(entry)
            else:
                runs.append([entry])
        return runs

    def _checked_create(self, principal: Principal, entry: Entry) -> tuple[str, str, Any]:
        """What ``_run`` checks of a POST before its write; the resource to create."""
        rtype = entry.resource_type
        check_store_type(rtype)
        resource = validate_resource(entry.resource, rtype)
        require(principal, rtype, "c")
        resource.pop("id", None)
        assert entry.resource_id is not None  # _assign gave it one
        check_id(entry.resource_id, rtype)
        return rtype, entry.resource_id, resource

    def _assign(
        self,
        conn: Connection,
        principal: Principal,
        entry: Entry,
        base: str,
        mapping: dict[str, str],
    ) -> None:
        """Decide a POST entry's id (or its existing match for a conditional create)."""
        if entry.if_none_exist:
            require(principal, entry.resource_type, "s")
            found = self.records._conditional(conn, entry.resource_type, entry.if_none_exist, base)
            if len(found) > 1:
                raise PreconditionFailed("ifNoneExist matched more than one resource")
            if found:
                entry.resource_id = found[0].id
                entry.method = "POST-EXISTS"
        if entry.resource_id is None:
            entry.resource_id = str(uuid.uuid4())
        if entry.full_url:
            mapping[entry.full_url] = f"{entry.resource_type}/{entry.resource_id}"

    def _resolve_conditional(self, conn: Connection, entry: Entry, base: str) -> None:
        refs: list[str] = []
        _conditional_references(entry.resource, refs)
        mapping = {}
        for ref in refs:
            rtype, _, query = ref.partition("?")
            check_store_type(rtype)
            found = self.records._conditional(conn, rtype, query, base)
            if len(found) != 1:
                raise PreconditionFailed(
                    f"conditional reference {rtype}?... matched {len(found)} resources",
                    expression="reference",
                )
            mapping[ref] = found[0].reference
        if mapping:
            _replace_references(entry.resource, mapping)

    def _run(
        self, conn: Connection, principal: Principal, entry: Entry, base: str
    ) -> dict[str, Any]:
        records = self.records
        rtype = entry.resource_type
        check_store_type(rtype)
        if entry.method == "POST-EXISTS":
            # The fullUrl already points at the match; whether its body is shown is a read.
            assert entry.resource_id is not None
            found = records.load_in(conn, [(rtype, entry.resource_id)])
            if not found:  # deleted by an earlier entry
                raise Gone(f"{rtype}/{entry.resource_id} has been deleted", expression=rtype)
            return _created(records.matched_in(conn, principal, found[0]), base)
        if entry.method == "POST":
            resource = validate_resource(entry.resource, rtype)
            if entry.if_none_exist and entry.resource_id is None:
                created = records.create_in(
                    conn,
                    principal,
                    rtype,
                    resource,
                    if_none_exist=entry.if_none_exist,
                    base_url=base,
                )
            else:
                resource.pop("id", None)
                created = records.create_in(
                    conn, principal, rtype, resource, resource_id=entry.resource_id
                )
            return _created(created, base)
        if entry.method == "PUT":
            resource = validate_resource(entry.resource, rtype)
            if entry.resource_id is not None:
                check_id(entry.resource_id, rtype)
            created = records.update_in(
                conn,
                principal,
                rtype,
                entry.resource_id,
                resource,
                if_match=entry.if_match,
                condition=entry.query,
                base_url=base,
            )
            return _response(created.stored, "201 Created" if created.created else "200 OK", base)
        if entry.method == "PATCH":
            operations = _patch_operations(entry.resource)
            if entry.resource_id is None:
                raise InvalidInput("PATCH entries need Type/id", expression="request.url")
            stored = records.patch_in(
                conn, principal, rtype, entry.resource_id, operations, if_match=entry.if_match
            )
            return _response(stored, "200 OK", base)
        if entry.method == "DELETE":
            deleted = records.delete_in(
                conn, principal, rtype, entry.resource_id, condition=entry.query, base_url=base
            )
            return {"response": {"status": "204 No Content" if deleted else "404 Not Found"}}
        return self._get(conn, principal, entry, base)

    def _get(
        self, conn: Connection, principal: Principal, entry: Entry, base: str
    ) -> dict[str, Any]:
        records = self.records
        rtype = entry.resource_type
        parts = [p for p in urlsplit(entry.url).path.split("/") if p]
        if entry.resource_id is None:
            items = query_items(entry.query or "")
            request = parse_search(rtype, items)
            result = records.search_in(conn, principal, request, items, base)
            from healthroam.records.searchset import searchset

            return {
                "resource": searchset(result, f"{base}/{rtype}", base),
                "response": {"status": "200 OK"},
            }
        if len(parts) == 4 and parts[2] == "_history":
            if not parts[3].isdigit():
                raise InvalidInput("a version id is a positive integer", expression="request.url")
            stored = records.vread_in(conn, principal, rtype, parts[1], int(parts[3]))
        elif len(parts) == 2:
            stored = records.read_in(conn, principal, rtype, parts[1])
        else:
            raise NotFound("this entry's GET url is not supported", expression="request.url")
        return _response(stored, "200 OK", base)


def _patch_operations(resource: Any) -> Any:
    """A PATCH entry carries the JSON Patch as a Binary (base64 data) per FHIR R4."""
    import base64
    import json

    if isinstance(resource, dict) and resource.get("resourceType") == "Binary":
        try:
            return json.loads(base64.b64decode(resource.get("data", "")))
        except (ValueError, TypeError):
            raise InvalidInput(
                "the Binary does not hold a JSON Patch", expression="resource"
            ) from None
    raise InvalidInput(
        "a PATCH entry's resource is a Binary with a JSON Patch", expression="resource"
    )
