"""A scripted stand-in for the orchestrator: a real consumer of `orchestrator.requests` that
answers each start command with a final reply (docs/messages.md) on the command's reply-to.

Scripted by the saga input: `country == "AQ"` → compensated at `schedule-shipment`;
`customer_id` starting with `slow` → answers after `slow_s`; anything else → completed.
Like the real orchestrator it starts at most one saga per correlation id (`starts` counts every
start command received, `sagas` the sagas started).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from sagaway.messaging.envelope import Message
from sagaway.messaging.processing import RecordProcessor
from sagaway.messaging.records import Record
from sagaway.messaging.topics import TopicNames
from sagaway.messaging.transport import Transport


def final_reply(start: Message, status: str, result: Any, failure: Any) -> Message:
    assert start.saga_id is not None
    return Message(
        message_type="reply",
        payload={
            "saga_id": start.saga_id,
            "saga_type": start.saga_type,
            "status": status,
            "result": result,
            "failure": failure,
        },
        outcome="success" if status == "completed" else "failure",
        causation_id=start.message_id,
        correlation_id=start.correlation_id,
        saga_id=start.saga_id,
        saga_type=start.saga_type,
        reply_mode=start.reply_mode,
        principal=start.principal,
        traceparent=start.traceparent,
    )


class OrchestratorDouble:
    def __init__(self, transport: Transport, *, slow_s: float = 2.0) -> None:
        self.transport = transport
        self.slow_s = slow_s
        self.starts: Counter[str] = Counter()
        self.sagas: Counter[str] = Counter()
        self.messages: list[Message] = []
        prefix = transport.settings.topic_prefix
        self.topic = TopicNames(prefix).requests("orchestrator")
        self.processor = RecordProcessor(
            transport,
            transport.settings,
            f"{prefix}orchestrator-double",
            [self.topic],
            self.handle,
            poll_timeout_ms=50,
        )
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.transport.create_topics({self.topic: self.transport.settings.partitions})
        await self.processor.start()
        await self.processor.wait_assigned()

    async def stop(self) -> None:
        await self.processor.stop(grace_s=1)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def handle(self, batch: list[tuple[Record, Message]]) -> None:
        for _record, message in batch:
            assert message.command == "orchestrator.start"
            assert message.correlation_id is not None
            self.starts[message.correlation_id] += 1
            if self.sagas[message.correlation_id]:
                continue  # the orchestrator starts one saga per correlation id
            self.sagas[message.correlation_id] += 1
            self.messages.append(message)
            task = asyncio.create_task(self.answer(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def answer(self, start: Message) -> None:
        data = start.payload
        if str(data.get("customer_id", "")).startswith("slow"):
            await asyncio.sleep(self.slow_s)
        if data.get("country") == "AQ":
            reply = final_reply(
                start,
                "compensated",
                None,
                {"step": "schedule-shipment", "reason": "we do not ship to AQ"},
            )
        else:
            reply = final_reply(
                start,
                "completed",
                {"order": start.saga_id, "total_cents": data.get("total_cents")},
                None,
            )
        assert start.reply_to is not None
        await self.transport.produce([reply.to_record(start.reply_to)])
