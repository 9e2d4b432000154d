"""Relay benchmark: prints one JSON line with, for the WAL relay and the polling relay on
PostgreSQL publishing into a real Kafka-protocol broker (tansu):

- `drain_rows_per_s`: rows/s published from a 20,000-row outbox backlog (relay start → last ack);
- `lag_ms_p50` / `lag_ms_p99`: commit → broker-ack time of each row while writers (in another
  process) commit one-row transactions at a steady 1,000 commits/s.

PostgreSQL runs with fsync and synchronous_commit on (never the test shortcuts).
Usage: `.venv/bin/python bench/relay.py [--rows 20000] [--rate 1000] [--seconds 10]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
sys.path.insert(0, ROOT)

from sagaway.messaging.envelope import Message  # noqa: E402
from sagaway.messaging.kafka import KafkaTransport  # noqa: E402
from sagaway.outbox.poll_relay import PollRelay  # noqa: E402
from sagaway.outbox.rows import OutboxRow  # noqa: E402
from sagaway.outbox.wal_relay import WalRelay  # noqa: E402
from sagaway.outbox.writer import add_to_outbox  # noqa: E402
from sagaway.settings.composed import load_settings  # noqa: E402
from sagaway.storage.database import create_database_engine  # noqa: E402
from sagaway.storage.migrate import upgrade  # noqa: E402
from tests.servers.postgres import PostgresServer  # noqa: E402
from tests.servers.tansu import TansuServer  # noqa: E402

TOPIC = "bench.events"
WRITERS = 4


def message(i: int) -> Message:
    return Message(
        message_type="event",
        saga_id=f"saga-{i % 512}",
        payload={"order": i, "sku": "ABC-123", "qty": 2, "note": "x" * 64},
    )


async def write_backlog(url: str, topic: str, rows: int) -> None:
    engine = create_database_engine(url)
    try:
        for start in range(0, rows, 100):
            async with engine.begin() as conn:
                await add_to_outbox(conn, [(topic, message(i)) for i in range(start, start + 100)])
    finally:
        await engine.dispose()


async def steady_writer(url: str, topic: str, rate: float, seconds: float, out: Path) -> None:
    """Commit one-row transactions at `rate` per second; record when each commit returned."""
    engine = create_database_engine(url, pool_size=WRITERS)
    committed: dict[str, float] = {}
    total = int(rate * seconds)
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.2

    async def writer(w: int) -> None:
        for i in range(w, total, WRITERS):
            delay = t0 + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            msg = message(i)
            async with engine.begin() as conn:
                await add_to_outbox(conn, [(topic, msg)])
            committed[msg.message_id] = time.time()

    try:
        await asyncio.gather(*(writer(w) for w in range(WRITERS)))
    finally:
        await engine.dispose()
    await asyncio.to_thread(out.write_text, json.dumps(committed))


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_mode(mode: str, pg: PostgresServer, bootstrap: str, args: argparse.Namespace) -> dict:
    db = f"bench_{mode}"
    pg.create_database(db)
    url = pg.async_url(db)
    upgrade(url)
    settings = load_settings(
        kafka_bootstrap=bootstrap,
        producer_idempotence=False,
        topic_prefix=f"{mode}.",
        relay_batch_size=args.batch,
        relay_poll_interval_ms=args.poll_ms,
        producer_batch_bytes=args.producer_batch_kib * 1024,
    )
    topic = settings.messaging.topic_prefix + TOPIC
    engine = create_database_engine(url)
    kafka = KafkaTransport(settings.messaging)
    await kafka.start()
    await kafka.create_topics({topic: args.partitions})
    acked: dict[str, float] = {}
    count = 0

    def on_published(rows: Sequence[OutboxRow], at: datetime) -> None:
        nonlocal count
        count += len(rows)
        stamp = at.timestamp()
        for row in rows:
            acked[row.headers["message-id"]] = stamp

    def make() -> WalRelay | PollRelay:
        cls = WalRelay if mode == "wal" else PollRelay
        return cls(
            settings.relay, "bench", engine, kafka, on_published=on_published, heartbeat=False
        )

    async def until(n: int) -> None:
        deadline = time.monotonic() + 120
        while count < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{mode}: {count} of {n} rows published")
            await asyncio.sleep(0.001)

    try:
        # 1. Steady load: commit → broker-ack lag while writers commit at a fixed rate.
        task = asyncio.create_task(make().run())
        await asyncio.sleep(1.0)  # relay connected (and, for WAL, slot created)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "commits.json"
            writer = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--writer",
                url,
                topic,
                str(args.rate),
                str(args.seconds),
                str(out),
                env={**os.environ, "PYTHONPATH": ROOT},
            )
            if await writer.wait() != 0:
                raise RuntimeError("writer failed")
            committed = json.loads(out.read_text())
        await until(len(committed))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        lags = [(acked[mid] - at) * 1000 for mid, at in committed.items()]

        # 2. Backlog: rows committed while the relay is stopped, then drained (the WAL relay
        # streams them from its slot, which exists since step 1).
        await write_backlog(url, topic, args.rows)
        before = count
        started = time.perf_counter()
        task = asyncio.create_task(make().run())
        await until(before + args.rows)
        drain = args.rows / (time.perf_counter() - started)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return {
            "drain_rows_per_s": round(drain),
            "lag_ms_p50": round(percentile(lags, 0.50), 2),
            "lag_ms_p99": round(percentile(lags, 0.99), 2),
            "lag_commits": len(lags),
        }
    finally:
        await kafka.close()
        await engine.dispose()


async def bench(args: argparse.Namespace) -> dict:
    results: dict = {
        "bench": "relay",
        "backlog_rows": args.rows,
        "commits_per_s": args.rate,
        "batch": args.batch,
        "partitions": args.partitions,
        "producer_batch_kib": args.producer_batch_kib,
    }
    with PostgresServer(fast=False) as pg:
        for mode in ("wal", "poll"):
            with TansuServer() as broker:  # a fresh broker each: tansu slows as it fills
                results[mode] = await run_mode(mode, pg, broker.bootstrap, args)
    return results


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--writer":
        url, topic, rate, seconds, out = sys.argv[2:7]
        asyncio.run(steady_writer(url, topic, float(rate), float(seconds), Path(out)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--poll-ms", type=int, default=5)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument(
        "--producer-batch-kib", type=int, default=256, help="SAGAWAY_PRODUCER_BATCH_BYTES / 1024"
    )
    args = parser.parse_args()
    print(json.dumps(asyncio.run(bench(args))), flush=True)


if __name__ == "__main__":
    main()
