"""A client of the system under test, standing in for the gateway and the saga's callers: it
produces start commands (and commands to single participants) and collects what comes back on
its own reply topic."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sagaway.messaging.envelope import Message
from sagaway.messaging.factory import connect_transport
from sagaway.messaging.processing import RecordProcessor
from sagaway.messaging.records import Record
from sagaway.messaging.topics import TopicNames
from sagaway.messaging.transport import Transport
from sagaway.settings.composed import Settings
from tests.harness.waiting import eventually


def start_command(
    topics: TopicNames,
    saga_id: str,
    saga_type: str,
    data: dict[str, Any],
    *,
    reply_to_topic: str | None = None,
) -> Record:
    """The record a gateway writes to start a saga (docs/messages.md)."""
    message = Message(
        message_type="command",
        command="orchestrator.start",
        payload=data,
        saga_id=saga_id,
        saga_type=saga_type,
        correlation_id=saga_id,
        reply_to=reply_to_topic,
        reply_mode="async",
        principal="tests",
    )
    return message.to_record(topics.requests("orchestrator"))


class Client:
    """`replies` holds what came back: participant replies under the command they answer
    (causation id), final replies under their saga id."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.topics = TopicNames(transport.settings.topic_prefix)
        self.reply_topic = self.topics.named("client.replies")
        self.replies: dict[str, list[Message]] = defaultdict(list)
        self.collector: RecordProcessor | None = None

    @classmethod
    async def open(cls, settings: Settings, *, collect_replies: bool = True) -> Client:
        """Connected, with its reply topic and the orchestrator's topics created (so that start
        commands can be written before any orchestrator runs)."""
        client = cls(await connect_transport(settings.messaging))
        partitions = settings.messaging.partitions
        await client.transport.create_topics(
            {
                client.reply_topic: partitions,
                client.topics.requests("orchestrator"): partitions,
                client.topics.replies("orchestrator"): partitions,
            }
        )
        if collect_replies:
            client.collector = RecordProcessor(
                client.transport,
                settings.messaging,
                client.topics.named("client"),
                [client.reply_topic],
                client._collect,
            )
            await client.collector.start()
        return client

    async def close(self) -> None:
        if self.collector is not None:
            await self.collector.stop(grace_s=1)
        await self.transport.close()

    async def _collect(self, batch: list[tuple[Record, Message]]) -> None:
        for _record, message in batch:
            if message.causation_id:
                self.replies[message.causation_id].append(message)
            if message.saga_id:
                self.replies[message.saga_id].append(message)

    # -- sagas ---------------------------------------------------------------------------------

    async def start_sagas(
        self, sagas: Iterable[tuple[str, str, dict[str, Any]]], *, with_reply: bool = True
    ) -> None:
        """Start commands to orchestrator.requests, as the gateway writes them: (saga id, saga
        type, input) each; `with_reply`: the final reply comes to this client."""
        reply_to = self.reply_topic if with_reply else None
        await self.transport.produce(
            [
                start_command(self.topics, saga_id, saga_type, data, reply_to_topic=reply_to)
                for saga_id, saga_type, data in sagas
            ]
        )

    async def final_reply(self, saga_id: str, timeout_s: float = 20.0) -> Message:
        found = await eventually(
            lambda: self.replies.get(saga_id),
            timeout_s=timeout_s,
            what=f"the final reply of saga {saga_id}",
            interval_s=0.02,
        )
        return found[0]

    # -- commands to participants ------------------------------------------------------------

    def command(
        self,
        name: str,
        payload: dict[str, Any],
        saga_id: str,
        *,
        attempt: int = 1,
        message_id: str | None = None,
        step: str = "step",
        saga_type: str = "place-order",
    ) -> Message:
        """A command as an orchestrator sends it, answered to this client."""
        return Message(
            message_type="command",
            command=name,
            payload=payload,
            message_id=message_id or str(uuid.uuid4()),
            saga_id=saga_id,
            saga_type=saga_type,
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
        await self.transport.produce(records)

    async def reply_to(
        self, command: Message, count: int = 1, timeout_s: float = 20.0
    ) -> list[Message]:
        """The first `count` replies whose causation is `command`."""

        def answered() -> list[Message] | None:
            replies = self.replies.get(command.message_id, [])
            return replies[:count] if len(replies) >= count else None

        return await eventually(
            answered,
            timeout_s=timeout_s,
            what=lambda: (
                f"{count} replies to {command.command} "
                f"(got {len(self.replies.get(command.message_id, []))})"
            ),
            interval_s=0.02,
        )

    async def call(self, command: Message, timeout_s: float = 20.0) -> Message:
        await self.send(command)
        return (await self.reply_to(command, 1, timeout_s))[0]
