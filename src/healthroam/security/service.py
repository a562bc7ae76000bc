"""Use cases for institutions, API clients, token grants and the audit trail."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from sqlalchemy import Connection

from healthroam.db.engine import Database
from healthroam.errors import Conflict, InvalidInput, NotAuthenticated, NotFound, OAuthError
from healthroam.security.audit import Action, AuditRecord, Outcome, VerifyReport
from healthroam.security.audit_repository import AuditRepository
from healthroam.security.group_commit import AuditGroupCommit, Share
from healthroam.security.model import ApiClient, Institution, InstitutionKind, Principal
from healthroam.security.passwords import hash_secret, new_secret, verify_secret
from healthroam.security.repository import ClientRepository, InstitutionRepository
from healthroam.security.scopes import ScopeSet
from healthroam.security.tokens import AccessToken, TokenService

Clock = Callable[[], datetime]
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# SMART Backend Services: servers support RS384 and ES384; RS256/ES256 are accepted too.
ASSERTION_ALGORITHMS = ["RS384", "ES384", "RS256", "ES256", "PS384", "PS256"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class InstitutionService:
    def __init__(self, db: Database, clock: Clock = utcnow) -> None:
        self.db, self.clock = db, clock

    def add(
        self, *, code: str, name: str, kind: str, region: str, level: int | None = None
    ) -> Institution:
        try:
            kind_value = InstitutionKind(kind)
        except ValueError:
            allowed = ", ".join(k.value for k in InstitutionKind)
            raise InvalidInput(f"kind must be one of: {allowed}", expression="kind") from None
        institution = Institution(code=code, name=name, kind=kind_value, region=region, level=level)
        with self.db.transaction() as conn:
            if not InstitutionRepository(conn).add(institution, self.clock()):
                raise Conflict(f"institution {code} already exists", expression="code")
        return institution

    def get(self, code: str) -> Institution:
        with self.db.transaction(readonly=True) as conn:
            institution = InstitutionRepository(conn).get(code)
        if institution is None:
            raise NotFound(f"no institution with code {code}", expression="institution")
        return institution

    def list(self) -> list[Institution]:
        with self.db.transaction(readonly=True) as conn:
            return InstitutionRepository(conn).list()


@dataclass(frozen=True, slots=True)
class NewClient:
    client: ApiClient
    client_secret: str | None  # shown once, never stored


class ClientService:
    def __init__(self, db: Database, clock: Clock = utcnow) -> None:
        self.db, self.clock = db, clock
        # Called with a client id after its active state changed (AuthService.forget_client).
        self.on_change: list[Callable[[str], None]] = []

    def add(
        self,
        *,
        institution_code: str,
        scopes: str,
        name: str | None = None,
        jwks: dict[str, Any] | None = None,
        with_secret: bool = True,
    ) -> NewClient:
        scope_set = ScopeSet.parse(scopes)
        if jwks is not None:
            _check_jwks(jwks)
        if not with_secret and jwks is None:
            raise InvalidInput(
                "a client needs a secret or a public key set (JWKS) to authenticate",
                expression="jwks",
            )
        secret = new_secret() if with_secret else None
        client = ApiClient(
            client_id=secrets.token_hex(16),
            institution_code=institution_code,
            name=name or institution_code,
            scopes=scope_set,
            active=True,
            created_at=self.clock(),
            has_secret=secret is not None,
            jwks=jwks,
        )
        with self.db.transaction() as conn:
            if InstitutionRepository(conn).get(institution_code) is None:
                raise NotFound(
                    f"no institution with code {institution_code}", expression="institution"
                )
            ClientRepository(conn).add(client, hash_secret(secret) if secret else None)
        return NewClient(client, secret)

    def set_active(self, client_id: str, active: bool) -> None:
        with self.db.transaction() as conn:
            if not ClientRepository(conn).set_active(client_id, active, self.clock()):
                raise NotFound(f"no client {client_id}", expression="client_id")
        for listener in self.on_change:
            listener(client_id)

    def list(self, institution_code: str | None = None) -> list[ApiClient]:
        with self.db.transaction(readonly=True) as conn:
            return ClientRepository(conn).list(institution_code)


def _check_jwks(jwks: dict[str, Any]) -> None:
    keys = jwks.get("keys")
    if not isinstance(keys, list) or not keys:
        raise InvalidInput("JWKS must have a non-empty 'keys' array", expression="jwks")
    for index, key in enumerate(keys):
        try:
            jwt.PyJWK(key)
        except (jwt.PyJWKError, jwt.InvalidKeyError, TypeError) as exc:
            raise InvalidInput(
                f"key {index} is not a usable JWK: {exc}", expression="jwks"
            ) from None
        if "d" in key or "p" in key:
            raise InvalidInput(f"key {index} contains private material", expression="jwks")


@dataclass(frozen=True, slots=True)
class TokenGrant:
    access_token: str
    expires_in: int
    scopes: ScopeSet
    client_id: str
    institution_code: str


class AuthService:
    """OAuth 2.0 client-credentials grants (SMART Backend Services) and token checks.

    Hot paths (card verification) use :meth:`token` and :meth:`cached_client_active`: a token
    whose signature was checked once is remembered until it expires, and a client's active
    state for ``client_state_ttl`` seconds. Those callers re-check the client in the
    transaction that does their work, so a client disabled by another process is still refused
    on its next request; in this process :meth:`forget_client` (wired to
    ``ClientService.set_active``) drops the cached state at once.
    """

    TOKEN_CACHE_SIZE = 10_000

    def __init__(
        self,
        db: Database,
        tokens: TokenService,
        token_endpoint: str,
        max_assertion_seconds: int,
        clock: Clock = utcnow,
        *,
        client_state_ttl: float = 1.0,
    ) -> None:
        self.db, self.tokens, self.clock = db, tokens, clock
        self.token_endpoint = token_endpoint
        self.max_assertion_seconds = max_assertion_seconds
        self.client_state_ttl = client_state_ttl
        self._lock = threading.Lock()
        self._verified: dict[str, AccessToken] = {}
        self._client_state: dict[str, tuple[bool, float]] = {}

    def grant(
        self,
        *,
        grant_type: str | None,
        scope: str | None,
        basic: tuple[str, str] | None,
        assertion_type: str | None,
        assertion: str | None,
    ) -> TokenGrant:
        if grant_type != "client_credentials":
            raise OAuthError(
                "unsupported_grant_type", "only grant_type=client_credentials is supported"
            )
        with self.db.transaction() as conn:
            repo = ClientRepository(conn)
            if basic is not None and assertion is None:
                client = self._by_secret(repo, *basic)
            elif assertion is not None and basic is None:
                if assertion_type != JWT_BEARER:
                    raise OAuthError(
                        "invalid_request", f"client_assertion_type must be {JWT_BEARER}"
                    )
                client = self._by_assertion(repo, assertion)
            else:
                raise OAuthError(
                    "invalid_client",
                    "authenticate with exactly one method: HTTP Basic (client_secret_basic) "
                    "or client_assertion (private_key_jwt)",
                    status=401,
                )
            if not repo.is_active(client.client_id):
                raise OAuthError("invalid_client", "client is disabled", status=401)
            try:
                granted = client.scopes.grant(ScopeSet.parse(scope) if scope else None)
            except InvalidInput as exc:
                raise OAuthError("invalid_scope", exc.detail) from None
        encoded, _ = self.tokens.issue(client.client_id, client.institution_code, granted)
        return TokenGrant(
            access_token=encoded,
            expires_in=self.tokens.ttl_seconds,
            scopes=granted,
            client_id=client.client_id,
            institution_code=client.institution_code,
        )

    def _by_secret(self, repo: ClientRepository, client_id: str, secret: str) -> ApiClient:
        stored = repo.secret_hash(client_id)
        client = repo.get(client_id) if stored else None
        if not verify_secret(stored, secret) or client is None:
            raise OAuthError("invalid_client", "unknown client or wrong secret", status=401)
        return client

    def _by_assertion(self, repo: ClientRepository, assertion: str) -> ApiClient:
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
            header = jwt.get_unverified_header(assertion)
        except jwt.InvalidTokenError:
            raise OAuthError(
                "invalid_client", "client_assertion is not a JWT", status=401
            ) from None
        client_id = unverified.get("iss")
        client = repo.get(client_id) if isinstance(client_id, str) else None
        if client is None or not client.jwks:
            raise OAuthError(
                "invalid_client", "unknown client or no registered public keys", status=401
            )
        key = _select_key(client.jwks, header.get("kid"), header.get("alg"))
        try:
            claims = jwt.decode(
                assertion,
                key,
                algorithms=ASSERTION_ALGORITHMS,
                audience=self.token_endpoint,
                issuer=client.client_id,
                options={"require": ["iss", "sub", "aud", "exp", "jti"]},
                leeway=30,
            )
        except jwt.InvalidTokenError as exc:
            raise OAuthError(
                "invalid_client", f"client_assertion refused: {exc}", status=401
            ) from None
        if claims["sub"] != client.client_id:
            raise OAuthError("invalid_client", "client_assertion sub must equal iss", status=401)
        now = self.clock()
        expires_at = datetime.fromtimestamp(claims["exp"], UTC)
        if expires_at - now > timedelta(seconds=self.max_assertion_seconds):
            raise OAuthError(
                "invalid_client", "client_assertion expires too far in the future", status=401
            )
        repo.forget_expired_assertions(now - timedelta(seconds=60))
        if not repo.remember_assertion(client.client_id, str(claims["jti"]), expires_at):
            raise OAuthError("invalid_client", "client_assertion jti was already used", status=401)
        return client

    def authenticate(self, bearer: str) -> Principal:
        """Turn a bearer token into a Principal; the client must still be active right now."""
        token = self.token(bearer)
        if not self.client_active(token.client_id):
            raise NotAuthenticated("the client that holds this token is disabled")
        return self.principal(token)

    def token(self, bearer: str) -> AccessToken:
        """The checked access token (signature checked on first sight, expiry every time)."""
        token = self._verified.get(bearer)
        if token is None:
            token = self.tokens.verify(bearer)
            with self._lock:
                if len(self._verified) >= self.TOKEN_CACHE_SIZE:
                    self._verified.clear()
                self._verified[bearer] = token
        if token.expires_at <= datetime.now(UTC):
            self._verified.pop(bearer, None)
            raise NotAuthenticated("access token has expired")
        return token

    @staticmethod
    def principal(token: AccessToken) -> Principal:
        return Principal(
            client_id=token.client_id, institution_code=token.institution_code, scopes=token.scopes
        )

    def client_active(self, client_id: str) -> bool:
        """Whether the client is active, read from the database (and remembered)."""
        with self.db.transaction(readonly=True) as conn:
            active = ClientRepository(conn).is_active(client_id)
        with self._lock:
            self._client_state[client_id] = (active, time.monotonic())
        return active

    def cached_client_active(self, client_id: str) -> bool | None:
        """The client's active state if read less than ``client_state_ttl`` seconds ago."""
        state = self._client_state.get(client_id)
        if state is None or time.monotonic() - state[1] >= self.client_state_ttl:
            return None
        return state[0]

    def forget_client(self, client_id: str) -> None:
        with self._lock:
            self._client_state.pop(client_id, None)


