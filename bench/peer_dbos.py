"""Peer benchmark: the place-order work as a DBOS 3.x workflow of three steps (reserve stock,
charge credit, schedule shipping — each one small write transaction) behind the same HTTP
endpoint and load generator, on the same PostgreSQL server (fsync on) as Sagaway's distributed
stack, measured in the same run. Prints ONE JSON line with both and the ratio Sagaway / DBOS.

    .venv/bin/python bench/peer_dbos.py                  # 30 s per point, 16,64,256
    .venv/bin/python bench/peer_dbos.py --quick          # 5 s smoke run
    .venv/bin/python bench/peer_dbos.py --no-sagaway     # DBOS alone

DBOS runs in its own process (`peer_dbos.py serve`, Starlette on uvicorn): the request handler
runs the workflow synchronously (DBOS's faster path) in Starlette's thread pool, so the figures
include HTTP, as Sagaway's do. DBOS is a bench-only dependency (`pip install -e .[bench]`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

THIS_FILE = str(Path(__file__).resolve())
APP_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS stock (sku text PRIMARY KEY, units bigint NOT NULL)",
    "CREATE TABLE IF NOT EXISTS credit (customer_id text PRIMARY KEY, cents bigint NOT NULL)",
    "CREATE TABLE IF NOT EXISTS shipments (order_id text PRIMARY KEY, country text NOT NULL, "
    "created_at timestamptz NOT NULL DEFAULT now())",
]


# ---------------------------------------------------------------- the DBOS side (subprocess)


def serve(port: int, system_url: str, app_dsn: str) -> None:
    """Run DBOS and the HTTP endpoint until killed (the benchmark driver's child process)."""
    import uuid

    import psycopg2.pool
    import uvicorn
    from dbos import DBOS, DBOSConfig
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    pool = psycopg2.pool.ThreadedConnectionPool(1, 64, app_dsn)

    def write(sql: str, params: tuple[Any, ...]) -> int:
        conn = pool.getconn()
        try:
            with conn, conn.cursor() as cur:  # one transaction, committed on exit
                cur.execute(sql, params)
                return int(cur.rowcount)
        finally:
            pool.putconn(conn)

    @DBOS.step()
    def reserve(sku: str, quantity: int) -> int:
        return write("UPDATE stock SET units = units - %s WHERE sku = %s AND units >= %s",
                     (quantity, sku, quantity))  # fmt: skip

    @DBOS.step()
    def charge(customer_id: str, cents: int) -> int:
        return write("UPDATE credit SET cents = cents - %s WHERE customer_id = %s AND cents >= %s",
                     (cents, customer_id, cents))  # fmt: skip

    @DBOS.step()
    def schedule(order_id: str, country: str) -> int:
        return write("INSERT INTO shipments (order_id, country) VALUES (%s, %s)",
                     (order_id, country))  # fmt: skip

    @DBOS.workflow()
    def place_order(order_id: str, order: dict[str, Any]) -> dict[str, Any]:
        item = order["items"][0]
        reserve(item["sku"], item["quantity"])
        charge(order["customer_id"], order["total_cents"])
        schedule(order_id, order["country"])
        return {"order_id": order_id, "status": "completed"}

    async def orders(request: Request) -> JSONResponse:
        # The workflow runs synchronously (DBOS's faster path) in Starlette's thread pool.
        order = json.loads(await request.body())
        result = await run_in_threadpool(place_order, str(uuid.uuid4()), order)
        return JSONResponse(result)

    def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    config: DBOSConfig = {
        "name": "sagaway-bench-peer",
        "system_database_url": system_url,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    app = Starlette(
        routes=[Route("/api/v1/orders", orders, methods=["POST"]), Route("/healthz", healthz)]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ---------------------------------------------------------------- the driver


class DbosStack:
    """The DBOS peer process on a database of the given PostgreSQL server."""

    name = "dbos"

    def __init__(self, postgres: Any) -> None:
        from processes import RoleSet, free_port

        self.postgres = postgres
        self.roles = RoleSet()
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        from processes import PYTHON, log, wait_http, warm_up

        from tests.servers.postgres import execute

        self.postgres.create_database("bench_dbos_app")
        app_dsn = self.postgres.dsn("bench_dbos_app")
        for sql in APP_SCHEMA:
            execute(app_dsn, sql)
        execute(app_dsn, "INSERT INTO stock SELECT 'sku-' || i, 1000000 FROM "
                         "generate_series(1, 100) i ON CONFLICT DO NOTHING")  # fmt: skip
        execute(app_dsn, "INSERT INTO credit SELECT 'c-' || i, 1000000 FROM "
                         "generate_series(1, 1000) i ON CONFLICT DO NOTHING")  # fmt: skip
        system_url = (
            f"postgresql://postgres@{self.postgres.host}:{self.postgres.port}/bench_dbos_sys"
        )
        log(f"dbos: serving on :{self.port}")
        self.roles.spawn(
            "dbos",
            [PYTHON, THIS_FILE, "serve", "--port", str(self.port),
             "--system-url", system_url, "--app-dsn", app_dsn],
            {},
        )  # fmt: skip
        await wait_http(self.url + "/healthz", 120, self.roles)
        await warm_up(self.url + "/api/v1/orders")

    def pids(self) -> dict[str, int]:
        from e2e import postmaster_pid

        return {"dbos": self.roles.roles[0].pid, "postgres": postmaster_pid(self.postgres)}

    def stop(self) -> None:
        self.roles.stop_all()


def compare(sagaway: dict[str, Any] | None, dbos: dict[str, Any]) -> dict[str, Any]:
    """Ratios Sagaway / DBOS at each concurrency and at the peaks (throughput and CPU)."""
    if sagaway is None:
        return {}
    by_c = {p["concurrency"]: p for p in dbos["points"]}
    per_point = []
    for point in sagaway["points"]:
        peer = by_c.get(point["concurrency"])
        if peer and peer["per_s"]:
            per_point.append(
                {
                    "concurrency": point["concurrency"],
                    "throughput_ratio": round(point["per_s"] / peer["per_s"], 2),
                    "cpu_per_op_ratio": (
                        round(point["cpu_ms_per_saga"] / peer["cpu_ms_per_saga"], 2)
                        if point["cpu_ms_per_saga"] and peer["cpu_ms_per_saga"]
                        else None
                    ),
                }
            )
    return {
        "per_concurrency": per_point,
        "peak_throughput_ratio": (
            round(sagaway["peak_per_s"] / dbos["peak_per_s"], 2) if dbos["peak_per_s"] else None
        ),
        "goal_ratio": 4.0,
    }


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "serve":
        sp = argparse.ArgumentParser(prog="peer_dbos.py serve")
        sp.add_argument("--port", type=int, required=True)
        sp.add_argument("--system-url", required=True)
        sp.add_argument("--app-dsn", required=True)
        served = sp.parse_args(argv[1:])
        serve(served.port, served.system_url, served.app_dsn)
        return 0

    from e2e import DistributedStack, run_stack
    from processes import emit, load_average, log, machine, parse_concurrency, raise_fd_limit

    from tests.servers.postgres import PostgresServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per point")
    parser.add_argument("--concurrency", default="16,64,256")
    parser.add_argument("--quick", action="store_true", help="5 s per point: a smoke run")
    parser.add_argument("--no-sagaway", action="store_true", help="measure DBOS only")
    parser.add_argument("--no-save", action="store_true",
                        help="do not append the figures to bench/results/peer_dbos.jsonl")
    args = parser.parse_args(argv)
    duration = 5.0 if args.quick else args.duration
    concurrencies = parse_concurrency(args.concurrency)
    raise_fd_limit()
    info = machine()
    log(f"peer_dbos: {concurrencies} clients, {duration:.0f}s each; "
        f"load average {info['load_average_at_start']}")  # fmt: skip

    postgres = PostgresServer(fast=False)

    async def run() -> tuple[dict[str, Any] | None, dict[str, Any]]:
        sagaway = None
        if not args.no_sagaway:
            sagaway = await run_stack(DistributedStack(postgres), concurrencies, duration)
        dbos = await run_stack(DbosStack(postgres), concurrencies, duration)
        return sagaway, dbos

    postgres.start()
    try:
        started = time.monotonic()
        sagaway, dbos = asyncio.run(run())
        log(f"both measured in {time.monotonic() - started:.0f}s")
    finally:
        postgres.stop()
    ratio = compare(sagaway, dbos)
    if ratio:
        log(f"Sagaway / DBOS peak throughput: {ratio['peak_throughput_ratio']}× (goal ≥ 4×)")
    figures = {
        "bench": "peer_dbos",
        "quick": args.quick,
        **info,
        "load_average_at_end": load_average(),
        "dbos_version": _dbos_version(),
        "sagaway": sagaway,
        "dbos": dbos,
        "ratio": ratio,
    }
    emit("peer_dbos", figures, save=not args.no_save)
    return 0


def _dbos_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dbos")
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
