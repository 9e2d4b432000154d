"""A small Sagaway system for the orchestrator's integration tests: the orchestrator's database,
a participant double with its own database and relay, a client that starts sagas and collects
final replies — on embedded broker + SQLite or on tansu + PostgreSQL (WAL relays)."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.models import saga_instances
from sagaway.messaging.envelope import Message
from sagaway.messaging.factory import connect_transport
from sagaway.messaging.processing import RecordProcessor
from sagaway.messaging.records import Record
from sagaway.messaging.topics import TopicNames
from sagaway.messaging.transport import Transport
from sagaway.outbox.choose import Relay, make_relay
from sagaway.settings.composed import Settings
from sagaway.storage.database import create_database_engine
from sagaway.storage.migrate import upgrade
from tests.examples.place_order.system import SYSTEM_TUNING
from tests.fixtures.broker import tuned_settings
from tests.orchestrator.participant_double import ParticipantDouble, start_command

# The same quick relay and timer tuning as the example-system tests use.
STACK_TUNING: dict[str, object] = SYSTEM_TUNING
TERMINAL = {"completed", "compensated", "failed"}


@dataclass
class Stack:
    kind: str  # "sqlite" | "postgresql"
    settings: Settings
    orchestrator_url: str
    double_url: str
    orchestrator_engine: AsyncEngine
    double_engine: AsyncEngine
    client: Transport
    double: ParticipantDouble
    double_transport: Transport
    reply_topic: str
    replies: dict[str, list[Message]] = field(default_factory=lambda: defaultdict(list))
    collector: RecordProcessor | None = None
    cleanup: list[Any] = field(default_factory=list)

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.settings.messaging.topic_prefix)

    def env(self) -> dict[str, str]:
        """SAGAWAY_* variables that make a `sagaway orchestrator` subprocess join this stack."""
        m, r, o = self.settings.messaging, self.settings.relay, self.settings.orchestrator
        env = {
            "SAGAWAY_DATA_DIR": str(self.settings.storage.data_dir),
            "SAGAWAY_TOPIC_PREFIX": m.topic_prefix,
            "SAGAWAY_SAGAS": "tests.orchestrator.sagas",
            "SAGAWAY_PARTITIONS": str(m.partitions),
            "SAGAWAY_SESSION_TIMEOUT_MS": str(m.session_timeout_ms),
            "SAGAWAY_HEARTBEAT_INTERVAL_MS": str(m.heartbeat_interval_ms),
            "SAGAWAY_FETCH_MAX_WAIT_MS": str(m.fetch_max_wait_ms),
            "SAGAWAY_PRODUCER_IDEMPOTENCE": "false",
            "SAGAWAY_EMBEDDED_POLL_INTERVAL_MS": str(m.embedded_poll_interval_ms),
            "SAGAWAY_HANDLER_RETRIES": str(m.handler_retries),
            "SAGAWAY_HANDLER_RETRY_BACKOFF_MS": str(m.handler_retry_backoff_ms),
            "SAGAWAY_TIMER_POLL_INTERVAL_MS": str(o.timer_poll_interval_ms),
            "SAGAWAY_RELAY_POLL_INTERVAL_MS": str(r.relay_poll_interval_ms),
            "SAGAWAY_RELAY_FEEDBACK_INTERVAL_S": str(r.relay_feedback_interval_s),
            "SAGAWAY_RELAY_PRUNE_INTERVAL_S": str(r.relay_prune_interval_s),
            "SAGAWAY_RELAY_STANDBY_RETRY_S": str(r.relay_standby_retry_s),
            "SAGAWAY_STARTUP_RETRY_MAX_S": str(r.startup_retry_max_s),
            "SAGAWAY_DATABASE_POOL_SIZE": "4",
            "SAGAWAY_LOG_LEVEL": "INFO",
        }
        if r.relay_slot_name:
            env["SAGAWAY_RELAY_SLOT_NAME"] = r.relay_slot_name
        if m.kafka_bootstrap:
            env["SAGAWAY_KAFKA_BOOTSTRAP"] = m.kafka_bootstrap
        if self.kind == "postgresql":
            env["SAGAWAY_DATABASE_URL"] = self.orchestrator_url
        return env

    async def start_sagas(
        self, sagas: Iterable[tuple[str, str, dict[str, Any]]], *, with_reply: bool = True
    ) -> None:
        """Write start commands: (saga id, saga type, data) each."""
        records: list[Record] = [
            start_command(
                self.topics, saga_id, saga_type, data,
                reply_to_topic=self.reply_topic if with_reply else None,
            )
            for saga_id, saga_type, data in sagas
        ]
        await self.client.produce(records)

    async def statuses(self, saga_ids: Iterable[str]) -> dict[str, str]:
        ids = list(saga_ids)
        async with self.orchestrator_engine.connect() as conn:
            rows = await conn.execute(
                sa.select(saga_instances.c.id, saga_instances.c.status).where(
                    saga_instances.c.id.in_(ids)
                )
            )
            return {r[0]: r[1] for r in rows}

    async def failures(self, saga_ids: Iterable[str]) -> dict[str, Any]:
        """saga id → its failure column, for sagas that have one (for assertion messages)."""
        async with self.orchestrator_engine.connect() as conn:
            rows = await conn.execute(
                sa.select(saga_instances.c.id, saga_instances.c.failure).where(
                    saga_instances.c.id.in_(list(saga_ids)), saga_instances.c.failure.is_not(None)
                )
            )
            return {r[0]: r[1] for r in rows if r[1] is not None}

    async def wait_terminal(self, saga_ids: Iterable[str], timeout_s: float) -> dict[str, str]:
        ids = list(saga_ids)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            found = await self.statuses(ids)
            if len(found) == len(ids) and all(s in TERMINAL for s in found.values()):
                return found
            if loop.time() > deadline:
                pending = {i: found.get(i, "absent") for i in ids if found.get(i) not in TERMINAL}
                raise AssertionError(
                    f"{len(pending)} of {len(ids)} sagas not terminal after {timeout_s}s: "
                    f"{dict(list(pending.items())[:5])}"
                )
            await asyncio.sleep(0.1)

    async def wait_reply(self, saga_id: str, timeout_s: float = 10.0) -> Message:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self.replies.get(saga_id):
            if loop.time() > deadline:
                raise AssertionError(f"no final reply for saga {saga_id} in {timeout_s}s")
            await asyncio.sleep(0.05)
        return self.replies[saga_id][0]

    async def _collect(self, batch: list[tuple[Record, Message]]) -> None:
        for _record, message in batch:
            assert message.saga_id is not None
            self.replies[message.saga_id].append(message)

    def orchestrator_relay(self, transport: Transport) -> Relay:
        """The relay an orchestrator service under test runs on the orchestrator's database."""
        return make_relay(self.settings.relay, "orchestrator", self.orchestrator_engine, transport)

    async def close(self) -> None:
        if self.collector is not None:
            await self.collector.stop()
        await self.double.stop()
        await self.double_transport.close()
        await self.client.close()
        await self.orchestrator_engine.dispose()
        await self.double_engine.dispose()
        for action in reversed(self.cleanup):
            action()


