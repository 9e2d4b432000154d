"""Failover: kill -9 one of two instances of a role on PostgreSQL + tansu, and time the takeover.

Starts the stack of bench/e2e.py (`pg`) with a second instance of `--role` (orchestrator by
default, or a participant: inventory, payments, shipping), sends sync place-order requests at a
steady rate, kills one instance with SIGKILL, and reports:

- `takeover_s`: from the kill to the survivor's log line saying it owns the killed instance's
  partitions too (the consumer group's rebalance);
- `worst_delay_s`: the longest any request sent around the kill waited for its answer;
- the latency of the requests before the kill, for comparison.

The group settings are the ones the roles run with (`SAGAWAY_SESSION_TIMEOUT_MS`,
`SAGAWAY_HEARTBEAT_INTERVAL_MS`, `SAGAWAY_REBALANCE_TIMEOUT_MS`): set them in the environment to
try others. Prints progress on stderr and one JSON line on stdout.

    .venv/bin/python bench/failover.py                         # orchestrator, 3 kills
    .venv/bin/python bench/failover.py --role inventory --kills 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e import DistributedStack  # noqa: E402
from processes import ORDER_PATH, SAGAWAY, TANSU_ENV, emit, log, machine, order_body  # noqa: E402

OWNS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*now owns (\d+) partition")
# The orchestrator's own line, every 0.5-2 s (for code older than the consumer's line above).
OWNS_LIST = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*owns partitions: (.*)$")


def role_args(role: str) -> list[str]:
    if role == "orchestrator":
        return [SAGAWAY, "orchestrator"]
    return [SAGAWAY, "participant", role, "--no-relay"]


def ownership(log_path: Path) -> list[tuple[float, int]]:
    """(time, partitions owned) for each rebalance the instance logged."""
    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        match = OWNS.match(line)
        listed = None if match else OWNS_LIST.match(line)
        if match or listed:
            found = match or listed
            assert found is not None
            when = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            count = int(found.group(2)) if match else len(found.group(2).split(", "))
            out.append((when, count))
    return out


class Load:
    """Sync orders at a steady rate; keeps (sent, answered, status) per request."""

    def __init__(self, url: str, rate: float) -> None:
        self.url = url
        self.rate = rate
        self.results: list[tuple[float, float, int]] = []
        self._task: asyncio.Task[None] | None = None

    async def _one(self, session: aiohttp.ClientSession, i: int) -> None:
        sent = time.time()
        status = 0
        try:
            async with session.post(
                self.url + ORDER_PATH,
                data=order_body(i),
                headers={
                    "Content-Type": "application/json",
                    "Prefer": "wait=60",
                    "Idempotency-Key": uuid.uuid4().hex,
                },
                timeout=aiohttp.ClientTimeout(total=90),
            ) as resp:
                await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError):
            status = -1
        self.results.append((sent, time.time(), status))

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            tasks: set[asyncio.Task[None]] = set()
            i = 0
            try:
                while True:
                    i += 1
                    task = asyncio.create_task(self._one(session, i))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    await asyncio.sleep(1 / self.rate)
            except asyncio.CancelledError:
                if tasks:
                    await asyncio.wait(tasks, timeout=90)
                raise

    def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


async def one_kill(stack: DistributedStack, role: str, n: int, settle_s: float) -> dict[str, Any]:
    """Start a second instance, let the group settle, kill the older one; figures of the kill."""
    first = stack.role(role)
    second = stack.roles.spawn(f"{role}-{n}", role_args(role), {**stack.env(role), **GROUP_ENV})
    log(f"{role}: second instance started (pid {second.pid}); settling {settle_s:.0f} s")
    await asyncio.sleep(settle_s)
    owned_before = ownership(second.log_path)
    log(f"{role}: survivor owns {owned_before[-1][1] if owned_before else 0} partition(s); kill -9")
    killed_at = time.time()
    os.kill(first.pid, signal.SIGKILL)
    first.process.wait()
    deadline = time.monotonic() + 60
    takeover: float | None = None
    while time.monotonic() < deadline:
        after = [(t, count) for t, count in ownership(second.log_path) if t >= killed_at - 0.01]
        if after and after[-1][1] > (owned_before[-1][1] if owned_before else 0):
            takeover = after[-1][0] - killed_at
            break
        await asyncio.sleep(0.1)
    log(f"{role}: taken over after {takeover if takeover is None else round(takeover, 2)} s")
    # The survivor becomes the instance the next kill's second instance joins.
    stack.roles.roles.remove(first)
    second.name = role
    return {"killed_at": killed_at, "takeover_s": None if takeover is None else round(takeover, 3)}


GROUP_ENV: dict[str, str] = {}


async def run(role: str, rate: float, kills: int, settle_s: float) -> dict[str, Any]:
    stack = DistributedStack()
    for name in ("SAGAWAY_SESSION_TIMEOUT_MS", "SAGAWAY_HEARTBEAT_INTERVAL_MS",
                 "SAGAWAY_REBALANCE_TIMEOUT_MS"):  # fmt: skip
        if name in os.environ:
            GROUP_ENV[name] = os.environ[name]
    GROUP_ENV["SAGAWAY_LOG_LEVEL"] = "INFO"
    try:
        await stack.start()
        # The first instance restarted with the same settings as the second and INFO logs.
        old = stack.role(role)
        old.stop()
        stack.roles.roles.remove(old)
        stack.roles.spawn(role, role_args(role), {**stack.env(role), **GROUP_ENV})
        await asyncio.sleep(settle_s)
        load = Load(stack.url, rate)
        load.start()
        await asyncio.sleep(5)
        events = []
        for n in range(2, kills + 2):
            events.append(await one_kill(stack, role, n, settle_s))
            await asyncio.sleep(10)
        await load.stop()
    finally:
        stack.stop()
    before = sorted(a - s for s, a, st in load.results if st == 200 and s < events[0]["killed_at"])
    for event in events:
        around = [
            (a - s, st)
            for s, a, st in load.results
            if event["killed_at"] - 2 <= s <= event["killed_at"] + 8
        ]
        event["worst_delay_s"] = round(max((d for d, _ in around), default=0.0), 3)
        worst = sorted(
            ((a - s, s - event["killed_at"]) for s, a, st in load.results
             if event["killed_at"] - 2 <= s <= event["killed_at"] + 8),
            reverse=True,
        )[:5]  # fmt: skip
        event["worst_requests"] = [
            {"delay_s": round(d, 3), "sent_after_kill_s": round(at, 3)} for d, at in worst
        ]
        event["errors_around"] = sum(1 for _, st in around if st != 200)
        log(
            f"kill at +{event['killed_at'] - events[0]['killed_at']:.0f} s: takeover "
            f"{event['takeover_s']} s, worst held request {event['worst_delay_s']} s, "
            f"{event['errors_around']} errors"
        )
    errors = sum(1 for _, _, st in load.results if st != 200)
    return {
        "role": role,
        "rate_per_s": rate,
        "settings": {**{k: v for k, v in TANSU_ENV.items()}, **GROUP_ENV},
        "requests": len(load.results),
        "errors": errors,
        "p50_before_ms": round(before[len(before) // 2] * 1000, 1) if before else None,
        "kills": events,
        "worst_takeover_s": max((e["takeover_s"] or 99.0) for e in events),
        "worst_delay_s": max(e["worst_delay_s"] for e in events),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--role", default="orchestrator", choices=["orchestrator", "inventory", "payments",
                                                    "shipping"],
    )  # fmt: skip
    parser.add_argument("--rate", type=float, default=10.0, help="orders per second")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--settle", type=float, default=8.0)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    info = machine()
    figures = asyncio.run(run(args.role, args.rate, args.kills, args.settle))
    log(
        f"worst takeover {figures['worst_takeover_s']} s, worst held request "
        f"{figures['worst_delay_s']} s, {figures['errors']} errors of {figures['requests']}"
    )
    emit("failover", {**info, **figures}, save=not args.no_save)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
