"""Observability (docs/observability.md): every Prometheus metric is documented; one trace id runs
from the HTTP request through the orchestrator, every participant command and the replies; log
lines are JSON carrying the correlation id of the message handled; secrets never reach the logs.

The system tests run the whole of `sagaway dev` (gateway, orchestrator, the example participants,
relays, embedded broker and SQLite files) in this process, with API keys and a bearer secret
configured."""

from __future__ import annotations

import http.server
import importlib
import io
import logging
import os
import pkgutil
import re
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY, CollectorRegistry
from pydantic import SecretStr

from gateway.auth import hash_api_key, issue_token
from gateway.metrics import GatewayMetrics
from sagaway.cli.application import application
from sagaway.dev.system import DevSystem
from sagaway.messaging.envelope import Message
from sagaway.observability import logs, tracing
from sagaway.settings import ApiKeyConfig, ObservabilitySettings
from sagaway.settings.composed import Settings
from sagaway.storage.database import DatabaseUnavailable, connect_database
from tests.harness.waiting import eventually, eventually_sync
from tests.servers.postgres import free_port

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "observability.md"
PACKAGES = ("orchestrator", "participants", "gateway", "console")
# Metrics prometheus_client registers by itself in the default registry (not ours to document
# one by one; the doc says they exist).
BUILTIN_PREFIXES = ("process_", "python_")

API_KEY = "sk-test-" + secrets.token_hex(16)
BEARER_SECRET = "bearer-secret-" + secrets.token_hex(12)
DB_PASSWORD = "pg-pw-" + secrets.token_hex(12)
ORDER: dict[str, Any] = {
    "customer_id": "c-1",
    "items": [{"sku": "sku-1", "quantity": 1}],
    "total_cents": 1000,
    "country": "FR",
}
COMMANDS = ("inventory.reserve", "payments.charge", "shipping.schedule")


# ---------------------------------------------------------------- metrics are documented


def import_every_module() -> None:
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        for module in pkgutil.walk_packages(package.__path__, f"{package_name}."):
            importlib.import_module(module.name)


@dataclass(frozen=True)
class MetricDoc:
    name: str  # as exposed on /metrics (counters with _total)
    kind: str
    labels: frozenset[str]


def registered_metrics() -> dict[str, MetricDoc]:
    """Every metric our code registers: the default registry after importing every module, and
    the custom registries (the gateway's, one per Gateway)."""
    import_every_module()
    registries: list[CollectorRegistry] = [REGISTRY, GatewayMetrics().registry]
    found: dict[str, MetricDoc] = {}
    for registry in registries:
        for family in registry.collect():
            if family.name.startswith(BUILTIN_PREFIXES):
                continue
            name = f"{family.name}_total" if family.type == "counter" else family.name
            labels: set[str] = set()
            for sample in family.samples:
                labels |= set(sample.labels) - {"le", "quantile"}
            # Labelled metrics without a child yet have no samples: ask the metric itself.
            found[name] = MetricDoc(name, family.type, frozenset(labels))
    for registry in registries:
        for collector in list(registry._collector_to_names):  # noqa: SLF001 - label names
            labelnames = getattr(collector, "_labelnames", None)
            base = getattr(collector, "_name", None)
            kind = getattr(collector, "_type", None)
            if base is None or labelnames is None:
                continue
            name = f"{base}_total" if kind == "counter" else base
            if name in found:
                found[name] = MetricDoc(name, found[name].kind, frozenset(labelnames))
    return found


def documented_metrics() -> dict[str, MetricDoc]:
    """The rows of docs/observability.md's metric table: | `name` | type | labels | meaning |."""
    rows: dict[str, MetricDoc] = {}
    pattern = re.compile(r"^\|\s*`(sagaway_[a-z0-9_]+)`\s*\|\s*(\w+)\s*\|([^|]*)\|")
    for line in DOC.read_text().splitlines():
        match = pattern.match(line)
        if match:
            labels = frozenset(re.findall(r"`([a-z_]+)`", match.group(3)))
            rows[match.group(1)] = MetricDoc(match.group(1), match.group(2), labels)
    return rows


