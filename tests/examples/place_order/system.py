"""The example system for participant tests: inventory, payments and shipping (and, for saga
tests, the orchestrator), each on its own database with its own relay — on the embedded broker +
SQLite files, or on tansu + PostgreSQL (WAL relays) — and a client that sends commands or starts
sagas and collects what comes back on its own reply topic.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from examples.place_order import EXAMPLE_NAMES, example
from examples.place_order.seed import seed_inventory, seed_payments
from orchestrator.models import saga_instances
from orchestrator.registry import SagaRegistry
from participants.sdk import Participant
from participants.service import ParticipantService
from sagaway.messaging.envelope import Message
from sagaway.messaging.factory import connect_transport
from sagaway.messaging.processing import RecordProcessor
from sagaway.messaging.records import Record
from sagaway.messaging.topics import TopicNames
from sagaway.messaging.transport import Transport
from sagaway.outbox.choose import make_relay
from sagaway.settings.composed import Settings
from sagaway.storage.database import create_database_engine
from tests.fixtures.broker import tuned_settings

SYSTEM_TUNING: dict[str, object] = {
    "relay_feedback_interval_s": 0.2,
    "relay_prune_interval_s": 0.05,
    "relay_heartbeat_interval_s": 1.0,
    "relay_standby_retry_s": 0.2,
    "relay_poll_interval_ms": 10,
    "startup_retry_max_s": 1.0,
    "timer_poll_interval_ms": 50,
    "database_pool_size": 4,
}
SERVICES = ("orchestrator", *EXAMPLE_NAMES)
TERMINAL = {"completed", "compensated", "failed"}

TransportWrapper = Callable[[Transport], Transport]


@dataclass
class System:
    kind: str  # "embedded" (SQLite + embedded broker) | "kafka" (PostgreSQL + tansu)
    settings: Settings
    urls: dict[str, str]
    engines: dict[str, AsyncEngine]
    client: Transport
    reply_topic: str
    services: dict[str, ParticipantService] = field(default_factory=dict)
    orchestrator: Any = None
    replies: dict[str, list[Message]] = field(default_factory=lambda: defaultdict(list))
    collector: RecordProcessor | None = None
    transports: list[Transport] = field(default_factory=list)
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.settings.messaging.topic_prefix)

    def service_settings(self, service: str) -> Settings:
        """The settings a process of `service` runs with: its own database and WAL slot."""
        update: dict[str, object] = {"relay_slot_name": f"{service[:4]}_{uuid.uuid4().hex[:12]}"}
        if self.kind == "kafka":
            update["database_url"] = self.urls[service]
        return self.settings.replace(**update)

    # -- participants --------------------------------------------------------------------------

    async def start_participant(
        self, participant: Participant, wrap: TransportWrapper | None = None, **update: Any
    ) -> ParticipantService:
        """Run `participant` on its database with its relay; `update`: settings (flat names)."""
        settings = self.service_settings(participant.name).replace(**update)
        connected = await connect_transport(settings.messaging)
        self.transports.append(connected)
        transport = wrap(connected) if wrap else connected
        engine = self.engines[participant.name]
        service = ParticipantService(
            participant,
            settings.participant,
            engine=engine,
            transport=transport,
            relay=make_relay(settings.relay, participant.name, engine, transport),
        )
        await service.start()
        self.services[participant.name] = service
        return service

    async def start_examples(
        self, overrides: dict[str, Participant] | None = None
    ) -> None:
        overrides = overrides or {}
        started = await asyncio.gather(
            *(self.start_participant(overrides.get(n) or example(n)) for n in EXAMPLE_NAMES)
        )
        await asyncio.gather(*(service.wait_ready() for service in started))

    async def stop_participant(self, name: str) -> None:
        service = self.services.pop(name)
        await service.stop()

    # -- commands and replies ----------------------------------------------------------------

    def command(
        self,
        name: str,
        payload: dict[str, Any],
        saga_id: str,
        *,
        attempt: int = 1,
        message_id: str | None = None,
        step: str = "step",
    ) -> Message:
        return Message(
            message_type="command",
            command=name,
            payload=payload,
            message_id=message_id or str(uuid.uuid4()),
            saga_id=saga_id,
            saga_type="place-order",
            saga_step=step,
            attempt=attempt,
            correlation_id=saga_id,
            reply_to=self.reply_topic,
            principal="tests",
        )

    async def send(self, *messages: Message) -> None:
        records: list[Record] = []
        for message in messages:
            assert message.command is not None
            service = message.command.split(".", 1)[0]
            records.append(message.to_record(self.topics.requests(service)))
        await self.client.produce(records)

    async def reply_to(
        self, command: Message, count: int = 1, timeout_s: float = 20.0
    ) -> list[Message]:
        """The first `count` replies whose causation is `command`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(self.replies.get(command.message_id, [])) < count:
            if loop.time() > deadline:
                raise AssertionError(
                    f"{len(self.replies.get(command.message_id, []))} of {count} replies to "
                    f"{command.command} in {timeout_s}s"
                )
            await asyncio.sleep(0.02)
        return self.replies[command.message_id][:count]

    async def call(self, command: Message, timeout_s: float = 20.0) -> Message:
        await self.send(command)
        return (await self.reply_to(command, 1, timeout_s))[0]

    async def _collect(self, batch: list[tuple[Record, Message]]) -> None:
        # Participant replies are looked up by the command they answer, final replies by saga.
        for _record, message in batch:
            if message.causation_id:
                self.replies[message.causation_id].append(message)
            if message.saga_id:
                self.replies[message.saga_id].append(message)

    # -- sagas ---------------------------------------------------------------------------------

    async def start_orchestrator(
        self, registry: SagaRegistry, wrap: TransportWrapper | None = None
    ) -> Any:
        from orchestrator.service import OrchestratorService

        settings = self.service_settings("orchestrator")
        connected = await connect_transport(settings.messaging)
        self.transports.append(connected)
        transport = wrap(connected) if wrap else connected
        engine = self.engines["orchestrator"]
        self.orchestrator = OrchestratorService(
            settings.orchestrator,
            registry,
            engine,
            transport,
            relay=make_relay(settings.relay, "orchestrator", engine, transport),
        )
        await self.orchestrator.start()
        await self.orchestrator.wait_assigned()
        return self.orchestrator

    async def start_sagas(self, sagas: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Start commands to orchestrator.requests, as the gateway writes them: (saga id, input)."""
        records = [
            Message(
                message_type="command",
                command="orchestrator.start",
                payload=data,
                saga_id=saga_id,
                saga_type="place-order",
                correlation_id=saga_id,
                reply_to=self.reply_topic,
                reply_mode="async",
                principal="tests",
            ).to_record(self.topics.requests("orchestrator"))
            for saga_id, data in sagas
        ]
        await self.client.produce(records)

    async def statuses(self, saga_ids: Sequence[str]) -> dict[str, str]:
        async with self.engines["orchestrator"].connect() as conn:
            rows = await conn.execute(
                sa.select(saga_instances.c.id, saga_instances.c.status).where(
                    saga_instances.c.id.in_(list(saga_ids))
                )
            )
            return {row[0]: row[1] for row in rows}

    async def wait_terminal(
        self, saga_ids: Sequence[str], timeout_s: float = 30.0
    ) -> dict[str, str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            found = await self.statuses(saga_ids)
            if len(found) == len(saga_ids) and all(s in TERMINAL for s in found.values()):
                return found
            if loop.time() > deadline:
                pending = {
                    i: found.get(i, "absent") for i in saga_ids if found.get(i) not in TERMINAL
                }
                raise AssertionError(
                    f"{len(pending)} of {len(saga_ids)} sagas not terminal after {timeout_s}s: "
                    f"{dict(list(pending.items())[:5])}"
                )
            await asyncio.sleep(0.05)

    async def saga(self, saga_id: str) -> dict[str, Any]:
        async with self.engines["orchestrator"].connect() as conn:
            row = (
                await conn.execute(sa.select(saga_instances).where(saga_instances.c.id == saga_id))
            ).one()
            return dict(row._mapping)

    async def final_reply(self, saga_id: str, timeout_s: float = 20.0) -> Message:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self.replies.get(saga_id):
            if loop.time() > deadline:
                raise AssertionError(f"no final reply for saga {saga_id} in {timeout_s}s")
            await asyncio.sleep(0.02)
        return self.replies[saga_id][0]

    # -- database reads ------------------------------------------------------------------------

    async def rows(self, service: str, query: sa.Select[Any]) -> list[dict[str, Any]]:
        async with self.engines[service].connect() as conn:
            return [dict(row._mapping) for row in (await conn.execute(query)).all()]

    async def close(self) -> None:
        if self.collector is not None:
            await self.collector.stop(grace_s=1)
        if self.orchestrator is not None:
            await self.orchestrator.stop()
        for service in list(self.services.values()):
            await service.stop(grace_s=1)
        for transport in self.transports:
            await transport.close()
        await self.client.close()
        for engine in self.engines.values():
            await engine.dispose()
        for action in reversed(self.cleanup):
            action()


def system_settings(data_dir: Path, kafka_bootstrap: str | None, **overrides: object) -> Settings:
    return tuned_settings(data_dir, kafka_bootstrap, **{**SYSTEM_TUNING, **overrides})


async def open_system(
    kind: str,
    data_dir: Path,
    *,
    sqlite_template: Path | None = None,
    kafka_bootstrap: str | None = None,
    postgres_server: Any = None,
    pg_template: str | None = None,
    seed: bool = True,
    **overrides: object,
) -> System:
    """Migrated (and seeded) databases for the four services and a client with its collector;
    no service runs yet."""
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    cleanup: list[Callable[[], None]] = []
    urls: dict[str, str] = {}
    if kind == "kafka":
        assert postgres_server is not None and pg_template and kafka_bootstrap
        for service in SERVICES:
            name = f"{service[:4]}_{uuid.uuid4().hex[:12]}"
            postgres_server.create_database(name, template=pg_template)
            cleanup.append(functools.partial(postgres_server.drop_database, name))
            urls[service] = postgres_server.async_url(name)
        settings = system_settings(data_dir, kafka_bootstrap, **overrides)
    else:
        assert sqlite_template is not None
        settings = system_settings(data_dir, None, **overrides)
        for service in SERVICES:
            path = data_dir / f"{service}.db"
            shutil.copyfile(sqlite_template, path)
            urls[service] = settings.storage.database_url_for(service)
    engines = {s: create_database_engine(url, pool_size=4) for s, url in urls.items()}
    if seed:
        await seed_inventory(engines["inventory"])
        await seed_payments(engines["payments"])
    client = await connect_transport(settings.messaging)
    topics = TopicNames(settings.messaging.topic_prefix)
    reply_topic = topics.named("client.replies")
    await client.create_topics({reply_topic: settings.messaging.partitions})
    system = System(kind, settings, urls, engines, client, reply_topic, cleanup=cleanup)
    system.collector = RecordProcessor(
        client, settings.messaging, topics.named("client"), [reply_topic], system._collect
    )
    await system.collector.start()
    return system


async def open_system_for(kind: str, data_dir: Path, request: Any) -> System:
    """`open_system` on the stack a parametrized fixture names ("kafka" → tansu + PostgreSQL,
    anything else → the embedded broker + SQLite), taking the servers from pytest fixtures."""
    if kind == "kafka":
        return await open_system(
            "kafka",
            data_dir,
            kafka_bootstrap=request.getfixturevalue("kafka_bootstrap"),
            postgres_server=request.getfixturevalue("postgres_server"),
            pg_template=request.getfixturevalue("_migrated_template"),
        )
    return await open_system(
        "embedded", data_dir, sqlite_template=request.getfixturevalue("sqlite_template")
    )
