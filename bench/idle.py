"""Idle cost: the CPU each process of a running system burns with no request at all.

Starts `sagaway dev` (and, with `--stack pg` or `--stack both`, the PostgreSQL + tansu stack of
bench/e2e.py), sends a few orders so every consumer group has settled, waits, then reads user +
system time of every process from /proc/<pid>/stat over `--duration` seconds. CPU time per process
does not depend on what else runs on the machine, so the figure is robust on a shared machine.
Prints progress on stderr and one JSON line of figures (cores busy per process) on stdout.

    .venv/bin/python bench/idle.py                     # sagaway dev, 30 s
    .venv/bin/python bench/idle.py --stack both --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e import DistributedStack, EmbeddedStack  # noqa: E402
from processes import emit, log, machine  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
GOAL_CORES = 0.02


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of one process, from /proc/<pid>/stat (None once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def children(pid: int) -> list[int]:
    """Direct children of `pid` (every thread's children list)."""
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
            out.extend(int(c) for c in text.split())
    except OSError:
        pass
    return out


def comm(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [w.decode(errors="replace") for w in cmdline if w]
    if words and words[0].startswith("postgres"):
        return "postgres"
    for verb in ("participants", "dev", "participant", "orchestrator", "gateway", "relay"):
        if any(w == verb or w.endswith(f".{verb}") or w.endswith(f"/{verb}") for w in words):
            return verb
    return Path(words[0]).name if words else "?"


def process_tree(name: str, pid: int) -> dict[str, list[int]]:
    """`name` for the root, `name/<kind>[-n]` for each descendant; PostgreSQL's backends count
    together as `postgres/backends` (the server's own cost)."""
    found: dict[str, list[int]] = {name: [pid]}
    stack = [pid]
    seen: dict[str, int] = {}
    while stack:
        for child in children(stack.pop()):
            kind = comm(child)
            if name == "postgres":
                found.setdefault("postgres/backends", []).append(child)
                continue
            seen[kind] = seen.get(kind, 0) + 1
            label = f"{name}/{kind}" + (f"-{seen[kind]}" if seen[kind] > 1 else "")
            found[label] = [child]
            stack.append(child)
    return found


def tree_cpu(pids: list[int]) -> float | None:
    times = [proc_cpu_s(pid) for pid in pids]
    known = [t for t in times if t is not None]
    return sum(known) if known else None


async def measure(stack: Any, seconds: float, settle_s: float) -> dict[str, float]:
    log(f"{stack.name}: settling {settle_s:.0f} s after the warm-up")
    await asyncio.sleep(settle_s)
    pids: dict[str, list[int]] = {}
    for name, pid in stack.pids().items():
        pids.update(process_tree(name, pid))
    before = {label: tree_cpu(group) for label, group in pids.items()}
    start = time.monotonic()
    left = seconds
    while left > 0:
        step = min(10.0, left)
        await asyncio.sleep(step)
        left -= step
        log(f"{stack.name}: {seconds - left:.0f}/{seconds:.0f} s measured")
    elapsed = time.monotonic() - start
    cores: dict[str, float] = {}
    for label, group in pids.items():
        after, first = tree_cpu(group), before[label]
        if after is not None and first is not None:
            cores[label] = round((after - first) / elapsed, 4)
    return dict(sorted(cores.items(), key=lambda kv: -kv[1]))


def report(stack_name: str, cores: dict[str, float]) -> dict[str, Any]:
    broker = {k: v for k, v in cores.items() if k.startswith(("tansu", "postgres"))}
    ours = {k: v for k, v in cores.items() if k not in broker}
    total = round(sum(ours.values()), 4)
    log(f"{stack_name}: {total:.4f} cores busy in Sagaway's processes (goal ≤ {GOAL_CORES})")
    for label, value in cores.items():
        log(f"  {label:<32} {value:.4f}")
    if broker:
        log(f"  servers apart (tansu, PostgreSQL): {sum(broker.values()):.4f}")
    return {
        "stack": stack_name,
        "sagaway_cores": total,
        "servers_cores": round(sum(broker.values()), 4),
        "per_process": cores,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", choices=["embedded", "pg", "both"], default="embedded")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)

    async def run() -> list[dict[str, Any]]:
        out = []
        names = ["embedded", "pg"] if args.stack == "both" else [args.stack]
        for name in names:
            stack: Any = EmbeddedStack() if name == "embedded" else DistributedStack()
            try:
                await stack.start()
                out.append(report(name, await measure(stack, args.duration, args.settle)))
            finally:
                stack.stop()
        return out

    info = machine()
    stacks = asyncio.run(run())
    emit("idle", {**info, "duration_s": args.duration, "stacks": stacks}, save=not args.no_save)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
