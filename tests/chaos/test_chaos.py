"""Chaos: place-order sagas through the gateway while a driver kill -9s a random role every 2–5 s
(and restarts it), and crashes PostgreSQL once; then nothing accepted is lost, nothing happened
twice, money and stock are conserved, and nothing is left in an outbox.

- `test_chaos_postgres_kafka`: every role its own process (2 orchestrators, 3 participants,
  2 gateways, 5 WAL relays) on PostgreSQL + tansu. Bounded (300 sagas, ≈3 min) unless
  `--chaos-long` / SAGAWAY_CHAOS_LONG=1 (1,000 sagas, or SAGAWAY_CHAOS_SAGAS).
- `test_chaos_embedded`: `sagaway dev` (embedded broker, SQLite), kill -9'd and restarted.

Each prints its seed first (SAGAWAY_CHAOS_SEED=<seed> replays the orders and the faults) and its
figures last, as one JSON line. docs/chaos.md describes the suite and its results.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.chaos.checks import (
    check_audit,
    check_once_only,
    check_terminal,
    sqlite_query,
    wait_outboxes_published,
)
from tests.chaos.clients import Clients, PlannedOrder, customers_needed, plan_orders
from tests.chaos.cluster import DATABASES, Cluster
from tests.chaos.faults import FaultDriver, FaultLog

REGULAR_CUSTOMERS = 50
CREDIT_CENTS = 1_000_000  # also `sagaway dev`'s seed
SKUS = 20
BOUNDED_SAGAS = 300
LONG_SAGAS = 1000
SAGAS_PER_S = 4.0

pytestmark = pytest.mark.slow


_capsys: pytest.CaptureFixture[str] | None = None


@pytest.fixture(autouse=True)
def _terminal(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    global _capsys
    _capsys = capsys
    yield
    _capsys = None


def echo(text: str) -> None:
    """Progress and figures go to the terminal even while pytest captures output."""
    if _capsys is None:
        print(text, flush=True)
        return
    with _capsys.disabled():
        print(text, flush=True)


def emit_figures(figures: dict[str, Any]) -> None:
    """The run's figures as one JSON line on stdout."""
    echo(orjson.dumps(figures).decode())


def plan(sagas: int, seed: int) -> list[PlannedOrder]:
    return plan_orders(
        sagas, seed, regular_customers=REGULAR_CUSTOMERS, credit_cents=CREDIT_CENTS, skus=SKUS
    )


async def run_workload(
    cluster: Cluster,
    orders: list[PlannedOrder],
    driver: FaultDriver,
    *,
    drain_timeout_s: float,
) -> tuple[Clients, FaultLog, dict[str, float]]:
    """Place the orders at an even pace while the driver injects faults; stop the faults; drain."""
    sagas = len(orders)
    clients = Clients(cluster.gateway_urls)
    stop = asyncio.Event()
    faults = asyncio.create_task(driver.run(stop))
    began = time.monotonic()
    try:
        await clients.place_all(orders, over_s=sagas / SAGAS_PER_S)
        placed = time.monotonic()
        stop.set()
        log = await faults
        echo(f"chaos: {sagas} orders placed in {placed - began:.1f}s, faults {dict(log.faults)}")
        drain_s = await clients.drain(timeout_s=drain_timeout_s, echo=echo)
    finally:
        stop.set()
        if not faults.done():
            await asyncio.gather(faults, return_exceptions=True)
        await clients.close()
    timings = {"submit_s": round(placed - began, 1), "drain_s": round(drain_s, 1)}
    return clients, log, timings


def figures_of(
    stack: str, seed: int, clients: Clients, log: FaultLog, timings: dict[str, float], **extra: Any
) -> dict[str, Any]:
    records = clients.records
    return {
        "suite": "chaos",
        "stack": stack,
        "seed": seed,
        "sagas": len(records),
        "accepted": sum(r.accepted for r in records),
        "completed": sum(r.final_status == "completed" for r in records),
        "compensated": sum(r.final_status == "compensated" for r in records),
        "sends": sum(r.sends for r in records),
        "resent_requests": sum(r.sends > 1 for r in records),
        **log.to_json(),
        **timings,
        **extra,
    }


