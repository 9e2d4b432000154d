"""Capacity inputs: measures the per-unit rates the model of docs/scaling.md uses
(sagaway/capacity.py) and prints one JSON line, with progress on stderr:

- `database_transactions_per_s`: saga-step transactions (UPDATE one row + INSERT one outbox
  row, as the orchestrator's shell writes them) committed by one PostgreSQL database
  (fsync and synchronous_commit on) from `--writers` concurrent connections;
- `partition_records_per_s`: records one consumer reads from a one-partition topic on the
  Kafka-protocol broker (tansu), produced beforehand.

Per-instance rates of the orchestrator, participants and gateway come from bench/e2e.py's CPU
per saga (docs/benchmarks.md); the relay's from bench/relay.py.
Usage: `.venv/bin/python bench/capacity.py [--seconds 10] [--writers 16] [--records 50000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
sys.path.insert(0, ROOT)

import sqlalchemy as sa  # noqa: E402

from sagaway.messaging.envelope import Message  # noqa: E402
from sagaway.messaging.kafka import KafkaTransport  # noqa: E402
from sagaway.messaging.records import Record  # noqa: E402
from sagaway.outbox.writer import add_to_outbox  # noqa: E402
from sagaway.settings.composed import load_settings  # noqa: E402
from sagaway.storage.database import create_database_engine  # noqa: E402
from sagaway.storage.migrate import upgrade  # noqa: E402
from tests.servers.postgres import PostgresServer  # noqa: E402
from tests.servers.tansu import TansuServer  # noqa: E402

SAGAS = 10_000


def progress(text: str) -> None:
    print(f"[capacity] {text}", file=sys.stderr, flush=True)


async def database_rate(url: str, writers: int, seconds: float) -> float:
    """Saga-step transactions per second on one database."""
    engine = create_database_engine(url, pool_size=writers)
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE bench_sagas (id int PRIMARY KEY, step int)"))
        await conn.execute(
            sa.text("INSERT INTO bench_sagas SELECT g, 0 FROM generate_series(0, :n) g"),
            {"n": SAGAS},
        )
    done = 0
    deadline = time.monotonic() + seconds

    async def writer(w: int) -> None:
        nonlocal done
        i = w
        while time.monotonic() < deadline:
            saga = i % SAGAS
            async with engine.begin() as conn:
                await conn.execute(
                    sa.text("UPDATE bench_sagas SET step = step + 1 WHERE id = :id"), {"id": saga}
                )
                message = Message(message_type="event", saga_id=f"s{saga}", payload={"i": i})
                await add_to_outbox(conn, [("bench.requests", message)])
            done += 1
            i += writers

    async def report() -> None:
        while time.monotonic() < deadline:
            await asyncio.sleep(2)
            progress(f"database: {done} transactions so far")

    started = time.monotonic()
    await asyncio.gather(report(), *(writer(w) for w in range(writers)))
    elapsed = time.monotonic() - started
    await engine.dispose()
    return done / elapsed


async def partition_rate(bootstrap: str, records: int) -> float:
    """Records per second one consumer reads from one partition."""
    settings = load_settings(kafka_bootstrap=bootstrap, producer_idempotence=False)
    kafka = KafkaTransport(settings.messaging)
    await kafka.start()
    topic = "capacity.one"
    await kafka.create_topics({topic: 1})
    value = json.dumps({"sku": "ABC-123", "qty": 2, "note": "x" * 64}).encode()
    for start in range(0, records, 5_000):
        batch = [Record(topic=topic, value=value, key=b"k") for _ in range(start, start + 5_000)]
        await kafka.produce(batch)
    progress(f"partition: {records} records produced")
    subscription = kafka.subscribe("capacity", [topic])
    await subscription.start()
    got, started = 0, 0.0
    while got < records:
        batch = await subscription.fetch(5_000, 100)
        if batch and not started:
            started = time.monotonic()
        got += len(batch)
    elapsed = time.monotonic() - started
    await subscription.close()
    await kafka.close()
    return records / elapsed


async def bench(args: argparse.Namespace) -> dict:
    results: dict = {"bench": "capacity", "writers": args.writers}
    with PostgresServer(fast=False) as pg:
        pg.create_database("capacity")
        url = pg.async_url("capacity")
        upgrade(url)
        progress(f"database: {args.writers} writers for {args.seconds}s")
        results["database_transactions_per_s"] = round(
            await database_rate(url, args.writers, args.seconds), 1
        )
    with TansuServer() as broker:
        progress(f"partition: {args.records} records through one partition")
        results["partition_records_per_s"] = round(
            await partition_rate(broker.bootstrap, args.records), 1
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--records", type=int, default=50_000)
    print(json.dumps(asyncio.run(bench(parser.parse_args()))), flush=True)


if __name__ == "__main__":
    main()
