"""Latency budget: where one sync place-order's time goes, hop by hop.

Starts `sagaway dev` (or, with `--stack pg`, PostgreSQL + tansu with every role its own process, as
bench/e2e.py does), sends sync place-order requests one at a time at a fixed low rate, then reads
every record of the saga topics back from the broker. Every message carries `sent-at` (made inside
its sender's transaction, before the commit) and its record a timestamp (when the relay produced
it: the embedded broker's append, or the Kafka producer's send; whole milliseconds, taken at the
middle of theirs), all on this machine's clock. So per saga:

- `gateway accept`: the client's send → the start command made (auth, validation, group commit);
- `<message>: commit + relay`: the message made → produced (the sender's commit, the relay's
  wake-up, its read of the outbox and the produce);
- `<role> consume + handle`: a record produced → the next message made by the role that read it
  (the broker's delivery — on tansu the fetch wait —, the consumer's wake-up, its transaction up
  to that message);
- `gateway store`: the final reply produced → the gateway's `completed_at` (replier fetch and
  store);
- `HTTP answer`: `completed_at` → the answer at the client (wake the held request, respond).

It also measures the CPU the stack's processes used while the orders were sent, per saga (the
issue's "≤ 5 ms CPU per saga at one client"; at a low rate this includes the cost at rest).

Prints progress on stderr, the table of medians and p99 per hop, and one JSON line on stdout.

    .venv/bin/python bench/latency.py                      # sagaway dev, 10 orders/s for 20 s
    .venv/bin/python bench/latency.py --stack pg --rate 5  # PostgreSQL + tansu
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e import DistributedStack, EmbeddedStack  # noqa: E402
from processes import (  # noqa: E402
    ORDER_PATH,
    TANSU_ENV,
    CpuMeter,
    emit,
    log,
    machine,
    order_body,
    percentile,
)

from sagaway.messaging.factory import connect_transport  # noqa: E402
from sagaway.settings import MessagingSettings  # noqa: E402

# A record's timestamp is whole milliseconds, cut down from the producer's clock (the embedded
# broker's append, aiokafka's send), so it is on average half a millisecond early: taken as it
# is, a message's "commit + relay" came out at ~0 or below and the next "consume + handle" half a
# millisecond long. The middle of its millisecond is the unbiased guess.
TIMESTAMP_MIDPOINT_S = 0.0005


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def send_orders(
    url: str, rate: float, duration_s: float, meter: CpuMeter
) -> dict[str, dict[str, Any]]:
    """Sync orders at `rate` per second (open loop); per request id: sent, answered, the body.
    `meter` measures the stack's CPU while they are sent and answered."""
    out: dict[str, dict[str, Any]] = {}
    errors = 0
    count = int(rate * duration_s)
    loop = asyncio.get_running_loop()
    start = loop.time()

    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> None:
            nonlocal errors
            await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
            sent = time.time()
            async with session.post(
                url + ORDER_PATH,
                data=order_body(i + 7919),
                headers={
                    "Content-Type": "application/json",
                    "Prefer": "wait=30",
                    "Idempotency-Key": uuid.uuid4().hex,
                },
            ) as resp:
                body = await resp.json()
                answered = time.time()
            if resp.status != 200:
                errors += 1
                return
            out[body["id"]] = {"sent": sent, "answered": answered, "body": body}

        async def progress() -> None:
            while True:
                await asyncio.sleep(5)
                log(f"{len(out)} of {count} answered, {errors} errors")

        reporter = asyncio.create_task(progress())
        meter.start()
        await asyncio.gather(*(one(i) for i in range(count)))
        meter.stop()
        reporter.cancel()
        log(f"sent {count}: {len(out)} answered 200, {errors} other; reading completed_at")
        for request_id, req in out.items():
            async with session.get(f"{url}/api/v1/requests/{request_id}") as resp:
                req["completed_at"] = (await resp.json()).get("completed_at")
    return out


async def read_records(settings: MessagingSettings, topics: list[str]) -> list[Any]:
    """Every record of `topics`, read from the start by a fresh consumer group."""
    transport = await connect_transport(settings)
    sub = transport.subscribe(f"latency-{uuid.uuid4().hex[:8]}", topics)
    records: list[Any] = []
    try:
        await sub.start()
        idle = 0
        while idle < 3:
            batch = await sub.fetch(5000, 1000)
            records.extend(batch)
            idle = 0 if batch else idle + 1
    finally:
        await sub.close()
        await transport.close()
    return records


