"""Callback delivery: POST each stored final result to its callback URL, HMAC-SHA256 signed,
from the `callbacks` table (written with the result), retried with exponential backoff.

Signature header: `Sagaway-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
Receivers check it with `verify_signature` (or the same four lines) and deduplicate on
`Sagaway-Delivery` (the delivery id is the same on every retry). Connections go only to the
address the SSRF check vetted, checked again once connected (gateway/callback_network.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.callback_network import callback_transport, vetted
from gateway.metrics import GatewayMetrics
from gateway.models import callbacks
from gateway.problems import CallbackRefused
from gateway.ssrf import CallbackTarget, check_callback_url, parse_callback_url
from gateway.store import while_unavailable
from sagaway.inbox import claim
from sagaway.messaging.envelope import Message
from sagaway.messaging.records import Record
from sagaway.observability import tracing
from sagaway.observability.backoff import RetryDelay
from sagaway.settings import GatewaySettings

log = logging.getLogger("sagaway.gateway.callbacks")

SIGNATURE_HEADER = "Sagaway-Signature"
DELIVERY_HEADER = "Sagaway-Delivery"
REQUEST_ID_HEADER = "Sagaway-Request-Id"
BATCH = 20
# Final replies of sagas started on Kafka with a URL as reply-to: the orchestrator puts them on
# this topic with the URL in a `callback-url` header (orchestrator/messages.py).
CALLBACK_TOPIC = "gateway.callbacks"
CALLBACK_URL_HEADER = "callback-url"
INTAKE_CONSUMER = "gateway.callbacks"
# A claimed row is retried by any sender once this much longer than a POST may take has passed
# (the sender that claimed it died mid-delivery).
LEASE_MARGIN_S = 5.0


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The Sagaway-Signature header value for `body`."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify_signature(secret: str, header: str, body: bytes, tolerance_s: float = 300) -> bool:
    """True when `header` signs `body` with `secret` and is at most `tolerance_s` old."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        t = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - t) > tolerance_s:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


def backoff_s(settings: GatewaySettings, attempts: int) -> float:
    """Pause after the `attempts`-th failed try. Each delivery keeps its own count in the
    database, so the pause is computed from it rather than waited by one loop."""
    delay = RetryDelay(settings.callback_backoff_s, settings.callback_backoff_max_s)
    return delay.delay_for(attempts)


