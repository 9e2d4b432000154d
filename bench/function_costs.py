"""Function costs: where each process of `sagaway dev` spends a saga's time, function by function.

Starts `sagaway dev` with `bench/function_costs_hook/` first on its PYTHONPATH, which wraps the
hot functions of each process (its `TARGETS`) in counters of calls and wall time. Sends sync
place-order requests from a closed loop of `--clients` clients (one by default: the latency
goal's load) and prints, per process, each function's microseconds per call and per saga.

Wall time is CPU time here: on inline SQLite the functions listed do not wait for I/O, and with
one client nothing else runs meanwhile. A sampling profiler (py-spy) spreads the same time over
thousands of frames and, with `--gil`, misses what SQLite does with the GIL released; this shows
what one step of the pipeline costs. The wrappers add ~1 µs per call.

    .venv/bin/python bench/function_costs.py                 # one client, 20 s
    .venv/bin/python bench/function_costs.py --clients 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e import EmbeddedStack  # noqa: E402
from processes import ORDER_PATH, closed_loop, emit, log, machine  # noqa: E402

HOOK = Path(__file__).resolve().parent / "function_costs_hook"


class HookedStack(EmbeddedStack):
    """`sagaway dev` whose processes count the calls and time of the hook's functions."""

    def __init__(self, counts_dir: Path) -> None:
        super().__init__()
        self.counts_dir = counts_dir

    async def start(self) -> None:
        path = os.pathsep.join(filter(None, [str(HOOK), os.environ.get("PYTHONPATH")]))
        os.environ["PYTHONPATH"] = path
        os.environ["SAGAWAY_BENCH_FUNCTION_COSTS"] = str(self.counts_dir)
        try:
            await super().start()
        finally:
            del os.environ["SAGAWAY_BENCH_FUNCTION_COSTS"]

    def python_pids(self) -> dict[int, str]:
        """The stack's Python processes: `dev` and its children, named by their command."""
        root = psutil.Process(self.roles.roles[0].pid)
        named = {}
        for process in [root, *root.children(recursive=True)]:
            cmdline = " ".join(process.cmdline())
            if "python" in cmdline or process.pid == root.pid:
                named[process.pid] = "dev" if process.pid == root.pid else _child_name(cmdline)
        return named


def _child_name(cmdline: str) -> str:
    for word in reversed(cmdline.split()):
        if "." in word and not word.startswith("-"):
            return word.rsplit(".", 1)[-1]
    return cmdline[-30:]


def signal_all(pids: dict[int, str], signum: int) -> None:
    for pid in pids:
        os.kill(pid, signum)


def read_counts(counts_dir: Path, pids: dict[int, str]) -> dict[str, dict[str, list[float]]]:
    """Each process's counts, by its name; waits for every process to have written them."""
    deadline = time.monotonic() + 10
    out: dict[str, dict[str, list[float]]] = {}
    for pid, name in pids.items():
        path = counts_dir / f"{pid}.json"
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if path.exists():
            out[name] = json.loads(path.read_text())["counts"]
    return out


def costs_table(counts: dict[str, dict[str, list[float]]], sagas: int) -> list[dict[str, Any]]:
    rows = []
    for process, functions in counts.items():
        for function, (calls, seconds) in sorted(functions.items(), key=lambda kv: -kv[1][1]):
            rows.append(
                {
                    "process": process,
                    "function": function,
                    "calls_per_saga": round(calls / max(sagas, 1), 2),
                    "us_per_call": round(1e6 * seconds / max(calls, 1), 1),
                    "us_per_saga": round(1e6 * seconds / max(sagas, 1), 1),
                }
            )
    return rows


async def measure(clients: int, duration_s: float, counts_dir: Path) -> dict[str, Any]:
    stack = HookedStack(counts_dir)
    try:
        await stack.start()
        pids = stack.python_pids()
        url = stack.url + ORDER_PATH
        await closed_loop(url, clients, 3)  # past the first calls' costs
        signal_all(pids, signal.SIGUSR2)
        log(f"{clients} client(s) for {duration_s:.0f} s")
        result = await closed_loop(url, clients, duration_s)
        signal_all(pids, signal.SIGUSR1)
        counts = read_counts(counts_dir, pids)
    finally:
        stack.stop()
    # Requests in flight at the window's end were counted by the hook too: count by completions.
    sagas = result.ok
    rows = costs_table(counts, sagas)
    log(f"{sagas} sagas, {sagas / duration_s:.1f}/s")
    log(f"  {'process':<14} {'function':<44} {'calls/saga':>10} {'µs/call':>9} {'µs/saga':>9}")
    for row in rows:
        log(
            f"  {row['process']:<14} {row['function']:<44} {row['calls_per_saga']:>10.2f}"
            f" {row['us_per_call']:>9.1f} {row['us_per_saga']:>9.1f}"
        )
    return {"clients": clients, "sagas": sagas, "per_s": round(sagas / duration_s, 1), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sagaway-bench-costs-") as counts_dir:
        figures = asyncio.run(measure(args.clients, args.duration, Path(counts_dir)))
    emit("function_costs", {**machine(), **figures}, save=not args.no_save)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