def budget(requests: dict[str, dict[str, Any]], records: list[Any]) -> dict[str, list[float]]:
    """Milliseconds per hop, one list per hop name, over the sagas answered."""
    by_saga: dict[str, list[tuple[float, float, str, dict[str, str]]]] = defaultdict(list)
    for record in records:
        headers = {k: v.decode() for k, v in record.headers}
        cid = headers.get("correlation-id")
        if cid in requests and "sent-at" in headers:
            by_saga[cid].append(
                (
                    ts(headers["sent-at"]),
                    record.timestamp_ms / 1000 + TIMESTAMP_MIDPOINT_S,
                    record.topic,
                    headers,
                )
            )
    hops: dict[str, list[float]] = defaultdict(list)
    for cid, messages in by_saga.items():
        messages.sort()
        req = requests[cid]
        if len(messages) < 2:
            continue
        hops["00 gateway accept"].append(messages[0][0] - req["sent"])
        for i, (made, produced, topic, headers) in enumerate(messages):
            kind = headers.get("message-type")
            name = topic.split(".")[0]
            if topic == "gateway.replies":
                what = "final reply"
            elif topic == "orchestrator.requests":
                what = "start"
            elif kind == "reply":
                what = f"reply to {headers.get('command') or headers.get('saga-step', '?')}"
            else:
                what = headers.get("command") or topic
            hops[f"{i + 1:02d}a {what}: commit + relay"].append(produced - made)
            if i + 1 < len(messages):
                hops[f"{i + 1:02d}b {name} consume + handle"].append(messages[i + 1][0] - produced)
        completed = req.get("completed_at")
        if completed:
            hops["90 gateway replier: consume + store"].append(ts(completed) - messages[-1][1])
            hops["91 HTTP answer"].append(req["answered"] - ts(completed))
        hops["total"].append(req["answered"] - req["sent"])
    return {name: [v * 1000 for v in values] for name, values in hops.items()}


def table(hops: dict[str, list[float]]) -> list[dict[str, Any]]:
    rows = []
    for name in sorted(hops, key=lambda n: (n == "total", n)):
        # Names start with their position in the saga's path, so they sort in its order.
        values = sorted(hops[name])
        rows.append(
            {
                "hop": name,
                "n": len(values),
                "p50_ms": round(percentile(values, 50) or 0, 2),
                "p99_ms": round(percentile(values, 99) or 0, 2),
                "mean_ms": round(sum(values) / len(values), 2),
            }
        )
    return rows


def print_table(stack: str, rows: list[dict[str, Any]]) -> None:
    log(f"{stack}: latency budget (ms)")
    log(f"  {'hop':<44} {'p50':>8} {'p99':>8} {'mean':>8}")
    for row in rows:
        p50, p99, mean = row["p50_ms"], row["p99_ms"], row["mean_ms"]
        log(f"  {row['hop']:<44} {p50:>8.2f} {p99:>8.2f} {mean:>8.2f}")


def cpu_per_saga(used: dict[str, float], answered: int) -> dict[str, Any]:
    """CPU ms per answered saga: all of the stack's processes, and each of them (on the pg
    stack, PostgreSQL and tansu are among them)."""
    per = {name: round(1000 * cpu / max(answered, 1), 2) for name, cpu in used.items()}
    return {"cpu_ms_per_saga": round(sum(per.values()), 2), "cpu_ms_by_process": per}


async def run_stack(name: str, rate: float, duration_s: float) -> dict[str, Any]:
    stack: Any = EmbeddedStack() if name == "embedded" else DistributedStack()
    try:
        await stack.start()
        log(f"{name}: {rate}/s sync orders for {duration_s:.0f} s")
        meter = CpuMeter(stack.pids())
        requests = await send_orders(stack.url, rate, duration_s, meter)
        cpu = cpu_per_saga(meter.used, len(requests))
        log(f"{name}: CPU per saga {cpu['cpu_ms_per_saga']} ms ({cpu['cpu_ms_by_process']})")
        if name == "embedded":
            settings = MessagingSettings(data_dir=stack.data_dir)
        else:
            settings = MessagingSettings(
                kafka_bootstrap=stack.tansu.bootstrap, producer_idempotence=False,
                session_timeout_ms=2000, heartbeat_interval_ms=250,
                fetch_max_wait_ms=int(TANSU_ENV["SAGAWAY_FETCH_MAX_WAIT_MS"]),
            )  # fmt: skip
        topics = [
            "orchestrator.requests", "orchestrator.replies", "gateway.replies",
            "inventory.requests", "payments.requests", "shipping.requests",
        ]  # fmt: skip
        log(f"{name}: reading the records back")
        rows = table(budget(requests, await read_records(settings, topics)))
        print_table(name, rows)
        return {
            "stack": name, "rate_per_s": rate, "answered": len(requests), **cpu, "hops": rows,
        }  # fmt: skip
    finally:
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", choices=["embedded", "pg", "both"], default="embedded")
    parser.add_argument("--rate", type=float, default=10.0, help="orders per second")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    names = ["embedded", "pg"] if args.stack == "both" else [args.stack]
    info = machine()

    async def run() -> list[dict[str, Any]]:
        return [await run_stack(name, args.rate, args.duration) for name in names]

    stacks = asyncio.run(run())
    emit("latency", {**info, "stacks": stacks}, save=not args.no_save)
    print(json.dumps({"done": True}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
