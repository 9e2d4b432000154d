"""Who is calling: API keys (stored hashed) or HMAC-signed bearer tokens → a principal.

API keys arrive as `X-API-Key: <key>` or `Authorization: ApiKey <key>`; tokens as
`Authorization: Bearer <HS256 JWT>` with `sub` (the principal) and `exp`. With no keys and no
token secret configured, authentication is off and every caller is the principal `anonymous`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

import orjson
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from starlette.requests import Request

from gateway.problems import Forbidden, Unauthenticated
from sagaway.settings import ApiKeyConfig, GatewaySettings

ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Identity:
    """The authenticated caller; `sagas` None means every saga type."""

    principal: str
    sagas: frozenset[str] | None = None
    authenticated: bool = True

    def check_may_start(self, saga_type: str) -> None:
        if self.sagas is not None and saga_type not in self.sagas:
            raise Forbidden(f"{self.principal!r} may not start sagas of type {saga_type!r}")


def hash_api_key(key: str) -> str:
    """The `sha256:<hex>` form to put in the configuration for `key`."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(
    secret: str, subject: str, ttl_s: float = 3600, sagas: list[str] | None = None
) -> str:
    """An HS256 JWT the gateway accepts (for operators and tests issuing tokens)."""
    header = _b64url(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
    claims: dict[str, Any] = {"sub": subject, "exp": int(time.time() + ttl_s)}
    if sagas is not None:
        claims["sagas"] = sagas
    payload = _b64url(orjson.dumps(claims))
    signature = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


class Authenticator:
    """Checks credentials against the settings; verified API keys are remembered (by their
    SHA-256) so argon2 runs once per key, not once per request."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.keys: dict[str, ApiKeyConfig] = dict(settings.api_keys)
        self.secret = settings.bearer_secret.get_secret_value() if settings.bearer_secret else None
        self.enabled = bool(self.keys) or self.secret is not None
        self._hasher = PasswordHasher()
        self._known: dict[str, Identity] = {}

    def authenticate(self, request: Request) -> Identity:
        if not self.enabled:
            return Identity(ANONYMOUS, authenticated=False)
        authorization = request.headers.get("authorization", "")
        scheme, _, credential = authorization.partition(" ")
        api_key = request.headers.get("x-api-key")
        if api_key is None and scheme.lower() == "apikey":
            api_key = credential.strip()
        if api_key:
            return self._api_key(api_key)
        if scheme.lower() == "bearer" and credential.strip():
            return self._token(credential.strip())
        raise Unauthenticated(
            "send an API key (X-API-Key: <key>) or a bearer token (Authorization: Bearer <token>)"
        )

    def _api_key(self, key: str) -> Identity:
        digest = hashlib.sha256(key.encode()).hexdigest()
        known = self._known.get(digest)
        if known is not None:
            return known
        for name, config in self.keys.items():
            if self._matches(key, digest, config.hash):
                identity = Identity(
                    name, frozenset(config.sagas) if config.sagas is not None else None
                )
                self._known[digest] = identity
                return identity
        raise Unauthenticated("the API key is not valid")

    def _matches(self, key: str, digest: str, stored: str) -> bool:
        if stored.startswith("sha256:"):
            return hmac.compare_digest(stored[len("sha256:") :].lower(), digest)
        if stored.startswith("$argon2"):
            try:
                return bool(self._hasher.verify(stored, key))
            except (VerificationError, InvalidHashError):
                return False
        return False

    def _token(self, token: str) -> Identity:
        if self.secret is None:
            raise Unauthenticated("bearer tokens are not accepted here; use an API key")
        try:
            header_b64, payload_b64, signature_b64 = token.split(".")
            header = orjson.loads(_unb64url(header_b64))
            expected = hmac.new(
                self.secret.encode(), f"{header_b64}.{payload_b64}".encode(), hashlib.sha256
            ).digest()
            signature = _unb64url(signature_b64)
            claims = orjson.loads(_unb64url(payload_b64))
        except (ValueError, orjson.JSONDecodeError):
            raise Unauthenticated("the bearer token is malformed") from None
        if not isinstance(header, dict) or header.get("alg") != "HS256":
            raise Unauthenticated("the bearer token must be signed with HS256")
        if not hmac.compare_digest(signature, expected):
            raise Unauthenticated("the bearer token's signature is not valid")
        if not isinstance(claims, dict) or not isinstance(claims.get("sub"), str):
            raise Unauthenticated("the bearer token has no subject (sub)")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp < time.time():
            raise Unauthenticated("the bearer token has expired")
        sagas = claims.get("sagas")
        return Identity(claims["sub"][:200], frozenset(sagas) if isinstance(sagas, list) else None)
