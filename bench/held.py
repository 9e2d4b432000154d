"""Held-requests benchmark: N concurrent sync place-order requests (10,000 by default) held at
ONE gateway while the orchestrator is paused (SIGSTOP), then released (SIGCONT). Every request
must be answered 200 `completed` with its own order; reports errors, the gateway's peak RSS,
and latency (from sending, and from the release). PostgreSQL (fsync on) + tansu, every role its
own process, as in e2e.py's `pg` stack. Prints ONE JSON line.

    .venv/bin/python bench/held.py                        # 10,000 held
    .venv/bin/python bench/held.py --quick                # 1,000 held, 5 s hold
    .venv/bin/python bench/held.py --concurrency 2000,10000 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402
import psutil  # noqa: E402
from e2e import DistributedStack  # noqa: E402
from processes import (  # noqa: E402
    ORDER_PATH,
    emit,
    load_average,
    log,
    machine,
    order_body,
    parse_concurrency,
    percentile,
    raise_fd_limit,
)

from tests.servers.postgres import execute  # noqa: E402

WAIT_S = 300  # the gateway's most (gateway_max_wait_s): nothing may time out while held
OPEN_BATCH = 250  # connections opened per step, so the listen backlog never overflows


async def hold_and_release(stack: DistributedStack, held: int, hold_s: float) -> dict[str, Any]:
    orchestrator = stack.role("orchestrator")
    gateway = psutil.Process(stack.role("gateway").pid)
    gateway_dsn = stack.postgres.dsn("bench_gateway")
    before = int(execute(gateway_dsn, "SELECT count(*) FROM requests")[0][0])  # type: ignore[call-overload]
    rss_start = gateway.memory_info().rss
    peak_rss = rss_start
    loop = asyncio.get_running_loop()

    def sample_rss() -> None:
        nonlocal peak_rss
        peak_rss = max(peak_rss, gateway.memory_info().rss)

    os.kill(orchestrator.pid, signal.SIGSTOP)
    log(f"held {held}: orchestrator paused (pid {orchestrator.pid}); opening requests")
    statuses: Counter[str] = Counter()
    wrong: list[str] = []
    ids: set[str] = set()
    good: list[int] = []
    sent_at: list[float] = [0.0] * held
    answered_at: list[float] = [0.0] * held
    release_at = 0.0
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=WAIT_S + 60, sock_connect=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> None:
            sent_at[i] = loop.time()
            try:
                async with session.post(
                    stack.url + ORDER_PATH,
                    data=held_body(i),
                    headers={"Content-Type": "application/json", "Prefer": f"wait={WAIT_S}"},
                ) as resp:
                    text = await resp.read()
                    statuses[str(resp.status)] += 1
                    answered_at[i] = loop.time()
                    if resp.status != 200:
                        wrong.append(f"#{i}: HTTP {resp.status} {text[:200]!r}")
                        return
                    body = json.loads(text)
                    if body.get("status") != "completed" or body.get("id") in ids:
                        wrong.append(f"#{i}: {text[:200]!r}")
                        return
                    ids.add(body.get("id"))
                    sent = json.loads(held_body(i))
                    result = body.get("result") or {}
                    if (result.get("customer_id"), result.get("total_cents")) != (
                        sent["customer_id"], sent["total_cents"]
                    ):
                        wrong.append(f"#{i}: answered with another order's result {text[:200]!r}")
                        return
                    good.append(i)
            except (TimeoutError, aiohttp.ClientError) as exc:
                statuses[type(exc).__name__] += 1
                wrong.append(f"#{i}: {type(exc).__name__}: {exc}")

        tasks = []
        opened_at = loop.time()
        for start in range(0, held, OPEN_BATCH):
            batch = range(start, min(held, start + OPEN_BATCH))
            tasks += [asyncio.create_task(one(i)) for i in batch]
            await asyncio.sleep(0.05)
            sample_rss()
        # Held = accepted (a row in the gateway's requests table) and not answered.
        accepted = 0
        deadline = loop.time() + 120
        while loop.time() < deadline:
            sample_rss()
            accepted = int(execute(gateway_dsn, "SELECT count(*) FROM requests")[0][0]) - before  # type: ignore[call-overload]
            if accepted >= held or sum(statuses.values()) >= held:
                break
            await asyncio.sleep(0.25)
        accept_s = loop.time() - opened_at
        log(f"held {held}: {accepted} accepted in {accept_s:.1f}s, "
            f"{sum(statuses.values())} answered early; gateway RSS {peak_rss / 2**20:.0f} MiB; "
            f"holding {hold_s:.0f}s")  # fmt: skip
        hold_end = loop.time() + hold_s
        while loop.time() < hold_end:
            sample_rss()
            await asyncio.sleep(0.25)
        answered_before_release = sum(statuses.values())
        release_at = loop.time()
        os.kill(orchestrator.pid, signal.SIGCONT)
        log(f"held {held}: orchestrator released")
        pending = set(tasks)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=0.25)
            sample_rss()
        drained_s = loop.time() - release_at
    stack.roles.check_alive()
    answered = [answered_at[i] for i in range(held) if answered_at[i]]
    from_send = sorted((answered_at[i] - sent_at[i]) * 1000 for i in range(held) if answered_at[i])
    from_release = sorted(max(0.0, t - release_at) * 1000 for t in answered)
    figures = {
        "held": held,
        "accepted_while_paused": accepted,
        "accept_s": round(accept_s, 2),
        "answered_before_release": answered_before_release,
        "ok": len(good),
        "errors": len(wrong),
        "statuses": dict(statuses),
        "error_samples": wrong[:5],
        "gateway_rss_mib_start": round(rss_start / 2**20, 1),
        "gateway_rss_mib_peak": round(peak_rss / 2**20, 1),
        "drain_s": round(drained_s, 2),
        "drain_per_s": round(len(answered) / drained_s, 1) if drained_s else None,
        "p50_ms_from_release": _r(percentile(from_release, 50)),
        "p99_ms_from_release": _r(percentile(from_release, 99)),
        "p50_ms_from_send": _r(percentile(from_send, 50)),
        "p99_ms_from_send": _r(percentile(from_send, 99)),
        "load_average": load_average(),
    }
    log(f"held {held}: {figures['ok']} ok, {figures['errors']} errors, drained in "
        f"{figures['drain_s']}s, gateway peak RSS {figures['gateway_rss_mib_peak']} MiB, "
        f"p99 from release {figures['p99_ms_from_release']} ms")  # fmt: skip
    return figures


def held_body(i: int) -> bytes:
    """The i-th order, with a total no other held request has: the answer must carry it back."""
    order = json.loads(order_body(i))
    order["total_cents"] = 100 + i
    return json.dumps(order).encode()


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds the requests stay held once all are accepted")
    parser.add_argument("--concurrency", default="10000",
                        help="how many requests are held at once (comma list: one run each)")
    parser.add_argument("--quick", action="store_true", help="1,000 held for 5 s: a smoke run")
    parser.add_argument("--no-save", action="store_true",
                        help="do not append the figures to bench/results/held.jsonl")
    args = parser.parse_args(argv)
    counts = [1000] if args.quick else parse_concurrency(args.concurrency)
    hold_s = 5.0 if args.quick else args.duration
    limit = raise_fd_limit(max(65_536, 2 * max(counts) + 1024))
    info = machine()
    log(f"held: {counts} requests, held {hold_s:.0f}s; fd limit {limit}; "
        f"load average {info['load_average_at_start']}")  # fmt: skip

    async def run() -> list[dict[str, Any]]:
        stack = DistributedStack()
        try:
            started = time.monotonic()
            await stack.start()
            log(f"pg: up in {time.monotonic() - started:.1f}s")
            return [await hold_and_release(stack, n, hold_s) for n in counts]
        finally:
            stack.stop()

    runs = asyncio.run(run())
    figures = {
        "bench": "held",
        "quick": args.quick,
        **info,
        "load_average_at_end": load_average(),
        "runs": runs,
        "goals": {"errors": 0, "gateway_rss_mib_max": 1024},
    }
    emit("held", figures, save=not args.no_save)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
