"""HS256 bearer tokens (JWT): issued for operators and tests, and checked strictly — every claim
the gateway reads must have its exact type, or the token is refused naming the claim."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.problems import Unauthenticated

MAX_TOKEN_LENGTH = 8192
MAX_SUBJECT_LENGTH = 200
MAX_SAGA_TYPES = 1000


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a valid token says: who (`sub`) and, when it names them, which saga types."""

    subject: str
    sagas: frozenset[str] | None


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


def bad_claim(claim: str, detail: str) -> Unauthenticated:
    return Unauthenticated(f"the bearer token's {claim!r} claim {detail}", claim=claim)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_token(secret: str, token: str, now: float | None = None) -> TokenClaims:
    """The claims of `token` when it is signed with `secret`, unexpired and well-typed;
    raises Unauthenticated (401) otherwise, naming the claim at fault."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise Unauthenticated("the bearer token is too long")
    try:
        header_b64, payload_b64, signature_b64 = token.split(".")
        signed = f"{header_b64}.{payload_b64}".encode("ascii")
        header = orjson.loads(_unb64url(header_b64))
        signature = _unb64url(signature_b64)
        claims = orjson.loads(_unb64url(payload_b64))
    except (ValueError, orjson.JSONDecodeError):
        raise Unauthenticated("the bearer token is malformed") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise Unauthenticated("the bearer token must be signed with HS256")
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise Unauthenticated("the bearer token's signature is not valid")
    if not isinstance(claims, dict):
        raise Unauthenticated("the bearer token's payload is not a JSON object")
    now = time.time() if now is None else now
    subject = claims.get("sub")
    if not isinstance(subject, str):
        raise bad_claim("sub", "is missing or not a string")
    if not subject or len(subject) > MAX_SUBJECT_LENGTH or not subject.isprintable():
        raise bad_claim("sub", f"must be 1 to {MAX_SUBJECT_LENGTH} printable characters")
    exp: Any = claims.get("exp")
    if not _is_number(exp):
        raise bad_claim("exp", "is missing or not a number")
    if exp < now:
        raise Unauthenticated("the bearer token has expired", claim="exp")
    if "nbf" in claims:
        nbf = claims["nbf"]
        if not _is_number(nbf) or nbf > now:
            raise bad_claim("nbf", "is not a number or lies in the future")
    return TokenClaims(subject, _saga_types(claims))


def _saga_types(claims: dict[str, Any]) -> frozenset[str] | None:
    """`sagas` absent: every saga type; a list of strings: those; anything else is refused
    (failing open here would let a malformed token start any saga)."""
    if "sagas" not in claims:
        return None
    sagas = claims["sagas"]
    if not isinstance(sagas, list) or not all(isinstance(item, str) for item in sagas):
        raise bad_claim("sagas", "must be a list of saga type names (strings)")
    if len(sagas) > MAX_SAGA_TYPES:
        raise bad_claim("sagas", f"names more than {MAX_SAGA_TYPES} saga types")
    return frozenset(sagas)
