"""Scale-out: 1 → 2 orchestrator instances and 1 → 2 inventory instances on PostgreSQL + tansu.

Starts the stack of bench/e2e.py (`pg`: every role its own process), then measures place-order
throughput (closed loop) in four configurations, adding or removing instances between them:

1. one orchestrator, one inventory;
2. two orchestrators, one inventory;
3. two orchestrators, two inventory;
4. one of each again (the second instances stopped): tansu's CPU grows over a run (it keeps
   every record in memory), and this point shows how much of a difference that drift makes.

Before each measurement it waits until the consumer group has dealt the partitions again (each
instance logs "now owns N partition(s)" after a rebalance) and reports, per configuration: sagas/s,
p50/p99, errors, the partitions each instance owns, whether they are balanced (every instance
owns some, counts differ by at most one), and the CPU of every process.

On a 2-core machine every process shares the same two cores, so added instances cannot add
throughput past them: what this run shows is that instances share the partitions and the work,
and that nothing breaks while the group grows. Prints progress on stderr and one JSON line on
stdout (appended to bench/results/scale_out.jsonl).

    .venv/bin/python bench/scale_out.py                  # 64 clients, 20 s per configuration
    .venv/bin/python bench/scale_out.py --quick --no-save
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e import DistributedStack, measure  # noqa: E402
from failover import ownership, role_args  # noqa: E402
from processes import emit, log, machine  # noqa: E402

SCALED = ("orchestrator", "inventory")
INFO = {"SAGAWAY_LOG_LEVEL": "INFO"}  # the consumers' ownership lines


def instances(stack: DistributedStack, role: str) -> list[Any]:
    return [r for r in stack.roles.roles if r.name == role or r.name.startswith(f"{role}-")]


def owned(stack: DistributedStack, role: str) -> dict[str, int]:
    """Instance name → the partitions it owns, from its latest ownership line (0 if none yet)."""
    out = {}
    for instance in instances(stack, role):
        lines = ownership(instance.log_path)
        out[instance.name] = lines[-1][1] if lines else 0
    return out


async def settle(stack: DistributedStack, totals: dict[str, int], timeout_s: float = 60) -> None:
    """Until every instance of each scaled role owns some partitions and together all of them."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counts = {role: owned(stack, role) for role in SCALED}
        if all(
            all(counts[role].values()) and sum(counts[role].values()) == totals[role]
            for role in SCALED
        ):
            return
        await asyncio.sleep(0.25)
    raise RuntimeError(f"the groups did not settle in {timeout_s:.0f} s: {counts}")


def balanced(counts: dict[str, int]) -> bool:
    values = list(counts.values())
    return min(values) > 0 and max(values) - min(values) <= 1


async def run(concurrency: int, duration_s: float, warm_s: float) -> dict[str, Any]:
    stack = DistributedStack()
    points: list[dict[str, Any]] = []
    try:
        await stack.start()
        for role in SCALED:  # again, with INFO logs, so that each logs what it owns
            old = stack.role(role)
            old.stop()
            stack.roles.roles.remove(old)
            stack.roles.spawn(role, role_args(role), {**stack.env(role), **INFO})
        await asyncio.sleep(1)
        started = time.monotonic()
        while min(owned(stack, r)[r] for r in SCALED) == 0:
            if time.monotonic() - started > 60:
                raise RuntimeError(f"no ownership line: {[owned(stack, r) for r in SCALED]}")
            await asyncio.sleep(0.25)
        totals = {role: owned(stack, role)[role] for role in SCALED}
        log(f"partitions per group: {totals}")
        # (label, the role to add a second instance of; "" = stop the second instances)
        steps = [
            ("1 orchestrator, 1 inventory", None),
            ("2 orchestrators, 1 inventory", "orchestrator"),
            ("2 orchestrators, 2 inventory", "inventory"),
            ("1 orchestrator, 1 inventory, again", ""),  # what the broker's drift costs
        ]
        for label, added in steps:
            if added:
                stack.roles.spawn(f"{added}-2", role_args(added), {**stack.env(added), **INFO})
                log(f"{label}: second {added} started; waiting for the rebalance")
            elif added == "":
                for second in [r for r in stack.roles.roles if r.name.endswith("-2")]:
                    second.stop()
                    stack.roles.roles.remove(second)
                log(f"{label}: second instances stopped; waiting for the rebalance")
            await settle(stack, totals)
            await asyncio.sleep(warm_s)  # the new instance's first batches, outside the window
            counts = {role: owned(stack, role) for role in SCALED}
            log(f"{label}: partitions {counts}")
            [point] = await measure(stack, [concurrency], duration_s)
            points.append(
                {
                    "configuration": label,
                    "partitions": counts,
                    "balanced": all(balanced(c) for c in counts.values()),
                    **point,
                }
            )
    finally:
        stack.stop()
    return {"concurrency": concurrency, "partition_totals": totals, "points": points}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per point")
    parser.add_argument("--quick", action="store_true", help="5 s per point (a smoke run)")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    duration = 5.0 if args.quick else args.duration
    info = machine()
    figures = asyncio.run(run(args.concurrency, duration, 1.0 if args.quick else 5.0))
    for point in figures["points"]:
        log(
            f"{point['configuration']}: {point['per_s']}/s p50 {point['p50_ms']} ms p99 "
            f"{point['p99_ms']} ms errors {point['errors']} balanced {point['balanced']}"
        )
    emit("scale_out", {**info, "quick": args.quick, **figures}, save=not args.no_save)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