def test_every_registered_metric_is_documented_with_its_type_and_labels() -> None:
    registered = registered_metrics()
    documented = documented_metrics()
    assert len(registered) >= 14  # guards the collection itself
    missing = sorted(set(registered) - set(documented))
    assert not missing, f"metrics missing from {DOC.name}: {missing}"
    for name, metric in registered.items():
        row = documented[name]
        assert row.kind == metric.kind, f"{name}: documented as {row.kind}, is {metric.kind}"
        assert row.labels == metric.labels, f"{name}: labels {sorted(row.labels)} documented, "
        f"{sorted(metric.labels)} registered"


def test_every_documented_metric_exists() -> None:
    stale = sorted(set(documented_metrics()) - set(registered_metrics()))
    assert not stale, f"{DOC.name} documents metrics no code registers: {stale}"


def test_every_metric_is_named_sagaway_something() -> None:
    import_every_module()
    others = [
        family.name
        for family in REGISTRY.collect()
        if not family.name.startswith(("sagaway_", *BUILTIN_PREFIXES))
    ]
    assert not others


def test_custom_registries_are_the_known_ones() -> None:
    """A new CollectorRegistry must be added to `registered_metrics` (and documented)."""
    known = {ROOT / "gateway" / "metrics.py"}
    makers = {
        path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "CollectorRegistry(" in path.read_text()
    }
    assert makers == known


def test_metrics_port_serves_the_process_registry() -> None:
    from sagaway.observability.metrics import serve_metrics

    import_every_module()
    assert serve_metrics(0, "orchestrator") is None
    port = free_port()
    server = serve_metrics(port, "orchestrator", host="127.0.0.1")
    assert server is not None
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        server.shutdown()
        server.server_close()
    assert "# TYPE sagaway_orchestrator_sagas_started_total counter" in text


# ---------------------------------------------------------------- the system in process


@dataclass
class Running:
    system: DevSystem
    client: httpx.AsyncClient
    log: io.StringIO

    def log_lines(self) -> list[str]:
        return [line for line in self.log.getvalue().splitlines() if line.strip()]


def system_settings(data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        api_keys={"shop": ApiKeyConfig(hash=hash_api_key(API_KEY))},
        bearer_secret=SecretStr(BEARER_SECRET),
        rate_limit_per_s=0,
        log_format="json",
        log_level="DEBUG",
        embedded_poll_interval_ms=10,
        timer_poll_interval_ms=50,
        relay_poll_interval_ms=10,
    )