def _select_key(jwks: dict[str, Any], kid: Any, alg: Any) -> Any:
    keys = [k for k in jwks.get("keys", []) if kid is None or k.get("kid") == kid]
    if not keys:
        raise OAuthError(
            "invalid_client", "no registered key matches the assertion's kid", status=401
        )
    if alg not in ASSERTION_ALGORITHMS:
        raise OAuthError("invalid_client", f"assertion algorithm {alg} is not accepted", status=401)
    return jwt.PyJWK(keys[0], algorithm=alg).key


_COLLECTING = "healthroam.audit.collecting"  # Connection.info key of collecting()'s list


@contextmanager
def deferred_audit(conn: Connection) -> Iterator[list[AuditRecord]]:
    """Like :meth:`AuditTrail.collecting`, for a caller that holds no AuditTrail (the HL7 v2
    gateway around a whole group of messages): entries appended on ``conn`` inside the block
    (including those of nested ``collecting`` blocks, which join this one) are written in one
    insert when it ends without an error, in the order appended. A caller that rolls back part
    of its work truncates the yielded list to its length before that part. Not nestable."""
    if conn.info.get(_COLLECTING) is not None:
        raise RuntimeError("audit entries are already being collected on this connection")
    pending: list[AuditRecord] = []
    conn.info[_COLLECTING] = pending
    try:
        yield pending
    finally:
        del conn.info[_COLLECTING]
    AuditRepository(conn).enqueue(pending)


