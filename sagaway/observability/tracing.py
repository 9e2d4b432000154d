"""OpenTelemetry traces of a saga, end to end, through the W3C `traceparent` header every message
carries: the gateway's HTTP span → the start command → the orchestrator's span per handled message
→ a producer span per command it sends → the participant's span per handled command → its reply →
the orchestrator again ... → the final reply the gateway consumes. One trace id throughout.

Off by default (`otel_exporter = none`): then no span object is ever made, every function here
returns after one global read, and messages pass their caller's traceparent on unchanged — the
hot path pays nothing. Spans are made with the SDK only when an exporter is configured.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from sagaway.settings import ObservabilitySettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("sagaway.tracing")

INSTRUMENTATION = "sagaway"
_PROPAGATOR = TraceContextTextMapPropagator()
_EMPTY = Context()

# The tracer spans are made with; None while tracing is off (the fast path tests only this).
_tracer: Tracer | None = None
_provider: TracerProvider | None = None


class TracingConfigError(ValueError):
    """The tracing settings cannot be used (e.g. an unknown exporter)."""


class TracedMessage(Protocol):
    """What a message span records of a message (a `messaging.envelope.Message` is one)."""

    @property
    def traceparent(self) -> str | None: ...
    @property
    def message_id(self) -> str: ...
    @property
    def correlation_id(self) -> str | None: ...
    @property
    def command(self) -> str | None: ...
    @property
    def saga_id(self) -> str | None: ...
    @property
    def saga_type(self) -> str | None: ...
    @property
    def saga_step(self) -> str | None: ...
    @property
    def attempt(self) -> int | None: ...
    @property
    def outcome(self) -> str | None: ...


# ---------------------------------------------------------------- set-up


def configure_tracing(
    settings: ObservabilitySettings, default_service_name: str, *, set_global: bool = True
) -> TracerProvider | None:
    """Set tracing up as `settings` say; returns the provider, or None when tracing is off.

    The provider also becomes OpenTelemetry's global one (if none was set and `set_global`), so
    spans a participant's handler makes with `opentelemetry.trace.get_tracer(...)` join the
    saga's trace.
    """
    if settings.otel_exporter == "none":
        disable()
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    exporter: SpanExporter
    if settings.otel_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.otel_endpoint)
    elif settings.otel_exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        exporter = ConsoleSpanExporter()
    else:  # pragma: no cover - the settings' Literal type refuses anything else
        raise TracingConfigError(f"unknown otel_exporter {settings.otel_exporter!r}")
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": settings.otel_service_name or default_service_name}
        ),
        sampler=ParentBased(TraceIdRatioBased(settings.otel_sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    install(provider)
    if set_global and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
    where = settings.otel_endpoint if settings.otel_exporter == "otlp" else "stdout"
    log.info("tracing on: spans exported (%s) to %s", settings.otel_exporter, where)
    return provider


def install(provider: TracerProvider) -> None:
    """Make spans with `provider` from now on (tests install one with an in-memory exporter)."""
    global _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer(INSTRUMENTATION)


def disable() -> None:
    """Tracing off: no spans; traceparents pass through unchanged."""
    global _tracer, _provider
    _tracer = None
    _provider = None


def shutdown_tracing() -> None:
    """Export the spans still buffered, then turn tracing off (at process exit)."""
    provider = _provider
    disable()
    if provider is not None:
        provider.shutdown()


def enabled() -> bool:
    return _tracer is not None


# ---------------------------------------------------------------- traceparent <-> spans


def _parent(traceparent: str | None) -> Context:
    """The context a traceparent names (an empty one, i.e. a new trace, if absent or invalid).
    Version 00, the form every Sagaway process writes, is parsed here directly (several times
    faster than the generic propagator); anything else goes through the propagator."""
    if not traceparent:
        return _EMPTY
    if len(traceparent) == 55 and traceparent.startswith("00-"):
        try:
            trace_id = int(traceparent[3:35], 16)
            span_id = int(traceparent[36:52], 16)
            flags = int(traceparent[53:55], 16)
        except ValueError:
            return _EMPTY
        if not trace_id or not span_id or traceparent[35] != "-" or traceparent[52] != "-":
            return _EMPTY
        remote = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))
        return trace.set_span_in_context(NonRecordingSpan(remote), _EMPTY)
    return _PROPAGATOR.extract({"traceparent": traceparent})


def traceparent_of(span: Span) -> str:
    """The W3C traceparent naming `span` as the parent of what comes next."""
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def current_traceparent() -> str | None:
    """The traceparent of the span current in this task (the gateway's HTTP span), if any."""
    if _tracer is None:
        return None
    span = trace.get_current_span()
    if not span.get_span_context().is_valid:
        return None
    return traceparent_of(span)


def _set_attributes(span: Span, attributes: Iterable[tuple[str, Any]]) -> None:
    # Only on spans that are recorded: an unsampled span costs no attribute work.
    if span.is_recording():
        span.set_attributes({key: value for key, value in attributes if value is not None})


def message_span(
    service: str, message: TracedMessage, name: str, topic: str | None = None
) -> Span | None:
    """Start the span of handling `message` in `service`, a child of its traceparent; None when
    tracing is off. End it with `end_span` once the handling committed (or failed)."""
    tracer = _tracer
    if tracer is None:
        return None
    span = tracer.start_span(name, context=_parent(message.traceparent), kind=SpanKind.CONSUMER)
    _set_attributes(
        span,
        (
            ("sagaway.service", service),
            ("messaging.destination.name", topic),
            ("messaging.message.id", message.message_id),
            ("messaging.message.conversation_id", message.correlation_id),
            ("sagaway.command", message.command),
            ("sagaway.saga_id", message.saga_id),
            ("sagaway.saga_type", message.saga_type),
            ("sagaway.saga_step", message.saga_step),
            ("sagaway.attempt", message.attempt),
            ("sagaway.outcome", message.outcome),
        ),
    )
    return span


def child_traceparent(
    parent: str | None,
    name: str,
    *,
    service: str,
    destination: str | None = None,
    message_id: str | None = None,
    correlation_id: str | None = None,
    saga_id: str | None = None,
    saga_step: str | None = None,
    attempt: int | None = None,
) -> str | None:
    """The traceparent to put on a message being sent: with tracing on, that of a new producer
    span (child of `parent`) recording the send; with tracing off, `parent` itself."""
    tracer = _tracer
    if tracer is None:
        return parent
    span = tracer.start_span(name, context=_parent(parent), kind=SpanKind.PRODUCER)
    _set_attributes(
        span,
        (
            ("sagaway.service", service),
            ("messaging.destination.name", destination),
            ("messaging.message.id", message_id),
            ("messaging.message.conversation_id", correlation_id),
            ("sagaway.saga_id", saga_id),
            ("sagaway.saga_step", saga_step),
            ("sagaway.attempt", attempt),
        ),
    )
    span.end()
    return traceparent_of(span)


def internal_span(
    name: str, traceparent: str | None, attributes: Iterable[tuple[str, Any]]
) -> Span | None:
    """The span of work that no message started (a timer firing), a child of `traceparent`;
    None when tracing is off. End it with `end_span`."""
    return _child_span(name, traceparent, SpanKind.INTERNAL, attributes)


def client_span(
    name: str, traceparent: str | None, attributes: Iterable[tuple[str, Any]]
) -> Span | None:
    """The span of an outgoing HTTP call (a callback POST), a child of `traceparent`; None when
    tracing is off. End it with `end_span`."""
    return _child_span(name, traceparent, SpanKind.CLIENT, attributes)


def _child_span(
    name: str, traceparent: str | None, kind: SpanKind, attributes: Iterable[tuple[str, Any]]
) -> Span | None:
    tracer = _tracer
    if tracer is None:
        return None
    span = tracer.start_span(name, context=_parent(traceparent), kind=kind)
    _set_attributes(span, attributes)
    return span


def server_span(name: str, traceparent: str | None, attributes: dict[str, Any]) -> Span | None:
    """The span of one HTTP request (continuing the caller's `traceparent`); None when off."""
    tracer = _tracer
    if tracer is None:
        return None
    return tracer.start_span(
        name, context=_parent(traceparent), kind=SpanKind.SERVER, attributes=attributes
    )


def use_span(span: Span) -> AbstractContextManager[Span]:
    """Make `span` the current one inside a `with` (spans made in it become its children);
    errors are recorded by `end_span`, not here."""
    return trace.use_span(
        span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    )


def end_span(span: Span, error: BaseException | None = None) -> None:
    """End `span`, marked as failed with `error` if one is given."""
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:300]))
    span.end()


def end_spans(spans: Iterable[Span], error: BaseException | None = None) -> None:
    for span in spans:
        end_span(span, error)


@contextlib.contextmanager
def ending(spans: Iterable[Span]) -> Iterator[None]:
    """End `spans` (a live collection: spans added inside the block count) when the block is
    left, failed with its exception if it raised. Put the transaction inside the block, so a
    span ends once its work committed."""
    try:
        yield
    except BaseException as exc:
        end_spans(spans, exc)
        raise
    end_spans(spans)


__all__ = [
    "Span",
    "TracedMessage",
    "TracingConfigError",
    "child_traceparent",
    "configure_tracing",
    "current_traceparent",
    "disable",
    "enabled",
    "end_span",
    "end_spans",
    "install",
    "message_span",
    "server_span",
    "shutdown_tracing",
    "traceparent_of",
    "use_span",
]
