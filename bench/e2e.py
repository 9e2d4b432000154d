"""End-to-end benchmark: closed-loop HTTP clients post place-order (sync) at the gateway for a
fixed time at each concurrency, on (a) `sagaway dev` (embedded SQLite + broker, one process) and
(b) PostgreSQL (fsync on) + the tansu Kafka-protocol broker with every role its own process and
a WAL relay per database. Prints ONE JSON line: per stack and concurrency, sagas/s, p50/p95/p99,
errors, and CPU-ms per saga summed over every process of the system (PostgreSQL and the broker
included; the load generator's CPU reported apart).

    .venv/bin/python bench/e2e.py                         # 30 s per point, 16,64,256, both stacks
    .venv/bin/python bench/e2e.py --quick                 # 5 s smoke run
    .venv/bin/python bench/e2e.py --stack pg --profile /tmp/prof   # + py-spy of every role
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from processes import (  # noqa: E402
    BENCH_ENV,
    ORDER_PATH,
    SAGAWAY,
    TANSU_ENV,
    CpuMeter,
    PostgresBreakdown,
    RoleSet,
    closed_loop,
    emit,
    free_port,
    load_average,
    log,
    machine,
    open_loop,
    parse_concurrency,
    raise_fd_limit,
    run_checked,
    wait_http,
    warm_up,
)

from tests.servers.postgres import PostgresServer  # noqa: E402
from tests.servers.tansu import TansuServer  # noqa: E402

SERVICES = ("orchestrator", "gateway", "inventory", "payments", "shipping")
PARTICIPANTS = ("inventory", "payments", "shipping")


class EmbeddedStack:
    """`sagaway dev` in a fresh data dir: everything in one process."""

    name = "embedded"

    def __init__(self) -> None:
        self.roles = RoleSet()
        self.port = free_port()
        self.data_dir = Path(tempfile.mkdtemp(prefix="sagaway-bench-dev-"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        log(f"embedded: sagaway dev on :{self.port}, data in {self.data_dir}")
        self.roles.spawn(
            "dev",
            [SAGAWAY, "dev", "--host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", str(self.data_dir)],
            BENCH_ENV,
        )  # fmt: skip
        await wait_http(self.url + "/healthz", 120, self.roles)
        await warm_up(self.url + ORDER_PATH)

    def pids(self) -> dict[str, int]:
        return {role.name: role.pid for role in self.roles.roles}

    def stop(self) -> None:
        self.roles.stop_all()
        subprocess.run(["rm", "-rf", str(self.data_dir)], check=False)


class DistributedStack:
    """PostgreSQL (durable settings) + tansu, one database per service, and every role its own
    process: 5 WAL relays, 3 participants, the orchestrator and the gateway."""

    name = "pg"

    def __init__(self, postgres: PostgresServer | None = None) -> None:
        self.own_postgres = postgres is None
        self.postgres = postgres or PostgresServer(fast=False)
        self.tansu = TansuServer()
        self.roles = RoleSet()
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, service: str | None = None) -> dict[str, str]:
        env = {**BENCH_ENV, **TANSU_ENV, "SAGAWAY_KAFKA_BOOTSTRAP": self.tansu.bootstrap}
        if service:
            env["SAGAWAY_DATABASE_URL"] = self.postgres.async_url(f"bench_{service}")
        return env

    async def start(self) -> None:
        if self.own_postgres:
            log("pg: starting PostgreSQL (fsync on)")
            self.postgres.start()
        self.tansu.start()
        log(f"pg: PostgreSQL :{self.postgres.port}, tansu {self.tansu.bootstrap}")
        for service in SERVICES:
            self.postgres.create_database(f"bench_{service}")
            run_checked(
                [SAGAWAY, "migrate", "--service", service,
                 "--database-url", self.postgres.async_url(f"bench_{service}")],
                self.env(), f"migrate {service}",
            )  # fmt: skip
        run_checked(
            [SAGAWAY, "seed", "--no-migrate",
             "--inventory-url", self.postgres.async_url("bench_inventory"),
             "--payments-url", self.postgres.async_url("bench_payments")],
            self.env(), "seed",
        )  # fmt: skip
        log("pg: databases migrated and seeded; starting the roles")
        for name in PARTICIPANTS:
            self.roles.spawn(name, [SAGAWAY, "participant", name, "--no-relay"], self.env(name))
        self.roles.spawn("orchestrator", [SAGAWAY, "orchestrator"], self.env("orchestrator"))
        self.roles.spawn(
            "gateway",
            [SAGAWAY, "gateway", "--host", "127.0.0.1", "--port", str(self.port),
             "--internal-port", "0"],
            {**self.env("gateway"), "SAGAWAY_GATEWAY_RUN_RELAY": "false"},
        )  # fmt: skip
        await wait_http(self.url + "/healthz", 120, self.roles)
        for service in SERVICES:
            self.roles.spawn(
                f"relay-{service}", [SAGAWAY, "relay", "--service", service], self.env(service)
            )
        await wait_http(self.url + "/readyz", 60, self.roles)
        log("pg: gateway ready; warming up")
        await warm_up(self.url + ORDER_PATH)

    def role(self, name: str) -> Any:
        return next(role for role in self.roles.roles if role.name == name)

    def pids(self) -> dict[str, int]:
        pids = {role.name: role.pid for role in self.roles.roles}
        assert self.tansu.process is not None
        pids["tansu"] = self.tansu.process.pid
        pids["postgres"] = postmaster_pid(self.postgres)
        return pids

    def stop(self) -> None:
        self.roles.stop_all()
        self.tansu.stop()
        if self.own_postgres:
            self.postgres.stop()


def postmaster_pid(postgres: PostgresServer) -> int:
    assert postgres.data_dir is not None
    return int((postgres.data_dir / "postmaster.pid").read_text().splitlines()[0])


def start_profilers(
    stack: Any, out_dir: Path, seconds: float, clients: int
) -> list[subprocess.Popen[bytes]]:
    """py-spy on every Python process of the stack (and its children: `sagaway dev`'s
    participants) for `seconds` (raw collapsed stacks, for flame graphs or
    `bench/profile_top.py`); what was profiled, and when, in `<stack>.profiled.json` beside them
    (bench/report.py prints it over the profile)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    taken = {**machine(), "stack": stack.name, "clients": clients, "seconds": seconds}
    (out_dir / f"{stack.name}.profiled.json").write_text(json.dumps(taken) + "\n")
    spy = str(Path(sys.executable).parent / "py-spy")
    procs = []
    for name, pid in stack.pids().items():
        if name in ("tansu", "postgres"):
            continue
        for fmt, ext in (("raw", "txt"),):
            procs.append(
                subprocess.Popen(
                    [spy, "record", "--pid", str(pid), "--subprocesses",
                     "--duration", str(int(seconds)),
                     "--rate", "100", "--format", fmt, "--output", str(out_dir / f"{name}.{ext}"),
                     "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                )  # fmt: skip
            )
    return procs


async def measure(
    stack: Any, concurrencies: list[int], duration_s: float, profile_dir: Path | None = None
) -> list[dict[str, Any]]:
    """One closed-loop run per concurrency; CPU of every process of the stack over the window."""
    points = []
    for i, concurrency in enumerate(concurrencies):
        pids = stack.pids()
        meter = CpuMeter(pids)
        pg_meter = PostgresBreakdown(pids["postgres"]) if "postgres" in pids else None
        profilers: list[subprocess.Popen[bytes]] = []

        def window(
            edge: str, meter: CpuMeter = meter, pg_meter: PostgresBreakdown | None = pg_meter
        ) -> None:
            if edge == "start":
                meter.start()
                if pg_meter:
                    pg_meter.start()
            else:
                meter.stop()
                if pg_meter:
                    pg_meter.stop()

        if profile_dir is not None and i == len(concurrencies) - 1:
            profilers = start_profilers(stack, profile_dir, duration_s, concurrency)
        log(f"{stack.name}: {concurrency} clients for {duration_s:.0f}s "
            f"(load average {load_average()})")  # fmt: skip
        result = await closed_loop(
            stack.url + ORDER_PATH, concurrency, duration_s, on_window=window
        )
        for proc in profilers:
            _, err = proc.communicate(timeout=60)
            if proc.returncode != 0:
                log(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
        stack.roles.check_alive()
        figures = result.figures()
        cpu = meter.used
        total_cpu = sum(cpu.values())
        figures["cpu_s"] = cpu
        if pg_meter:
            figures["postgres_cpu_s"] = pg_meter.used
        figures["cpu_s_total"] = round(total_cpu, 3)
        figures["cpu_ms_per_saga"] = (
            round(1000 * total_cpu / result.ok, 3) if result.ok else None
        )
        figures["load_average"] = load_average()
        log(f"{stack.name} c={concurrency}: {figures['per_s']}/s p50 {figures['p50_ms']} ms "
            f"p99 {figures['p99_ms']} ms errors {figures['errors']} "
            f"cpu/saga {figures['cpu_ms_per_saga']} ms")  # fmt: skip
        points.append(figures)
    return points


async def measure_at_rate(stack: Any, rate_per_s: float, duration_s: float) -> dict[str, Any]:
    """Open loop at a fixed rate: latency at that load (the goal's "p99 at half the peak")."""
    pids = stack.pids()
    meter = CpuMeter(pids)

    def window(edge: str) -> None:
        meter.start() if edge == "start" else meter.stop()

    log(f"{stack.name}: open loop at {rate_per_s:.0f}/s for {duration_s:.0f}s "
        f"(load average {load_average()})")  # fmt: skip
    result = await open_loop(stack.url + ORDER_PATH, rate_per_s, duration_s, on_window=window)
    stack.roles.check_alive()
    figures = result.figures()
    figures["rate_per_s"] = round(rate_per_s, 1)
    figures["max_in_flight"] = figures.pop("concurrency")
    total_cpu = sum(meter.used.values())
    figures["cpu_s"] = meter.used
    figures["cpu_ms_per_saga"] = round(1000 * total_cpu / result.ok, 3) if result.ok else None
    figures["load_average"] = load_average()
    log(f"{stack.name} at {rate_per_s:.0f}/s: p50 {figures['p50_ms']} ms p99 "
        f"{figures['p99_ms']} ms errors {figures['errors']}")  # fmt: skip
    return figures


async def run_stack(
    stack: Any,
    concurrencies: list[int],
    duration_s: float,
    profile_dir: Path | None = None,
    half_peak: bool = True,
) -> dict[str, Any]:
    """Start the stack, measure each concurrency (closed loop), then an open loop at half the
    peak rate found; stop the stack whatever happens."""
    try:
        started = time.monotonic()
        await stack.start()
        log(f"{stack.name}: up in {time.monotonic() - started:.1f}s")
        idle = await measure_idle(stack, min(10.0, duration_s))
        points = await measure(stack, concurrencies, duration_s, profile_dir)
        peak = max(p["per_s"] for p in points)
        half = await measure_at_rate(stack, peak / 2, duration_s) if half_peak and peak else None
    finally:
        stack.stop()
    return {
        "stack": stack.name,
        "idle_cpu_per_s": idle,
        "points": points,
        "peak_per_s": peak,
        "half_peak": half,
    }


async def measure_idle(stack: Any, seconds: float) -> dict[str, float]:
    """CPU seconds per second each process burns with no request at all (polling, heartbeats):
    the floor under the CPU per saga at low rates."""
    meter = CpuMeter(stack.pids())
    meter.start()
    await asyncio.sleep(seconds)
    used = meter.stop()
    idle = {name: round(cpu / seconds, 3) for name, cpu in used.items()}
    log(f"{stack.name}: idle CPU {sum(idle.values()):.2f} cores ({idle})")
    return idle


def summarize(stacks: list[dict[str, Any]]) -> dict[str, Any]:
    """The goals of the Benchmarks issue, checked against these figures."""
    goals: dict[str, Any] = {}
    for entry in stacks:
        peak = entry["peak_per_s"]
        half = entry.get("half_peak") or {}
        cpu = [p["cpu_ms_per_saga"] for p in entry["points"] if p["cpu_ms_per_saga"]]
        goals[entry["stack"]] = {
            "peak_per_s": peak,
            "goal_per_s": 1000 if entry["stack"] == "embedded" else 500,
            "min_cpu_ms_per_saga": min(cpu) if cpu else None,
            "goal_cpu_ms_per_saga": 3.0,
            "errors": sum(p["errors"] for p in entry["points"]),
            "p99_ms_at_half_peak": half.get("p99_ms"),
            "goal_p99_ms_at_half_peak": 50,
        }
    return goals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per point")
    parser.add_argument("--concurrency", default="16,64,256")
    parser.add_argument("--stack", choices=["embedded", "pg", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="5 s per point: a smoke run")
    parser.add_argument("--profile", type=Path, default=None,
                        help="py-spy every Python process at the last concurrency "
                             "(raw collapsed stacks into this directory)")
    parser.add_argument("--no-save", action="store_true",
                        help="do not append the figures to bench/results/e2e.jsonl")
    args = parser.parse_args(argv)
    duration = 5.0 if args.quick else args.duration
    concurrencies = parse_concurrency(args.concurrency)
    raise_fd_limit()
    info = machine()
    log(f"e2e: {args.stack}, {concurrencies} clients, {duration:.0f}s each; "
        f"load average {info['load_average_at_start']}")  # fmt: skip

    async def run() -> list[dict[str, Any]]:
        results = []
        if args.stack in ("embedded", "both"):
            results.append(
                await run_stack(EmbeddedStack(), concurrencies, duration, args.profile)
            )
        if args.stack in ("pg", "both"):
            results.append(
                await run_stack(DistributedStack(), concurrencies, duration, args.profile)
            )
        return results

    stacks = asyncio.run(run())
    figures = {
        "bench": "e2e",
        "quick": args.quick,
        **info,
        "load_average_at_end": load_average(),
        "stacks": stacks,
        "goals": summarize(stacks),
    }
    emit("e2e", figures, save=not args.no_save)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