def sagas_for(chaos_long: bool) -> int:
    if not chaos_long:
        return BOUNDED_SAGAS
    return int(os.environ.get("SAGAWAY_CHAOS_SAGAS") or LONG_SAGAS)


def report_failure(cluster: Cluster, driver: FaultDriver) -> None:
    """What a failed run needs to be understood: the processes' last lines and the faults."""
    echo(cluster.log_tails())
    echo(
        f"chaos: faults {driver.log.events}; exited by themselves: "
        f"{[name for name, _, _ in driver.log.unexpected_exits]}"
    )


async def check_after_run(
    cluster: Cluster,
    driver: FaultDriver,
    clients: Clients,
    log: FaultLog,
    query: Any,
    *,
    slots: bool,
) -> dict[str, Any]:
    """Every invariant of the suite, after the drain; returns the once-only figures."""
    try:
        statuses = check_terminal(clients.records)
        report = await asyncio.to_thread(cluster.audit)
        check_audit(report, statuses)
        once = await asyncio.to_thread(check_once_only, query, clients.records)
        await asyncio.to_thread(
            wait_outboxes_published, query, DATABASES, timeout_s=30, slots=slots
        )
        assert not log.unexpected_exits, [
            f"{name} ({code}):\n{tail}" for name, code, tail in log.unexpected_exits
        ]
    except BaseException:
        report_failure(cluster, driver)
        raise
    return once


async def test_chaos_postgres_kafka(chaos_long: bool, chaos_seed: int, tmp_path: Path) -> None:
    began = time.monotonic()
    sagas = sagas_for(chaos_long)
    echo(f"\nchaos: postgres+kafka, {sagas} sagas, SAGAWAY_CHAOS_SEED={chaos_seed}")
    rng = random.Random(chaos_seed)
    orders = plan(sagas, chaos_seed)
    cluster = Cluster(tmp_path)
    try:
        await asyncio.to_thread(
            cluster.start,
            customers=customers_needed(orders, REGULAR_CUSTOMERS),
            credit_cents=CREDIT_CENTS,
            skus=SKUS,
        )
        started = time.monotonic()
        echo(f"chaos: {len(cluster.roles)} role processes up in {started - began:.1f}s")
        submit_s = sagas / SAGAS_PER_S
        driver = FaultDriver(
            cluster,
            rng,
            postgres=cluster.postgres,
            postgres_restart_after_s=rng.uniform(0.3, 0.6) * submit_s,
            echo=echo,
        )
        try:
            clients, log, timings = await run_workload(
                cluster, orders, driver, drain_timeout_s=120 + sagas / 10
            )
        except BaseException:
            report_failure(cluster, driver)
            raise
        once = await check_after_run(cluster, driver, clients, log, cluster.query, slots=True)
        figures = figures_of(
            "postgres-kafka", chaos_seed, clients, log, timings,
            role_processes=len(cluster.roles), **once,
            elapsed_s=round(time.monotonic() - began, 1),
        )  # fmt: skip
        emit_figures(figures)
    finally:
        await asyncio.to_thread(cluster.stop)


async def test_chaos_embedded(chaos_long: bool, chaos_seed: int, tmp_path: Path) -> None:
    began = time.monotonic()
    sagas = 600 if chaos_long else 200
    echo(f"\nchaos: embedded (sagaway dev), {sagas} sagas, SAGAWAY_CHAOS_SEED={chaos_seed}")
    cluster = Cluster(tmp_path, embedded=True)
    try:
        await asyncio.to_thread(cluster.start)
        driver = FaultDriver(cluster, random.Random(chaos_seed), every_s=(6.0, 12.0), echo=echo)
        try:
            clients, log, timings = await run_workload(
                cluster, plan(sagas, chaos_seed), driver, drain_timeout_s=120
            )
        except BaseException:
            report_failure(cluster, driver)
            raise
        once = await check_after_run(
            cluster, driver, clients, log, sqlite_query(cluster.data_dir), slots=False
        )
        emit_figures(
            figures_of(
                "embedded",
                chaos_seed,
                clients,
                log,
                timings,
                **once,
                elapsed_s=round(time.monotonic() - began, 1),
            )  # fmt: skip
        )
    finally:
        await asyncio.to_thread(cluster.stop)
