"""What the benchmark scripts share: starting role processes, counting the CPU they (and their
children, e.g. PostgreSQL's backends) burn, and a closed-loop HTTP load generator.

The load generator runs in the benchmark script's own process; its CPU is reported apart
(`loadgen_cpu_s`) and never counted in the CPU per saga, which sums the system under test only.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
SAGAWAY = str(ROOT / ".venv" / "bin" / "sagaway")
PYTHON = str(ROOT / ".venv" / "bin" / "python")
ORDER_PATH = "/api/v1/orders"

# Settings every role process gets against the tansu broker (see /work/shared/NOTES.md):
# no idempotent producer, short group sessions, and a fetch wait traded between latency and the
# CPU of fetches that tansu answers by polling (docs/benchmarks.md, "Fourth round").
TANSU_ENV = {
    "SAGAWAY_PRODUCER_IDEMPOTENCE": "false",
    "SAGAWAY_SESSION_TIMEOUT_MS": "2000",
    "SAGAWAY_HEARTBEAT_INTERVAL_MS": "250",
    # Another trade of latency for broker CPU: BENCH_FETCH_MAX_WAIT_MS=5 (the value until the
    # fourth round), 20...
    "SAGAWAY_FETCH_MAX_WAIT_MS": os.environ.get("BENCH_FETCH_MAX_WAIT_MS", "50"),
}
# The benchmark measures the saga path, not the per-client rate limit (50/s by default).
BENCH_ENV = {"SAGAWAY_RATE_LIMIT_PER_S": "0", "SAGAWAY_LOG_LEVEL": "WARNING"}


def log(text: str) -> None:
    """Progress goes to stderr; stdout carries only the one JSON line of figures."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_fd_limit(wanted: int = 65_536) -> int:
    """Raise this process's open-file limit (inherited by the roles it spawns); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    """What the figures were measured on, saved with them."""
    return {
        "cpus": os.cpu_count(),
        "load_average_at_start": load_average(),
        "python": sys.version.split()[0],
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": code_version(),
        "fetch_max_wait_ms": int(TANSU_ENV["SAGAWAY_FETCH_MAX_WAIT_MS"]),
    }


def code_version() -> str | None:
    """The git commit measured (with `+dirty` for uncommitted changes to anything but the saved
    results and the docs: a run saved by the bench before must not mark the next one dirty)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
            check=True, timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
             ":(exclude)bench/results", ":(exclude)docs"], cwd=ROOT,
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


# ---------------------------------------------------------------- role processes


@dataclass
class Role:
    """One process of the system under test, with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 10.0) -> None:
        if not self.alive():
            return
        with _suppress_lookup():
            os.kill(self.pid, signal.SIGCONT)  # a paused process cannot act on SIGTERM
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout_s)


class _suppress_lookup:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool:
        return isinstance(exc, ProcessLookupError)


class RoleSet:
    """The processes a benchmark started, stopped in reverse order on `stop_all()`."""

    def __init__(self, log_dir: Path | None = None) -> None:
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="sagaway-bench-logs-"))
        self.roles: list[Role] = []

    def spawn(self, name: str, args: list[str], env: Mapping[str, str]) -> Role:
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "wb") as out:
            process = subprocess.Popen(
                args,
                env={**os.environ, **env},
                cwd=str(ROOT),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        role = Role(name, process, log_path)
        self.roles.append(role)
        return role

    def check_alive(self) -> None:
        for role in self.roles:
            if not role.alive():
                raise RuntimeError(
                    f"{role.name} exited ({role.process.returncode}):\n{role.log_tail()}"
                )

    def stop_all(self) -> None:
        for role in reversed(self.roles):
            role.stop()


def run_checked(args: list[str], env: Mapping[str, str], what: str) -> str:
    done = subprocess.run(
        args, env={**os.environ, **env}, cwd=str(ROOT), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


# ---------------------------------------------------------------- CPU and memory accounting


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process, its live descendants, and the children it has
    already reaped (PostgreSQL's exited backends land in the postmaster's children_* times)."""
    try:
        root = psutil.Process(pid)
        times = root.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        descendants = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    for child in descendants:
        try:
            t = child.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass  # exited between the listing and now: counted by its parent once reaped
    return total


def tree_rss_bytes(pid: int) -> int:
    try:
        root = psutil.Process(pid)
        total = root.memory_info().rss
        for child in root.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return int(total)
    except psutil.NoSuchProcess:
        return 0


