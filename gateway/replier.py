"""The replier: consumes the final replies of gateway-started sagas, stores each result in the
requests table (once, whichever instance consumes it), then wakes the HTTP request held here.

All instances read the shared reply topic as ONE consumer group, so every reply is stored exactly
once even when the instance that accepted the request has died; an instance holding a request
whose reply another instance consumed finds the result through `PendingPoller`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from gateway.metrics import GatewayMetrics
from gateway.pending import PendingRequests
from gateway.request_state import TERMINAL, RequestState
from gateway.store import FinalResult, RequestStore, while_unavailable
from sagaway.messaging.envelope import Message
from sagaway.messaging.processing import RecordProcessor
from sagaway.messaging.records import Record
from sagaway.messaging.topics import TopicNames
from sagaway.messaging.transport import Transport
from sagaway.observability import tracing

log = logging.getLogger("sagaway.gateway.replier")

REPLY_TOPIC = "gateway.replies"


class MalformedFinalReply(ValueError):
    """A record on the reply topic is not a final reply (it is dead-lettered)."""


def reply_topic(topic_prefix: str) -> str:
    return TopicNames(topic_prefix).named(REPLY_TOPIC)


def replier_group(topic_prefix: str) -> str:
    return f"{topic_prefix}gateway.replier"


def parse_final_reply(message: Message, traceparent: str | None = None) -> FinalResult:
    """The request id and outcome a final reply carries (docs/messages.md); `traceparent` is the
    span handling it, when tracing is on (else the reply's own)."""
    if message.message_type != "reply":
        raise MalformedFinalReply(f"expected a reply, got a {message.message_type}")
    request_id = message.correlation_id or message.payload.get("saga_id")
    if not isinstance(request_id, str) or not request_id:
        raise MalformedFinalReply("the final reply has no correlation-id")
    status = message.payload.get("status")
    if status not in TERMINAL:
        raise MalformedFinalReply(f"the final reply's status is {status!r}, not terminal")
    failure = message.payload.get("failure")
    if status != "completed" and not isinstance(failure, dict):
        failure = {"step": None, "reason": f"the saga ended {status}"}
    return FinalResult(
        request_id=request_id,
        status=status,
        result=message.payload.get("result") if status == "completed" else None,
        failure=failure if status != "completed" else None,
        traceparent=traceparent or message.traceparent,
    )


def _lag_s(message: Message) -> float | None:
    try:
        sent = datetime.fromisoformat(message.sent_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, time.time() - sent.timestamp())


class Replier:
    """Owns the consumer of the reply topic; `start()` / `stop()`."""

    def __init__(
        self,
        transport: Transport,
        store: RequestStore,
        pending: PendingRequests,
        metrics: GatewayMetrics,
        callback_body: Callable[[RequestState], Any],
        on_stored: Callable[[list[RequestState]], None] | None = None,
    ) -> None:
        self.store = store
        self.pending = pending
        self.metrics = metrics
        self.callback_body = callback_body
        self.on_stored = on_stored
        prefix = transport.settings.topic_prefix
        self.topic = reply_topic(prefix)
        self.processor = RecordProcessor(
            transport,
            transport.settings,
            replier_group(prefix),
            [self.topic],
            self.handle_batch,
        )

    async def start(self) -> None:
        await self.processor.start()

    async def stop(self) -> None:
        await self.processor.stop(grace_s=2.0)

    async def handle_batch(self, batch: list[tuple[Record, Message]]) -> None:
        """Store the batch's results; with tracing on, a span per final reply (its trace's end,
        or the parent of its callback's delivery)."""
        spans: list[tracing.Span] = []
        traces: dict[str, str] = {}
        if tracing.enabled():
            for record, message in batch:
                span = tracing.message_span("gateway", message, "gateway final reply", record.topic)
                if span is not None:
                    spans.append(span)
                    traces[message.message_id] = tracing.traceparent_of(span)
        with tracing.ending(spans):
            await self._store(batch, traces)

    async def _store(self, batch: list[tuple[Record, Message]], traces: dict[str, str]) -> None:
        results: dict[str, FinalResult] = {}
        for _record, message in batch:
            result = parse_final_reply(message, traces.get(message.message_id))
            results.setdefault(result.request_id, result)
            lag = _lag_s(message)
            if lag is not None:
                self.metrics.reply_lag.observe(lag)
        stored = await while_unavailable(
            "storing final replies",
            lambda: self.store.store_results(list(results.values()), self.callback_body),
        )
        for state in stored:
            self.pending.complete(state)
        if stored and self.on_stored is not None:
            self.on_stored(stored)
        unknown = len(results) - len(stored)
        if unknown:
            # Duplicates of replies already stored, or requests of another gateway database.
            log.debug("%d final replies changed nothing (already stored or unknown)", unknown)