@pytest.fixture(scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    settings = system_settings(tmp_path_factory.mktemp("observability") / "data")
    stream = io.StringIO()
    handler = logs.make_handler(settings.observability, stream, secrets=settings.secret_values())
    root, ours = logging.getLogger(), logging.getLogger("sagaway")
    levels = (root.level, ours.level)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    ours.setLevel(logging.DEBUG)
    system = DevSystem(application(settings), host="127.0.0.1", port=0)
    try:
        await system.start()
        async with httpx.AsyncClient(
            base_url=system.url, headers={"X-API-Key": API_KEY}, timeout=30
        ) as client:
            yield Running(system, client, stream)
    finally:
        await system.stop()
        root.removeHandler(handler)
        root.setLevel(levels[0])
        ours.setLevel(levels[1])


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory, for one test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.disable()
        provider.shutdown()


async def finished_spans(
    exporter: InMemorySpanExporter,
    done: Callable[[Sequence[ReadableSpan]], bool],
    timeout_s: float = 10.0,
) -> Sequence[ReadableSpan]:
    """The finished spans, once `done` holds for them."""

    def complete() -> Sequence[ReadableSpan] | None:
        finished = exporter.get_finished_spans()
        return finished if done(finished) else None

    return await eventually(
        complete,
        timeout_s=timeout_s,
        what=lambda: (
            f"the spans to be complete: {sorted({s.name for s in exporter.get_finished_spans()})}"
        ),
    )


def by_name(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{len(found)} spans named {name!r}: {sorted(s.name for s in spans)}"
    return found[0]


def parent_of(spans: Sequence[ReadableSpan], span: ReadableSpan) -> ReadableSpan:
    assert span.parent is not None, f"{span.name} has no parent"
    found = [s for s in spans if s.context.span_id == span.parent.span_id]
    assert len(found) == 1, f"the parent of {span.name} was not recorded"
    return found[0]


# ---------------------------------------------------------------- traces


async def test_one_trace_runs_from_the_http_request_through_every_command_and_reply(
    running: Running, spans: InMemorySpanExporter
) -> None:
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    response = await running.client.post(
        "/api/v1/orders", json=ORDER, headers={"traceparent": f"00-{trace_id}-{caller_span}-01"}
    )
    assert response.status_code == 200, response.text
    request_id = response.json()["id"]

    def ours(span: ReadableSpan) -> bool:
        attributes = span.attributes or {}
        return request_id in (
            attributes.get("sagaway.saga_id"),
            attributes.get("messaging.message.conversation_id"),
        )

    finished = await finished_spans(
        spans, lambda all_: any(s.name == "gateway final reply" and ours(s) for s in all_)
    )
    traced = [s for s in finished if s.context.trace_id == int(trace_id, 16)]
    # Every span about this request is in the caller's trace, and nowhere else.
    assert {s.context.trace_id for s in finished if ours(s)} == {int(trace_id, 16)}

    http = by_name(traced, "POST /api/v1/orders")
    assert http.kind is SpanKind.SERVER
    assert http.parent is not None and http.parent.span_id == int(caller_span, 16)
    assert (http.attributes or {})["http.response.status_code"] == 200
    start_sent = by_name(traced, "send orchestrator.start")
    assert parent_of(traced, start_sent) is http
    # The start command may be consumed twice (the gateway's direct produce and the relay's
    # copy; the second is a no-op): each handling is a span of the trace.
    starts = [s for s in traced if s.name == "orchestrator start place-order"]
    assert starts
    for start in starts:
        assert start.kind is SpanKind.CONSUMER and parent_of(traced, start) is start_sent

    for command in COMMANDS:
        service = command.split(".")[0]
        sent = by_name(traced, f"send {command}")
        assert sent.kind is SpanKind.PRODUCER
        assert parent_of(traced, sent).name.startswith("orchestrator ")
        handled = by_name(traced, f"{service} handle {command}")
        assert handled.kind is SpanKind.CONSUMER
        assert parent_of(traced, handled) is sent
        assert (handled.attributes or {})["sagaway.service"] == service
        reply = by_name(traced, f"orchestrator reply {command}")
        assert parent_of(traced, reply) is handled
    # Each command is sent while handling what came before it: start → reserve → charge → ship.
    assert parent_of(traced, by_name(traced, "send inventory.reserve")) in starts
    assert parent_of(traced, by_name(traced, "send payments.charge")) is by_name(
        traced, "orchestrator reply inventory.reserve"
    )
    final_sent = by_name(traced, "send final reply (completed)")
    assert parent_of(traced, final_sent) is by_name(traced, "orchestrator reply shipping.schedule")
    assert parent_of(traced, by_name(traced, "gateway final reply")) is final_sent


async def test_a_request_without_traceparent_starts_its_own_trace(
    running: Running, spans: InMemorySpanExporter
) -> None:
    response = await running.client.post(
        "/api/v1/orders", json=ORDER, headers={"Prefer": "respond-async"}
    )
    assert response.status_code == 202
    request_id = response.json()["id"]

    def final(all_: Sequence[ReadableSpan]) -> bool:
        return any(
            s.name == "gateway final reply"
            and (s.attributes or {}).get("sagaway.saga_id") == request_id
            for s in all_
        )

    finished = await finished_spans(spans, final)
    http = next(
        s for s in finished if s.name == "POST /api/v1/orders" and s.parent is None
    )
    trace = [s for s in finished if s.context.trace_id == http.context.trace_id]
    assert {f"{c.split('.')[0]} handle {c}" for c in COMMANDS} <= {s.name for s in trace}


def test_spans_of_a_block_end_with_it_and_fail_with_its_exception(
    spans: InMemorySpanExporter,
) -> None:
    committed: list[tracing.Span] = []
    with tracing.ending(committed):  # spans added inside the block are ended too
        committed.append(tracing.internal_span("committed", None, ()) or pytest.fail("off"))
    failed: list[tracing.Span] = []
    with pytest.raises(RuntimeError), tracing.ending(failed):
        failed.append(tracing.internal_span("rolled back", None, ()) or pytest.fail("off"))
        raise RuntimeError("the transaction failed")
    ended = {s.name: s.status for s in spans.get_finished_spans()}
    assert ended["committed"].status_code == StatusCode.UNSET
    assert ended["rolled back"].status_code == StatusCode.ERROR
    assert "RuntimeError: the transaction failed" in (ended["rolled back"].description or "")


def test_with_tracing_off_no_span_is_made_and_traceparents_pass_through() -> None:
    tracing.disable()
    given = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    assert tracing.child_traceparent(given, "send x.y", service="orchestrator") is given
    message = Message(message_type="command", command="x.y", payload={}, traceparent=given)
    assert tracing.message_span("x", message, "x handle x.y") is None
    assert tracing.server_span("GET /", given, {}) is None
    assert tracing.current_traceparent() is None


def test_configured_exporters_build_and_none_turns_tracing_off() -> None:
    try:
        provider = tracing.configure_tracing(
            ObservabilitySettings(
                otel_exporter="otlp", otel_endpoint="http://127.0.0.1:9/v1/traces"
            ),
            "sagaway-test",
            set_global=False,
        )
        assert provider is not None and tracing.enabled()
        assert provider.resource.attributes["service.name"] == "sagaway-test"
        provider.shutdown()
        provider = tracing.configure_tracing(
            ObservabilitySettings(
                otel_exporter="console", otel_service_name="shop-orchestrator"
            ),
            "x",
            set_global=False,
        )
        assert provider is not None
        assert provider.resource.attributes["service.name"] == "shop-orchestrator"
        provider.shutdown()
        assert tracing.configure_tracing(ObservabilitySettings(otel_exporter="none"), "x") is None
        assert not tracing.enabled()
    finally:
        tracing.disable()


class _Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP traces endpoint: keeps each POSTed body."""

    bodies: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.bodies.append((self.path, self.headers.get("content-type", ""), body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_spans_are_exported_over_otlp_http_to_the_configured_endpoint() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Collector.bodies = []
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    try:
        provider = tracing.configure_tracing(
            ObservabilitySettings(
                otel_exporter="otlp", otel_endpoint=endpoint, otel_service_name="shop"
            ),
            "x",
            set_global=False,
        )
        assert provider is not None
        message = Message(
            message_type="command", command="payments.charge", payload={}, saga_id="s-1"
        )
        span = tracing.message_span("payments", message, "payments handle payments.charge")
        assert span is not None
        tracing.end_span(span)
        assert provider.force_flush(10_000)
    finally:
        tracing.shutdown_tracing()
        server.shutdown()
        server.server_close()
    assert _Collector.bodies, "nothing was exported"
    path, content_type, body = _Collector.bodies[0]
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    request = ExportTraceServiceRequest.FromString(body)
    (resource_spans,) = request.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert service["service.name"] == "shop"
    (exported,) = [s for scope in resource_spans.scope_spans for s in scope.spans]
    assert exported.name == "payments handle payments.charge"
    assert {a.key: a.value.string_value for a in exported.attributes}["sagaway.saga_id"] == "s-1"


# ---------------------------------------------------------------- logs


async def test_log_lines_of_a_handled_message_are_json_with_its_correlation_id(
    running: Running,
) -> None:
    # Shipping refuses Antarctica: the participant logs the rejection while handling the command.
    response = await running.client.post("/api/v1/orders", json={**ORDER, "country": "AQ"})
    assert response.status_code == 409, response.text
    request_id = response.json()["id"]
    documents = [orjson.loads(line) for line in running.log_lines()]  # each line is JSON
    for document in documents:
        assert {"time", "level", "logger", "message"} <= set(document)
    about = [d for d in documents if d.get("correlation_id") == request_id]
    rejected = [d for d in about if d["logger"] == "sagaway.participant"]
    assert rejected, f"no participant line for {request_id}"
    assert "rejected" in rejected[0]["message"]
    assert rejected[0]["saga_id"] == request_id
    assert rejected[0]["message_id"]


def test_text_lines_carry_the_ids_and_json_lines_the_traceback() -> None:
    message = Message(
        message_type="command",
        command="payments.charge",
        payload={},
        correlation_id="req-1",
        saga_id="saga-1",
    )
    for log_format in ("text", "json"):
        stream = io.StringIO()
        handler = logs.make_handler(ObservabilitySettings(log_format=log_format), stream)
        logger = logging.getLogger(f"tests.observability.{log_format}")
        logger.addHandler(handler)
        logger.propagate = False
        token = logs.bind(message)
        try:
            try:
                raise ValueError("boom")
            except ValueError:
                logger.exception("charging failed")
        finally:
            logs.reset(token)
            logger.removeHandler(handler)
        logger.info("outside")  # no handler now: nothing written
        text = stream.getvalue()
        if log_format == "text":
            first = text.splitlines()[0]
            assert first.endswith(
                f"charging failed [correlation_id=req-1 saga_id=saga-1 "
                f"message_id={message.message_id}]"
            )
            assert "ValueError: boom" in text
        else:
            (document,) = [orjson.loads(line) for line in text.splitlines()]
            assert document["correlation_id"] == "req-1"
            assert document["level"] == "ERROR"
            assert "ValueError: boom" in document["exception"]
            assert document["time"].endswith("Z")


def test_redactor_hides_credentials_and_configured_secrets() -> None:
    settings = Settings(
        database_url=f"postgresql+asyncpg://sagaway:{DB_PASSWORD}@db:5432/orchestrator",
        bearer_secret=SecretStr(BEARER_SECRET),
        callback_secret=SecretStr("callback-secret-value"),
    )
    redact = logs.Redactor(settings.secret_values())
    text = redact(
        f"cannot reach postgresql://sagaway:{DB_PASSWORD}@db/x; password={DB_PASSWORD}; "
        f"X-API-Key: {API_KEY}; Authorization: Bearer abc.def.ghi; signed with {BEARER_SECRET}; "
        "amqp://u:p4ss@host; callback-secret-value"
    )
    for secret in (DB_PASSWORD, API_KEY, "abc.def.ghi", BEARER_SECRET, "p4ss", "callback-secret"):
        assert secret not in text
    assert "postgresql://sagaway:***@db/x" in text
    assert redact("order sku-1 for c-1: 2 items") == "order sku-1 for c-1: 2 items"


async def test_api_keys_tokens_and_the_database_password_never_reach_the_logs(
    running: Running,
) -> None:
    token = issue_token(BEARER_SECRET, "operator-1")
    forged = issue_token("not-the-secret", "mallory")
    client = running.client
    assert (await client.post("/api/v1/orders", json=ORDER)).status_code == 200
    unauthenticated = httpx.AsyncClient(base_url=running.system.url, timeout=30)
    async with unauthenticated:
        for headers, status in (
            ({"X-API-Key": "sk-wrong-" + API_KEY}, 401),
            ({"Authorization": f"Bearer {forged}"}, 401),
            ({"Authorization": f"Bearer {token}"}, 200),
            ({"Authorization": f"ApiKey {API_KEY}"}, 200),
        ):
            response = await unauthenticated.post("/api/v1/orders", json=ORDER, headers=headers)
            assert response.status_code == status, response.text
    # A database that is down is retried and logged: its URL's password must not be.
    settings = running.system.settings.replace(
        database_url=f"postgresql+asyncpg://sagaway:{DB_PASSWORD}@127.0.0.1:{free_port()}/x"
    )
    with pytest.raises(DatabaseUnavailable) as refused:
        await connect_database(settings.storage, "orchestrator", give_up_after_s=0.5)
    logging.getLogger("sagaway.tests").error("start-up failed: %s", refused.value)
    captured = running.log.getvalue()
    assert "PostgreSQL at 127.0.0.1" in captured  # the retries were logged
    for secret in (API_KEY, token, forged, BEARER_SECRET, DB_PASSWORD):
        assert secret not in captured
    assert DB_PASSWORD not in str(refused.value)


def test_cli_writes_json_lines_without_the_database_password(tmp_path: Path) -> None:
    """`sagaway orchestrator` with SAGAWAY_LOG_FORMAT=json, waiting for a database that is down."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGAWAY_", "OTEL_"))}
    env.update(
        SAGAWAY_LOG_FORMAT="json",
        SAGAWAY_DATA_DIR=str(tmp_path),
        SAGAWAY_DATABASE_URL=(
            f"postgresql+asyncpg://sagaway:{DB_PASSWORD}@127.0.0.1:{free_port()}/orchestrator"
        ),
        SAGAWAY_STARTUP_RETRY_MAX_S="0.2",
    )
    sagaway = Path(sys.executable).with_name("sagaway")
    with open(tmp_path / "err", "wb") as err:
        process = subprocess.Popen(
            [str(sagaway), "orchestrator"], env=env, stdout=err, stderr=subprocess.STDOUT
        )
        try:

            def warned_twice() -> bool:
                assert process.poll() is None, (tmp_path / "err").read_text()
                return (tmp_path / "err").read_text().count("unavailable") >= 2

            eventually_sync(
                warned_twice,
                timeout_s=20,
                what=lambda: f"two warnings:\n{(tmp_path / 'err').read_text()}",
            )
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
    output = (tmp_path / "err").read_text()
    lines = [orjson.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert any("unavailable" in line["message"] for line in lines)
    assert all(line["logger"] for line in lines)
    assert DB_PASSWORD not in output


def test_a_password_that_is_also_a_word_is_hidden_only_where_it_stands_alone() -> None:
    """The compose file's default password is `sagaway`: hiding it inside logger names and slot
    names made every log line unreadable (`***.orchestrator`, `replication slot ***_payments`)."""
    redact = logs.Redactor(
        Settings(database_url="postgresql+asyncpg://app:sagaway@db:5432/payments").secret_values()
    )

    kept = "sagaway.orchestrator: replication slot sagaway_payments of db-sagaway is active"
    assert redact(kept) == kept
    assert redact("connect as app:sagaway@db failed") == "connect as app:***@db failed"
    assert redact("the password is sagaway.") == "the password is ***."
    assert redact('{"password": "sagaway"}') == '{"password": "***"}'
    assert redact("login sagaway refused") == "login *** refused"


def test_a_generated_secret_is_hidden_even_inside_a_longer_token() -> None:
    secret = "Zk3-9qP_vT8wLm2xYr"
    redact = logs.Redactor([secret])

    assert secret not in redact(f"signature-{secret}xyz and {secret}")