class CpuMeter:
    """CPU seconds per named process tree between `start()` and `stop()`."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self._before: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def _sample(self) -> dict[str, float]:
        return {name: tree_cpu_s(pid) for name, pid in self.pids.items()}

    def start(self) -> None:
        self._before = self._sample()

    def stop(self) -> dict[str, float]:
        after = self._sample()
        self.used = {name: round(after[name] - self._before[name], 3) for name in self.pids}
        return self.used


def postgres_role(title: str) -> str:
    """A PostgreSQL process's kind from its title: `walsender`, `backend <database>`, or the
    auxiliary process's name (`walwriter`, `checkpointer`, ...)."""
    title = title.removeprefix("postgres:").strip()
    words = title.split()
    if not words:
        return "postmaster"
    if words[0] == "walsender":
        return "walsender"
    if len(words) >= 3 and "(" in words[2]:  # "<user> <database> <host(port)> <state>"
        return f"backend {words[1]}"
    if title.startswith("-D") or "/" in words[0]:
        return "postmaster"
    return " ".join(w for w in words if not w.startswith("("))[:40]


class PostgresBreakdown:
    """CPU seconds of a PostgreSQL server's live processes between `start()` and `stop()`, by
    kind (`postgres_role`): where PostgreSQL's share of the CPU per saga goes."""

    def __init__(self, postmaster_pid: int) -> None:
        self.pid = postmaster_pid
        self._before: dict[int, float] = {}
        self.used: dict[str, float] = {}

    def _sample(self) -> dict[int, tuple[str, float]]:
        out: dict[int, tuple[str, float]] = {}
        try:
            processes = [psutil.Process(self.pid), *psutil.Process(self.pid).children()]
        except psutil.NoSuchProcess:
            return out
        for proc in processes:
            try:
                t = proc.cpu_times()
                title = " ".join(proc.cmdline()) if proc.pid != self.pid else "postmaster"
                out[proc.pid] = (postgres_role(title), t.user + t.system)
            except psutil.NoSuchProcess:
                pass
        return out

    def start(self) -> None:
        self._before = {pid: cpu for pid, (_, cpu) in self._sample().items()}

    def stop(self) -> dict[str, float]:
        used: dict[str, float] = {}
        for pid, (role, cpu) in self._sample().items():
            used[role] = used.get(role, 0.0) + cpu - self._before.get(pid, 0.0)
        ranked = sorted(used.items(), key=lambda kv: -kv[1])
        self.used = {role: round(cpu, 3) for role, cpu in ranked}
        return self.used


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------- HTTP


