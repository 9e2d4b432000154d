"""The verbs as a user types them: `sagaway seed`, `sagaway participant NAME`, `sagaway audit`
(embedded mode, files in SAGAWAY_DATA_DIR); and seeding on both databases is idempotent."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from examples.place_order import example
from examples.place_order.models import accounts, stock
from examples.place_order.seed import seed_inventory, seed_payments
from participants.service import ParticipantService
from sagaway.cli.main import main
from sagaway.messaging.embedded import EmbeddedTransport
from sagaway.messaging.envelope import Message
from sagaway.messaging.factory import connect_transport
from sagaway.outbox.choose import make_relay
from sagaway.settings.composed import Settings
from sagaway.storage.database import connect_database, create_database_engine
from sagaway.storage.migrate import upgrade
from tests.fixtures.broker import tuned_settings
from tests.fixtures.postgres import PostgresForTests
from tests.sagaway.outbox.broker_reader import BrokerReader

pytestmark = pytest.mark.timeout(60)

SAGAWAY = Path(sys.executable).with_name("sagaway")


def cli_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGAWAY_")}
    env.update(
        {
            "SAGAWAY_DATA_DIR": str(settings.storage.data_dir),
            "SAGAWAY_TOPIC_PREFIX": settings.messaging.topic_prefix,
            "SAGAWAY_PARTITIONS": str(settings.messaging.partitions),
            "SAGAWAY_EMBEDDED_POLL_INTERVAL_MS": "20",
            "SAGAWAY_RELAY_POLL_INTERVAL_MS": "10",
            "SAGAWAY_LOG_LEVEL": "INFO",
        }
    )
    return env


def sagaway(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SAGAWAY), *args], env=cli_env(settings), capture_output=True, text=True,
        timeout=50, check=False,
    )


async def test_seed_is_idempotent_and_never_refills(migrated_db_url: str) -> None:
    engine = create_database_engine(migrated_db_url)
    try:
        first = await seed_payments(engine)
        await seed_inventory(engine)
        assert (first.added, first.existing) == (1000, 0)
        async with engine.begin() as conn:
            await conn.execute(
                sa.update(accounts).where(accounts.c.customer_id == "c-1").values(credit_cents=5)
            )
        second = await seed_payments(engine)
        again = await seed_inventory(engine)
        assert (second.added, second.existing) == (0, 1000)
        assert (again.added, again.existing) == (0, 100)
        async with engine.connect() as conn:
            credit = await conn.scalar(
                sa.select(accounts.c.credit_cents).where(accounts.c.customer_id == "c-1")
            )
            last = (
                await conn.execute(sa.select(stock).where(stock.c.sku == "sku-100"))
            ).one()
            count = await conn.scalar(sa.select(sa.func.count()).select_from(accounts))
        assert credit == 5
        assert count == 1000
        assert (last.initial, last.available, last.reserved) == (1_000_000, 1_000_000, 0)
    finally:
        await engine.dispose()


async def test_seed_participant_and_audit_from_the_command_line(tmp_path: Path) -> None:
    settings = tuned_settings(tmp_path / "data")

    seeded = await asyncio.to_thread(sagaway, settings, "seed")
    assert seeded.returncode == 0, seeded.stderr
    assert "customers: added 1000, 0 already there" in seeded.stdout
    assert "skus: added 100, 0 already there" in seeded.stdout

    process = subprocess.Popen(  # noqa: ASYNC220 - started once, waited for in a thread
        [str(SAGAWAY), "participant", "inventory"],
        env=cli_env(settings), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    transport = EmbeddedTransport(settings.messaging)
    await transport.start()
    try:
        reply_topic = settings.messaging.topic_prefix + "client.replies"
        await transport.create_topics({reply_topic: 1})
        order = str(uuid.uuid4())
        command = Message(
            message_type="command", command="inventory.reserve", saga_id=order, attempt=1,
            payload={"items": [{"sku": "sku-1", "quantity": 2}]}, reply_to=reply_topic,
        )
        async with BrokerReader(transport, [reply_topic]) as reader:
            topic = settings.messaging.topic_prefix + "inventory.requests"
            await transport.create_topics({topic: 4})
            await transport.produce([command.to_record(topic)])
            [record] = await reader.read_until(1, timeout_s=40)
        reply = Message.from_record(record)
        assert (reply.outcome, reply.causation_id) == ("success", command.message_id)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(process.communicate, timeout=20)
        await transport.close()
    assert process.returncode == 0, output
    assert "participant inventory handles inventory.release, inventory.reserve" in output

    missing = await asyncio.to_thread(sagaway, settings, "audit")
    assert missing.returncode == 2
    assert "no database at" in missing.stderr and "shipping.db" in missing.stderr

    for service in ("orchestrator", "shipping"):
        await asyncio.to_thread(upgrade, settings.storage.database_url_for(service))
    audited = await asyncio.to_thread(sagaway, settings, "audit", "--json")
    report = orjson.loads(audited.stdout)
    # The reservation was made outside any saga: the audit calls it an orphan and fails.
    assert audited.returncode == 1
    assert report["violations"] == [
        {"rule": "orphan", "subject": order,
         "message": "a reservation for an order the orchestrator does not know"}
    ]
    assert (report["customers"], report["skus"], report["orders_completed"]) == (1000, 100, 0)


def invoke(settings: Settings, *args: str) -> Result:
    """The CLI in process (its import costs seconds per subprocess)."""
    env = {k: v for k, v in cli_env(settings).items() if k.startswith("SAGAWAY_")}
    if settings.storage.database_url:
        env["SAGAWAY_DATABASE_URL"] = settings.storage.database_url
    return CliRunner().invoke(main, list(args), env=env)


def test_seed_says_it_writes_the_embedded_files_when_no_database_is_named(
    tmp_path: Path,
) -> None:
    settings = tuned_settings(tmp_path / "data")
    data_dir = settings.storage.data_dir.resolve()

    result = invoke(settings, "seed", "--customers", "3", "--skus", "2")

    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "no SAGAWAY_DATABASE_URL and no --<service>-url: using the embedded SQLite files of "
        f"`sagaway dev` in {data_dir}",
        f"payments: customers: added 3, 0 already there (SQLite file {data_dir}/payments.db)",
        f"inventory: skus: added 2, 0 already there (SQLite file {data_dir}/inventory.db)",
    ]


def test_seed_writes_each_service_database_of_the_url_pattern(
    tmp_path: Path, postgres_server: PostgresForTests
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    names = {service: f"{prefix}_{service}" for service in ("inventory", "payments")}
    for name in names.values():
        postgres_server.create_database(name)
    settings = tuned_settings(
        tmp_path / "data", database_url=postgres_server.async_url(f"{prefix}_{{service}}")
    )
    try:
        result = invoke(settings, "seed", "--customers", "3", "--skus", "2")

        assert result.exit_code == 0, result.output
        [payments, inventory] = result.output.splitlines()
        assert payments.startswith("payments: customers: added 3, 0 already there (PostgreSQL")
        assert payments.endswith(f"/{names['payments']})")
        assert inventory.startswith("inventory: skus: added 2, 0 already there (PostgreSQL")
        assert inventory.endswith(f"/{names['inventory']})")
        assert postgres_server.execute("SELECT count(*) FROM payments_accounts",
                                       names["payments"]) == [(3,)]
        assert postgres_server.execute("SELECT count(*) FROM inventory_stock",
                                       names["inventory"]) == [(2,)]
    finally:
        for name in names.values():
            postgres_server.drop_database(name)


def test_an_unknown_participant_is_refused_with_the_known_names(tmp_path: Path) -> None:
    result = invoke(tuned_settings(tmp_path / "data"), "participant", "warehouse")
    assert result.exit_code == 2
    assert "no example participant 'warehouse'" in result.output
    assert "inventory, payments, shipping" in result.output


def test_a_participant_on_an_unmigrated_database_says_how_to_fix_it(tmp_path: Path) -> None:
    result = invoke(tuned_settings(tmp_path / "data"), "participant", "shipping")
    assert result.exit_code == 1
    assert "run `sagaway migrate --service shipping` first" in result.output


def test_audit_text_lists_the_totals_and_the_violations(tmp_path: Path) -> None:
    settings = tuned_settings(tmp_path / "data")
    for service in ("orchestrator", "inventory", "payments", "shipping"):
        upgrade(settings.storage.database_url_for(service))
    clean = invoke(settings, "audit")
    assert clean.exit_code == 0, clean.output
    assert "orders completed: 0" in clean.output and "no violations" in clean.output
    engine = sa.create_engine(f"sqlite:///{settings.storage.data_dir / 'payments.db'}")
    with engine.begin() as conn:
        conn.execute(
            accounts.insert().values(
                customer_id="c-1", initial_credit_cents=10, credit_cents=9,
                updated_at=sa.func.now(),
            )
        )
    engine.dispose()
    broken = invoke(settings, "audit")
    assert broken.exit_code == 1
    assert "1 violation(s):" in broken.output
    assert "[credit-conserved] c-1: credit 9 + net charges 0 != initial 10" in broken.output


async def test_a_service_migrates_its_database_and_answers(tmp_path: Path) -> None:
    """The in-process API `sagaway dev` uses: the caller connects the database and the broker
    and builds the relay; the service migrates, relays and answers."""
    settings = tuned_settings(tmp_path / "data", relay_poll_interval_ms=10)
    engine = await connect_database(settings.storage, "shipping")
    service_transport = await connect_transport(settings.messaging)
    service = ParticipantService(
        example("shipping"),
        settings.participant,
        engine=engine,
        transport=service_transport,
        relay=make_relay(settings.relay, "shipping", engine, service_transport),
        migrate=True,
    )
    await service.start()
    transport = EmbeddedTransport(settings.messaging)
    await transport.start()
    try:
        await service.wait_ready()
        reply_topic = settings.messaging.topic_prefix + "client.replies"
        await transport.create_topics({reply_topic: 1})
        command = Message(
            message_type="command", command="shipping.schedule", saga_id=str(uuid.uuid4()),
            payload={"country": "AQ", "items": [{"sku": "sku-1", "quantity": 1}]},
            reply_to=reply_topic,
        )
        async with BrokerReader(transport, [reply_topic]) as reader:
            topic = settings.messaging.topic_prefix + "shipping.requests"
            await transport.produce([command.to_record(topic)])
            [record] = await reader.read_until(1, timeout_s=30)
        assert Message.from_record(record).payload["reason"] == "we do not ship to AQ"
    finally:
        await transport.close()
        await service.stop()
        await service_transport.close()
        await engine.dispose()
    assert (settings.storage.data_dir / "shipping.db").exists()
