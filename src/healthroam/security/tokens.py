"""Short-lived access tokens: JWTs signed with the platform's P-256 key (ES256)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from healthroam.errors import NotAuthenticated
from healthroam.secret_files import write_once
from healthroam.security.scopes import ScopeSet

ALGORITHM = "ES256"


def load_or_create_signing_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Read the PEM key at ``path``; create one (mode 0600) if it does not exist yet (the
    first of several processes starting at once creates it, the others read it)."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("token signing key must be an EC (P-256) key")
        return key
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    written = write_once(path, pem)  # several server processes may start at once
    if written != pem:
        return load_or_create_signing_key(path)
    return key


@dataclass(frozen=True, slots=True)
class AccessToken:
    client_id: str
    institution_code: str
    scopes: ScopeSet
    expires_at: datetime
    token_id: str


class TokenService:
    def __init__(self, key: ec.EllipticCurvePrivateKey, issuer: str, ttl_seconds: int) -> None:
        self._key = key
        self._public = key.public_key()
        self._issuer = issuer
        self._ttl = timedelta(seconds=ttl_seconds)
        self.key_id = uuid.uuid5(
            uuid.NAMESPACE_OID,
            self._public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ).hex(),
        ).hex[:16]

    @property
    def ttl_seconds(self) -> int:
        return int(self._ttl.total_seconds())

    def issue(
        self, client_id: str, institution_code: str, scopes: ScopeSet, now: datetime | None = None
    ) -> tuple[str, AccessToken]:
        now = now or datetime.now(UTC)
        token = AccessToken(
            client_id=client_id,
            institution_code=institution_code,
            scopes=scopes,
            expires_at=now + self._ttl,
            token_id=uuid.uuid4().hex,
        )
        claims = {
            "iss": self._issuer,
            "sub": client_id,
            "aud": self._issuer,
            "iat": int(now.timestamp()),
            "exp": int(token.expires_at.timestamp()),
            "jti": token.token_id,
            "scope": str(scopes),
            "institution": institution_code,
        }
        encoded = jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.key_id})
        return encoded, token

    def verify(self, encoded: str) -> AccessToken:
        """Decode and check signature, issuer, audience and expiry; raise NotAuthenticated."""
        try:
            claims = jwt.decode(
                encoded,
                self._public,
                algorithms=[ALGORITHM],
                audience=self._issuer,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "sub", "scope", "institution", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise NotAuthenticated("access token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise NotAuthenticated(f"access token is invalid: {exc}") from None
        return AccessToken(
            client_id=claims["sub"],
            institution_code=claims["institution"],
            scopes=ScopeSet.parse(claims["scope"]),
            expires_at=datetime.fromtimestamp(claims["exp"], UTC),
            token_id=claims["jti"],
        )