def stack_settings(data_dir: Path, kafka_bootstrap: str | None, **overrides: object) -> Settings:
    values = {**STACK_TUNING, "relay_slot_name": f"orch_{uuid.uuid4().hex[:12]}", **overrides}
    return tuned_settings(data_dir, kafka_bootstrap, **values)


async def open_stack(
    kind: str,
    data_dir: Path,
    *,
    kafka_bootstrap: str | None = None,
    postgres_server: Any = None,
    template: str | None = None,
    collect_replies: bool = True,
    **overrides: object,
) -> Stack:
    """Databases migrated, the participant double running, the reply collector joined."""
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    cleanup: list[Any] = []
    if kind == "postgresql":
        assert postgres_server is not None and template is not None and kafka_bootstrap
        names = [f"orch_{uuid.uuid4().hex[:12]}", f"double_{uuid.uuid4().hex[:12]}"]
        for name in names:
            postgres_server.create_database(name, template=template)
            cleanup.append(lambda name=name: postgres_server.drop_database(name))
        orchestrator_url = postgres_server.async_url(names[0])
        double_url = postgres_server.async_url(names[1])
        settings = stack_settings(data_dir, kafka_bootstrap, **overrides)
    else:
        orchestrator_url = f"sqlite+aiosqlite:///{(data_dir / 'orchestrator.db').resolve()}"
        double_url = f"sqlite+aiosqlite:///{(data_dir / 'double.db').resolve()}"
        await asyncio.to_thread(upgrade, orchestrator_url)
        await asyncio.to_thread(upgrade, double_url)
        settings = stack_settings(data_dir, None, **overrides)
    if kind == "postgresql":
        settings = settings.replace(database_url=orchestrator_url)
    double_relay = settings.relay.model_copy(
        update={"relay_slot_name": f"double_{uuid.uuid4().hex[:12]}"}
    )
    orchestrator_engine = create_database_engine(orchestrator_url, pool_size=4)
    double_engine = create_database_engine(double_url, pool_size=4)
    client = await connect_transport(settings.messaging)
    double_transport = await connect_transport(settings.messaging)
    double = ParticipantDouble(double_engine, double_transport, double_relay)
    topics = TopicNames(settings.messaging.topic_prefix)
    reply_topic = topics.named("client.replies")
    partitions = settings.messaging.partitions
    await client.create_topics(
        {
            reply_topic: partitions,
            topics.requests("orchestrator"): partitions,
            topics.replies("orchestrator"): partitions,
        }
    )
    stack = Stack(
        kind=kind,
        settings=settings,
        orchestrator_url=orchestrator_url,
        double_url=double_url,
        orchestrator_engine=orchestrator_engine,
        double_engine=double_engine,
        client=client,
        double=double,
        double_transport=double_transport,
        reply_topic=reply_topic,
        cleanup=cleanup,
    )
    await double.start()
    if collect_replies:
        stack.collector = RecordProcessor(
            client, settings.messaging, topics.named("client"), [reply_topic], stack._collect
        )
        await stack.collector.start()
    return stack