def _enqueue(conn: Connection, records: list[AuditRecord]) -> None:
    AuditRepository(conn).enqueue(records)


class AuditTrail:
    """The one audit service: every read and write of personal data goes through it."""

    def __init__(self, db: Database, clock: Clock = utcnow, default_purpose: str = "TREAT") -> None:
        self.db, self.clock, self.default_purpose = db, clock, default_purpose
        self.group_commit = AuditGroupCommit(db, _enqueue)

    def event(
        self,
        principal: Principal | None,
        *,
        action: Action,
        subtype: str,
        event_type: str = "rest",
        outcome: Outcome = Outcome.SUCCESS,
        resource_type: str | None = None,
        resource_id: str | None = None,
        patient_ref: str | None = None,
        query: str | None = None,
        detail: str | None = None,
    ) -> AuditRecord:
        return AuditRecord(
            recorded_at=self.clock(),
            action=action,
            event_type=event_type,
            subtype=subtype,
            outcome=outcome,
            purpose_of_use=(principal.purpose_of_use if principal else None)
            or self.default_purpose,
            client_id=principal.client_id if principal else None,
            institution_code=principal.institution_code if principal else None,
            end_user=principal.end_user if principal else None,
            resource_type=resource_type,
            resource_id=resource_id,
            patient_ref=patient_ref,
            query=query,
            source_address=principal.source_address if principal else None,
            detail=detail,
        )

    def patient_queries(
        self,
        principal: Principal,
        refs: Iterable[str],
        *,
        subtype: str,
        query: str | None = None,
        detail: str | None = None,
    ) -> list[AuditRecord]:
        """One query entry per patient (``Patient/<id>``) whose data an operation returned
        ($everything, bulk export, recent results)."""
        return [
            self.event(
                principal,
                action=Action.EXECUTE,
                event_type="query",
                subtype=subtype,
                resource_type="Patient",
                resource_id=ref.split("/", 1)[1],
                patient_ref=ref,
                query=query,
                detail=detail,
            )
            for ref in refs
        ]

    def append(self, conn: Connection, records: Sequence[AuditRecord]) -> None:
        """Record inside the caller's transaction, so the audit commits with the data. The
        entry goes to the inbox; :meth:`seal` chains it (the API server seals continuously).
        Inside :meth:`collecting` on the same connection the records wait for its end."""
        pending = conn.info.get(_COLLECTING)
        if pending is not None:
            pending.extend(records)
        else:
            AuditRepository(conn).enqueue(records)

    @contextmanager
    def collecting(self, conn: Connection) -> Iterator[list[AuditRecord]]:
        """Entries appended on ``conn`` inside the block are written in one insert when it
        ends without an error (an HL7 v2 message: its registration, creates, updates and
        look-ups), in the order appended; on an error nothing is written (the caller's
        transaction or savepoint is rolled back with the data). A caller that rolls back a
        savepoint inside the block and carries on truncates the yielded list to its length
        before the savepoint. A nested block joins the outer one."""
        if conn.info.get(_COLLECTING) is not None:
            yield conn.info[_COLLECTING]
            return
        pending: list[AuditRecord] = []
        conn.info[_COLLECTING] = pending
        try:
            yield pending
        finally:
            del conn.info[_COLLECTING]
        AuditRepository(conn).enqueue(pending)

    def shared(self) -> AbstractContextManager[Share]:
        """Group commit around a transaction: ``with audit.shared() as share,
        db.transaction() as conn:`` ... ``share.join(conn, records)``. The entries of
        concurrent transactions are committed together, by one of them (see
        ``security/group_commit.py``); the block ends once this one's are committed, or
        raises (:class:`AuditNotRecorded` when their commit failed)."""
        return self.group_commit.sharing()

    def record_shared(self, records: Sequence[AuditRecord]) -> None:
        """Record in a transaction shared with concurrent callers (group commit); return once
        committed, raise :class:`AuditNotRecorded` if that commit failed. For an access whose
        own transaction has ended: a read answers only after this returns."""
        self.group_commit.commit(records)

    def record(self, records: Sequence[AuditRecord]) -> None:
        """Record in a transaction of its own (for failures and reads outside a transaction)."""
        with self.db.transaction() as conn:
            AuditRepository(conn).enqueue(records)

    def seal(self, batch: int = 10_000) -> int:
        """Seal every waiting entry into the hash chain; return how many."""
        sealed = 0
        while True:
            with self.db.transaction() as conn:
                count = AuditRepository(conn).seal(batch)
            sealed += count
            if count < batch:
                return sealed

    def pending(self) -> int:
        with self.db.transaction(readonly=True) as conn:
            return AuditRepository(conn).pending()

    def verify(self) -> VerifyReport:
        self.seal()
        with self.db.transaction(readonly=True) as conn:
            return AuditRepository(conn).verify()

    def search(self, **criteria: Any) -> tuple[list[tuple[int, AuditRecord]], int]:
        self.seal()
        with self.db.transaction(readonly=True) as conn:
            return AuditRepository(conn).search(**criteria)

    def get(self, seq: int) -> AuditRecord:
        self.seal()
        with self.db.transaction(readonly=True) as conn:
            record = AuditRepository(conn).get(seq)
        if record is None:
            raise NotFound(f"no AuditEvent {seq}", expression="AuditEvent.id")
        return record