class CallbackFailed(Exception):
    """Why one try of a callback failed (the error recorded on its span)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    request_id: str
    url: str
    body: Any
    attempts: int
    traceparent: str | None = None


def pinned_url(target: CallbackTarget) -> tuple[str, dict[str, Any]]:
    """The URL with the checked address in place of the host (so DNS cannot change between the
    check and the connection) and the request extensions keeping TLS on the real host name."""
    parts = urlsplit(target.url)
    address = target.addresses[0]
    literal = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    url = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return url, extensions


class CallbackSender:
    """Claims due deliveries, POSTs them, records the outcome. `run()` until cancelled."""

    def __init__(
        self,
        settings: GatewaySettings,
        engine: AsyncEngine,
        metrics: GatewayMetrics,
        *,
        interval_s: float = 2.0,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics
        self.interval_s = interval_s
        self.secret = (
            settings.callback_secret.get_secret_value() if settings.callback_secret else ""
        )
        self.postgres = engine.dialect.name == "postgresql"
        self._wake = asyncio.Event()
        self._client: httpx.AsyncClient | None = None

    def wake(self) -> None:
        """Look for due deliveries now (a result with a callback was just stored)."""
        self._wake.set()

    async def claim(self) -> list[Delivery]:
        """Take due deliveries, moving their next try past this one (a lease)."""
        now = datetime.now(UTC)
        lease = now + timedelta(seconds=self.settings.callback_timeout_s + LEASE_MARGIN_S)
        query = (
            sa.select(
                callbacks.c.id,
                callbacks.c.request_id,
                callbacks.c.url,
                callbacks.c.body,
                callbacks.c.attempts,
                callbacks.c.traceparent,
            )
            .where(callbacks.c.status == "pending", callbacks.c.next_attempt_at <= now)
            .order_by(callbacks.c.next_attempt_at)
            .limit(BATCH)
        )
        if self.postgres:
            query = query.with_for_update(skip_locked=True)
        async with self.engine.begin() as conn:
            rows = (await conn.execute(query)).all()
            if not rows:
                return []
            await conn.execute(
                sa.update(callbacks)
                .where(callbacks.c.id.in_([row.id for row in rows]))
                .values(attempts=callbacks.c.attempts + 1, next_attempt_at=lease)
            )
        return [
            Delivery(row.id, row.request_id, row.url, row.body, row.attempts + 1, row.traceparent)
            for row in rows
        ]

    async def deliver(self, delivery: Delivery) -> None:
        """One try: POST, then record delivered, retry later, or give up. With tracing on, the
        try is a CLIENT span of the request's trace, and the POST carries its traceparent."""
        error: str | None = None
        status_code: int | None = None
        span = tracing.client_span(
            "gateway callback POST",
            delivery.traceparent,
            (
                ("sagaway.service", "gateway"),
                ("sagaway.saga_id", delivery.request_id),
                ("sagaway.callback_id", delivery.id),
                ("sagaway.attempt", delivery.attempts),
                ("http.request.method", "POST"),
            ),
        )
        traceparent = tracing.traceparent_of(span) if span is not None else delivery.traceparent
        try:
            target = await check_callback_url(delivery.url, self.settings.callback_allowed_hosts)
            status_code = await self._post(target, delivery, traceparent)
            if not 200 <= status_code < 300:
                error = f"the receiver answered {status_code}"
        except CallbackRefused as exc:
            error = f"refused: {exc.detail}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        except BaseException as exc:
            if span is not None:
                tracing.end_span(span, exc)
            raise
        if span is not None:
            if status_code is not None:
                span.set_attribute("http.response.status_code", status_code)
            tracing.end_span(span, CallbackFailed(error) if error else None)
        await self._record(delivery, error, status_code)

    async def _post(
        self, target: CallbackTarget, delivery: Delivery, traceparent: str | None
    ) -> int:
        body = orjson.dumps(delivery.body)
        url, extensions = pinned_url(target)
        host_header = target.host if target.port in (80, 443) else f"{target.host}:{target.port}"
        headers = {
            "Host": host_header,
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.secret, body),
            DELIVERY_HEADER: str(delivery.id),
            REQUEST_ID_HEADER: delivery.request_id,
            "User-Agent": "sagaway-gateway",
        }
        if traceparent:
            headers["traceparent"] = traceparent
        assert self._client is not None
        with vetted(target, private_allowed=target.listed):
            response = await self._client.post(
                url, content=body, headers=headers, extensions=extensions
            )
        return response.status_code

    async def _record(self, delivery: Delivery, error: str | None, status_code: int | None) -> None:
        now = datetime.now(UTC)
        values: dict[str, Any] = {"last_status_code": status_code, "last_error": error}
        if error is None:
            values.update(status="delivered", delivered_at=now)
            outcome = "delivered"
        elif delivery.attempts >= self.settings.callback_max_attempts:
            values.update(status="failed")
            outcome = "failed"
            log.warning(
                "callback %d for request %s given up after %d tries: %s",
                delivery.id,
                delivery.request_id,
                delivery.attempts,
                error,
            )
        else:
            values.update(
                next_attempt_at=now + timedelta(seconds=backoff_s(self.settings, delivery.attempts))
            )
            outcome = "retry"
            log.info(
                "callback %d for request %s failed (try %d): %s",
                delivery.id,
                delivery.request_id,
                delivery.attempts,
                error,
            )
        self.metrics.callbacks.labels(outcome).inc()
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.update(callbacks).where(callbacks.c.id == delivery.id).values(**values)
            )

    async def send_due(self) -> int:
        deliveries = await self.claim()
        if deliveries:
            await asyncio.gather(*(self.deliver(d) for d in deliveries))
        return len(deliveries)

    async def run(self) -> None:
        # Redirects are refused: a 3xx is a failed try, never followed into another network.
        # Connections go only to the addresses checked for the delivery in hand.
        async with httpx.AsyncClient(
            transport=callback_transport(),
            follow_redirects=False,
            timeout=self.settings.callback_timeout_s,
            trust_env=False,
        ) as client:
            self._client = client
            while True:
                try:
                    if await self.send_due() == BATCH:
                        continue
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - database blip: try again shortly
                    log.warning("callback sender: %s: %s", type(exc).__name__, exc)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(await self._pause_s()):
                        await self._wake.wait()
                self._wake.clear()

    async def _pause_s(self) -> float:
        """Until the next delivery is due (a retry's backoff, a lease that runs out), at most
        `interval_s`: a new delivery stored here wakes the loop, and the look at `interval_s`
        finds those another instance left behind."""
        try:
            async with self.engine.connect() as conn:
                first = await conn.scalar(
                    sa.select(sa.func.min(callbacks.c.next_attempt_at)).where(
                        callbacks.c.status == "pending"
                    )
                )
        except Exception as exc:  # noqa: BLE001 - database blip: look again at the safety net
            log.debug("callback sender: next due unknown: %s", exc)
            return self.interval_s
        if first is None:
            return self.interval_s
        if isinstance(first, str):  # SQLite's MIN() loses the column type
            first = datetime.fromisoformat(first)
        if first.tzinfo is None:
            first = first.replace(tzinfo=UTC)
        return min(self.interval_s, max(0.0, (first - datetime.now(UTC)).total_seconds()))


class CallbackIntake:
    """Turns the final replies on `gateway.callbacks` into callback deliveries: one transaction
    per batch, deduplicated on the message id through the inbox."""

    def __init__(self, settings: GatewaySettings, engine: AsyncEngine, wake: Any) -> None:
        self.settings = settings
        self.engine = engine
        self.wake = wake

    async def handle_batch(self, batch: list[tuple[Record, Message]]) -> None:
        await while_unavailable("storing callback requests", lambda: self._store(batch))

    async def _store(self, batch: list[tuple[Record, Message]]) -> None:
        now = datetime.now(UTC)
        added = 0
        async with self.engine.begin() as conn:
            for _record, message in batch:
                url = dict(message.extra_headers).get(CALLBACK_URL_HEADER)
                request_id = message.saga_id or message.correlation_id
                if not url or not request_id:
                    log.warning(
                        "message %s on %s has no callback URL or saga id, ignored",
                        message.message_id,
                        CALLBACK_TOPIC,
                    )
                    continue
                try:
                    parse_callback_url(url, self.settings.callback_allowed_hosts)
                except CallbackRefused as exc:
                    log.warning("callback for saga %s refused: %s", request_id, exc.detail)
                    continue
                if not (await claim(conn, INTAKE_CONSUMER, message.message_id)).new:
                    continue
                body = {"id": message.correlation_id or request_id, **message.payload}
                await conn.execute(
                    callbacks.insert().values(
                        request_id=request_id[:36],
                        url=url,
                        body=body,
                        status="pending",
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                        traceparent=message.traceparent,
                    )
                )
                added += 1
        if added:
            self.wake()