async def wait_http(url: str, timeout_s: float = 60.0, roles: RoleSet | None = None) -> None:
    """Until GET url answers 200 (checking that the roles are still alive meanwhile)."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            if roles is not None:
                roles.check_alive()
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            except (TimeoutError, aiohttp.ClientError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer 200 within {timeout_s:.0f}s")
            await asyncio.sleep(0.2)


def order_body(i: int) -> bytes:
    """The i-th place-order request: seeded customers c-1..c-1000 and skus sku-1..sku-100,
    shipped to FR (a country shipping accepts, so every saga should complete)."""
    return json.dumps(
        {
            "customer_id": f"c-{i % 1000 + 1}",
            "items": [{"sku": f"sku-{(i * 7) % 100 + 1}", "quantity": 1}],
            "total_cents": 100,
            "country": "FR",
        }
    ).encode()


async def warm_up(url: str, timeout_s: float = 90.0, wanted: int = 20) -> None:
    """Send orders one by one until `wanted` in a row complete (consumer groups settled)."""
    deadline = time.monotonic() + timeout_s
    ok = 0
    i = 0
    async with aiohttp.ClientSession() as session:
        while ok < wanted:
            i += 1
            try:
                async with session.post(
                    url, data=order_body(i), headers={"Content-Type": "application/json",
                                                      "Prefer": "wait=10"},
                    timeout=aiohttp.ClientTimeout(total=15),
                ) as resp:
                    await resp.read()
                    ok = ok + 1 if resp.status == 200 else 0
            except (TimeoutError, aiohttp.ClientError):
                ok = 0
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {wanted} orders in a row completed within {timeout_s}s")


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


@dataclass
class LoadResult:
    """What a closed-loop run measured, client side."""

    concurrency: int
    duration_s: float
    ok: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    loadgen_cpu_s: float = 0.0

    @property
    def errors(self) -> int:
        return sum(self.statuses.values()) - self.ok

    def figures(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)

        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 2)

        return {
            "concurrency": self.concurrency,
            "duration_s": round(self.duration_s, 2),
            "completed": self.ok,
            "errors": self.errors,
            "statuses": dict(self.statuses),
            "per_s": round(self.ok / self.duration_s, 1) if self.duration_s else 0.0,
            "p50_ms": r(percentile(lat, 50)),
            "p95_ms": r(percentile(lat, 95)),
            "p99_ms": r(percentile(lat, 99)),
            "max_ms": r(lat[-1] if lat else None),
            "loadgen_cpu_s": round(self.loadgen_cpu_s, 3),
        }


async def closed_loop(
    url: str,
    concurrency: int,
    duration_s: float,
    *,
    body: Callable[[int], bytes] = order_body,
    headers: Mapping[str, str] | None = None,
    ok_statuses: Iterable[int] = (200,),
    on_window: Callable[[str], None] | None = None,
    request_timeout_s: float = 60.0,
) -> LoadResult:
    """`concurrency` clients, each posting the next request as soon as its previous one was
    answered, for `duration_s`. Only requests started inside the window count; those still in
    flight when it ends are awaited (so the processes finish their work) but not counted.

    `on_window("start"|"stop")` is called at the window's edges (the CPU meters hang there).
    """
    ok_set = set(ok_statuses)
    result = LoadResult(concurrency, duration_s)
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    counter = iter(range(10**12))
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=request_timeout_s)
    ) as session:
        start = loop.time()
        end = start + duration_s

        async def client() -> None:
            while True:
                t0 = loop.time()
                if t0 >= end:
                    return
                try:
                    async with session.post(
                        url, data=body(next(counter)), headers=all_headers
                    ) as resp:
                        await resp.read()
                        status = str(resp.status)
                        good = resp.status in ok_set
                except (TimeoutError, aiohttp.ClientError) as exc:
                    status, good = type(exc).__name__, False
                t1 = loop.time()
                if t1 <= end:  # count what finished inside the window
                    result.statuses[status] += 1
                    if good:
                        result.ok += 1
                        result.latencies_ms.append((t1 - t0) * 1000)

        if on_window:
            on_window("start")
        cpu0 = self_cpu_s()
        tasks = [asyncio.create_task(client()) for _ in range(concurrency)]
        await asyncio.sleep(max(0.0, end - loop.time()))
        if on_window:
            on_window("stop")
        result.loadgen_cpu_s = self_cpu_s() - cpu0
        result.duration_s = loop.time() - start
        await asyncio.gather(*tasks)
    return result


async def open_loop(
    url: str,
    rate_per_s: float,
    duration_s: float,
    *,
    body: Callable[[int], bytes] = order_body,
    on_window: Callable[[str], None] | None = None,
    request_timeout_s: float = 60.0,
    max_connections: int = 2048,
) -> LoadResult:
    """Requests sent at a fixed rate (one every 1/rate s, whatever the answers do) for
    `duration_s`: the latency at a given load, which a closed loop cannot pin. Latency runs from
    each request's scheduled time, so a stalled sender shows up in it (no coordinated omission).
    `LoadResult.concurrency` holds the most requests in flight at once."""
    result = LoadResult(0, duration_s)
    headers = {"Content-Type": "application/json"}
    loop = asyncio.get_running_loop()
    in_flight = 0
    connector = aiohttp.TCPConnector(limit=max_connections)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=request_timeout_s)
    ) as session:

        async def one(i: int, due: float) -> None:
            nonlocal in_flight
            in_flight += 1
            result.concurrency = max(result.concurrency, in_flight)
            try:
                async with session.post(url, data=body(i), headers=headers) as resp:
                    await resp.read()
                    status, good = str(resp.status), resp.status == 200
            except (TimeoutError, aiohttp.ClientError) as exc:
                status, good = type(exc).__name__, False
            in_flight -= 1
            result.statuses[status] += 1
            if good:
                result.ok += 1
                result.latencies_ms.append((loop.time() - due) * 1000)

        if on_window:
            on_window("start")
        cpu0 = self_cpu_s()
        start = loop.time()
        total = int(rate_per_s * duration_s)
        tasks = []
        for i in range(total):
            due = start + i / rate_per_s
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)
        if on_window:
            on_window("stop")
        result.loadgen_cpu_s = self_cpu_s() - cpu0
        result.duration_s = loop.time() - start
    return result


# ---------------------------------------------------------------- output


def emit(name: str, figures: dict[str, Any], *, save: bool = True) -> None:
    """Print the ONE JSON line on stdout and append it to bench/results/<name>.jsonl."""
    line = json.dumps(figures, sort_keys=False)
    print(line, flush=True)
    if save:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        with open(RESULTS_DIR / f"{name}.jsonl", "a") as out:
            out.write(line + "\n")
    log(f"figures appended to {RESULTS_DIR / (name + '.jsonl')}" if save else "not saved")


def parse_concurrency(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or any(v < 1 for v in values):
        raise ValueError(f"--concurrency wants positive integers like 16,64,256; got {text!r}")
    return values
