"""Who is calling: API keys (stored hashed) or HMAC-signed bearer tokens → a principal.

API keys arrive as `X-API-Key: <key>` or `Authorization: ApiKey <key>`; tokens as
`Authorization: Bearer <HS256 JWT>` (gateway/tokens.py). With no keys and no token secret
configured, authentication is off and every caller is the principal `anonymous`.

Checking a key must never be the cheapest way to stall the gateway (docs/security.md): argon2
runs on a few worker threads, never on the event loop, and a new key arriving while they are all
busy is answered 503 at once; keys found valid or invalid are remembered by their SHA-256, so a
repeated key costs one dictionary look-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from starlette.requests import Request

from gateway.problems import AuthenticationBusy, Forbidden, Unauthenticated
from gateway.tokens import check_token, issue_token
from sagaway.settings import ApiKeyConfig, GatewaySettings

__all__ = ["ANONYMOUS", "Authenticator", "Identity", "hash_api_key", "issue_token"]

ANONYMOUS = "anonymous"
MAX_KEY_LENGTH = 1024
# Wrong keys remembered: enough for a sustained guessing run, bounded in memory.
FAILED_KEYS_KEPT = 10_000
FAILED_KEY_TTL_S = 600.0


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


class RecentFailures:
    """Digests of keys found wrong, least recently seen dropped past `size`, each forgotten
    after `ttl_s` (so a key added to the configuration later is not refused for long)."""

    def __init__(
        self, size: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.size = size
        self.ttl_s = ttl_s
        self.clock = clock
        self._until: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, digest: object) -> bool:
        until = self._until.get(digest)  # type: ignore[call-overload]
        if until is None:
            return False
        if until < self.clock():
            del self._until[digest]  # type: ignore[arg-type]
            return False
        return True

    def add(self, digest: str) -> None:
        self._until[digest] = self.clock() + self.ttl_s
        self._until.move_to_end(digest)
        while len(self._until) > self.size:
            self._until.popitem(last=False)

    def __len__(self) -> int:
        return len(self._until)


class Authenticator:
    """Checks credentials against the settings. `await authenticate(request)` → Identity, or
    Unauthenticated (401), or AuthenticationBusy (503) when every argon2 thread is in use."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.keys: dict[str, ApiKeyConfig] = dict(settings.api_keys)
        self.secret = settings.bearer_secret.get_secret_value() if settings.bearer_secret else None
        self.enabled = bool(self.keys) or self.secret is not None
        self.concurrency = settings.auth_verify_concurrency
        self._hasher = PasswordHasher()
        self._sha256 = {
            config.hash[len("sha256:") :].lower(): (name, config)
            for name, config in self.keys.items()
            if config.hash.startswith("sha256:")
        }
        self._argon2 = [
            (name, config)
            for name, config in self.keys.items()
            if config.hash.startswith("$argon2")
        ]
        self._known: dict[str, Identity] = {}
        self.failures = RecentFailures(FAILED_KEYS_KEPT, FAILED_KEY_TTL_S)
        self._checking: dict[str, asyncio.Future[Identity | None]] = {}
        self._busy = 0
        self._executor: ThreadPoolExecutor | None = None

    def close(self) -> None:
        """Let the argon2 threads end (they finish the check in hand)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def authenticate(self, request: Request) -> Identity:
        if not self.enabled:
            return Identity(ANONYMOUS, authenticated=False)
        authorization = request.headers.get("authorization", "")
        scheme, _, credential = authorization.partition(" ")
        api_key = request.headers.get("x-api-key")
        if api_key is None and scheme.lower() == "apikey":
            api_key = credential.strip()
        if api_key:
            return await self._api_key(api_key)
        if scheme.lower() == "bearer" and credential.strip():
            return self._token(credential.strip())
        raise Unauthenticated(
            "send an API key (X-API-Key: <key>) or a bearer token (Authorization: Bearer <token>)"
        )

    async def _api_key(self, key: str) -> Identity:
        if len(key) > MAX_KEY_LENGTH:
            raise Unauthenticated("the API key is not valid")
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
        known = self._known.get(digest)
        if known is not None:
            return known
        if digest in self.failures:
            raise Unauthenticated("the API key is not valid")
        identity = self._sha256_match(digest)
        if identity is None and self._argon2:
            identity = await self._argon2_match(key, digest)
        if identity is None:
            self.failures.add(digest)
            raise Unauthenticated("the API key is not valid")
        self._known[digest] = identity
        return identity

    def _sha256_match(self, digest: str) -> Identity | None:
        found = None
        for stored, entry in self._sha256.items():
            if hmac.compare_digest(stored, digest):
                found = entry
        return _identity(*found) if found is not None else None

    async def _argon2_match(self, key: str, digest: str) -> Identity | None:
        """One argon2 check per distinct key at a time: requests carrying a key already being
        checked wait for that check instead of starting another."""
        checking = self._checking.get(digest)
        if checking is not None:
            return await asyncio.shield(checking)
        if self._busy >= self.concurrency:
            raise AuthenticationBusy(
                "too many new API keys are being checked at once; try again shortly"
            )
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.concurrency, thread_name_prefix="gateway-auth"
            )
        loop = asyncio.get_running_loop()
        work = self._executor.submit(self._verify_argon2, key)
        # Released on the loop once the thread is done, even if the request went away.
        self._busy += 1
        work.add_done_callback(lambda _: _call_soon(loop, self._release))
        checking = asyncio.wrap_future(work, loop=loop)
        self._checking[digest] = checking
        checking.add_done_callback(lambda _: self._checking.pop(digest, None))
        return await asyncio.shield(checking)

    def _release(self) -> None:
        self._busy -= 1

    def _verify_argon2(self, key: str) -> Identity | None:
        """On a worker thread: the configured argon2 key `key` matches, if any."""
        for name, config in self._argon2:
            try:
                if self._hasher.verify(config.hash, key):
                    return _identity(name, config)
            except (VerificationError, InvalidHashError):
                continue
        return None

    def _token(self, token: str) -> Identity:
        if self.secret is None:
            raise Unauthenticated("bearer tokens are not accepted here; use an API key")
        claims = check_token(self.secret, token)
        return Identity(claims.subject, claims.sagas)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed while the thread worked
        loop.call_soon_threadsafe(callback)


def _identity(name: str, config: ApiKeyConfig) -> Identity:
    return Identity(name, frozenset(config.sagas) if config.sagas is not None else None)
