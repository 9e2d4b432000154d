"""HTTP fuzzing of the gateway with schemathesis, driven by its own `/openapi.json`, against a real
`sagaway dev` (gateway, orchestrator, participants, SQLite, embedded broker) with an API key
configured: no 5xx, every 4xx is `application/problem+json`, every response conforms to the
document (status codes, headers, bodies) and carries the security headers. Headers the document
does not declare (Authorization, X-API-Key) are fuzzed by tests/fuzz/test_gateway_headers.py."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.auth import hash_api_key
from tests.gateway.conftest import ORDERS_ROUTE, routes_variable
from tests.harness.processes import RoleProcess
from tests.servers.tansu import free_port

API_KEY = "fuzz-key-1"
PROBLEM_JSON = "application/problem+json"
EXAMPLES = 60
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@contextlib.contextmanager
def serving(args: list[str], port: int, log_path: Path, **variables: str) -> Iterator[str]:
    """`sagaway <args>` on `port` until the block ends; its log must hold no traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGAWAY_")}
    env.update(
        {
            "SAGAWAY_API_KEYS": f'{{"fuzzer": "{hash_api_key(API_KEY)}"}}',
            "SAGAWAY_GATEWAY_DEFAULT_WAIT_S": "5",
            "SAGAWAY_GATEWAY_MAX_WAIT_S": "5",
            "SAGAWAY_RATE_LIMIT_PER_S": "0",
            "SAGAWAY_LOG_LEVEL": "WARNING",
            **{f"SAGAWAY_{name.upper()}": value for name, value in variables.items()},
        }
    )
    url = f"http://127.0.0.1:{port}"
    process = RoleProcess(args[0], args, env, log_path, log_path.parent, url=url).start()
    try:
        process.wait_ready(60)
        yield url
    finally:
        process.stop(timeout_s=20)
    text = log_path.read_text(errors="replace")
    assert "Traceback" not in text, text[-5000:]


@pytest.fixture(scope="module")
def dev_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`sagaway dev`: gateway, orchestrator and participants on SQLite and the embedded broker."""
    data_dir = tmp_path_factory.mktemp("fuzz-dev")
    port = free_port()
    args = ["dev", "--port", str(port), "--data-dir", str(data_dir)]
    with serving(args, port, data_dir / "dev.log") as url:
        yield url


@pytest.fixture
def pg_gateway_url(tmp_path: Path, kafka_bootstrap: str, migrated_pg_url: str) -> Iterator[str]:
    """`sagaway gateway` alone on PostgreSQL (WAL relay) and tansu: what the gateway stores."""
    port = free_port()
    with serving(
        ["gateway"],
        port,
        tmp_path / "gateway.log",
        data_dir=str(tmp_path),
        database_url=migrated_pg_url,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"fz{port}.",
        sagas="examples.place_order.saga",
        routes=routes_variable([ORDERS_ROUTE]),
        producer_idempotence="false",
        relay_slot_name=f"fz_{port}",
        gateway_port=str(port),
        gateway_internal_port="0",
    ) as url:
        yield url


def check_case(case: schemathesis.Case, base_url: str, extra: dict[str, str]) -> None:
    """One generated request: answered within the contract."""
    headers = {"X-API-Key": API_KEY, **extra}
    response = case.call(base_url=base_url, headers=headers, timeout=15)
    case.validate_response(response, checks=CHECKS, headers=headers)
    # Every answer, whatever the input, carries the security headers (sagaway.http).
    assert "default-src 'none'" in response.headers["content-security-policy"][0]
    assert response.headers["x-content-type-options"] == ["nosniff"]
    if 400 <= response.status_code < 500:
        content_type = response.headers.get("content-type") or [""]
        assert content_type[0] == PROBLEM_JSON, response.text
        problem = response.json()
        assert problem["status"] == response.status_code
        assert problem["type"] and problem["title"] and problem["detail"]


def fuzz(
    operation: Any,
    mode: schemathesis.GenerationMode,
    base_url: str,
    calls: Counter[Any],
    extra: dict[str, str],
) -> None:
    """Up to EXAMPLES generated requests for one operation in one mode."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(case=operation.as_strategy(mode))
    def run(case: schemathesis.Case) -> None:
        calls[(case.method, case.path, mode.value)] += 1
        check_case(case, base_url, extra)

    try:
        run()
    except Unsatisfiable:
        # Nothing to make invalid (no body, only free-form strings): positive cases only.
        assert mode is schemathesis.GenerationMode.NEGATIVE, operation.path


def test_gateway_answers_every_generated_request_within_its_contract(dev_url: str) -> None:
    # schemathesis' pytest plugin (from_fixture/parametrize) does not run on this pytest, so
    # each operation's Hypothesis strategy is driven directly, valid and invalid input both.
    schema = schemathesis.openapi.from_url(dev_url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert {op.path for op in operations} >= {"/api/v1/orders", "/api/v1/requests/{id}"}
    calls: Counter[tuple[str, str, str]] = Counter()
    modes = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
    for operation, mode in itertools.product(operations, modes):
        fuzz(operation, mode, dev_url, calls, {})
    assert calls[("GET", "/api/v1/requests/{id}", "positive")] >= EXAMPLES // 2
    for path in ("/api/v1/orders", "/api/v1/sagas/place-order"):
        for mode in modes:
            assert calls[("POST", path, mode.value)] >= EXAMPLES // 2, (path, mode)


def test_gateway_on_postgresql_stores_whatever_it_accepts(pg_gateway_url: str) -> None:
    """The same fuzzing against a gateway on PostgreSQL, every start asynchronous (no
    orchestrator runs), so accepted input is stored in PostgreSQL, which refuses things SQLite
    takes (a NUL character was a 500 here; tests/fuzz/test_gateway_nul_input.py pins that
    case, which random generation reaches only sometimes)."""
    schema = schemathesis.openapi.from_url(pg_gateway_url + "/openapi.json")
    calls: Counter[tuple[str, str, str]] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]
        if operation.method.upper() == "POST":
            for mode in schemathesis.GenerationMode:
                fuzz(operation, mode, pg_gateway_url, calls, {"Prefer": "respond-async"})
    assert calls[("POST", "/api/v1/orders", "positive")] >= EXAMPLES // 2
