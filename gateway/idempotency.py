"""Idempotency-Key: a key is scoped to the caller, and bound to the body it first came with.

The scoped key (a hash of principal and key) is what the UNIQUE `requests.idempotency_key`
column holds, so two concurrent requests with one key cannot both insert: the loser reads the
winner's row and answers with it. Keys are freed after `idempotency_retention_s`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from gateway.problems import BadRequest, IdempotencyKeyReused
from gateway.request_state import RequestState

MAX_KEY_LENGTH = 255


def check_key(key: str | None) -> str | None:
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise BadRequest(f"Idempotency-Key must be 1–{MAX_KEY_LENGTH} printable characters")
    return key


def scoped_key(principal: str, key: str) -> str:
    """What the database stores: one caller's key never collides with another's."""
    return hashlib.sha256(f"{principal}\n{key}".encode()).hexdigest()


def body_hash(saga_type: str, body: Any) -> str:
    """A fingerprint of what was asked: the saga type and the JSON body, key order ignored."""
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(saga_type.encode() + b"\n" + canonical).hexdigest()


def check_replay(existing: RequestState, fingerprint: str) -> None:
    """The same key may only come back with the same body (and saga type)."""
    if existing.body_hash != fingerprint:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was first used with another body or saga type; "
            "use a new key for a new request",
            request_id=existing.id,
        )
