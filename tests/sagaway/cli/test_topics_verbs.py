"""`sagaway topics` and `sagaway topics plan` against a real broker (embedded and tansu): topics
are created with their service's configured partition count, listed, and compared with the
configuration."""

from __future__ import annotations

import asyncio

import pytest
from click.testing import CliRunner, Result

from sagaway.cli.main import main
from sagaway.messaging.topics import TopicNames
from sagaway.settings.composed import Settings
from tests.fixtures.broker import MakeTransport
from tests.harness.processes import settings_environment

pytestmark = pytest.mark.timeout(90)


def invoke(settings: Settings, *args: str, **extra: str) -> Result:
    env = {k: v for k, v in settings_environment(settings).items() if k.startswith("SAGAWAY_")}
    env.update({f"SAGAWAY_{name.upper()}": value for name, value in extra.items()})
    return CliRunner().invoke(main, list(args), env=env)


def row(output: str, topic: str) -> list[str]:
    return next(line.split() for line in output.splitlines() if line.startswith(topic + " "))


async def test_topics_are_created_listed_and_planned_per_service(
    broker_settings: Settings, make_test_transport: MakeTransport, transport_kind: str
) -> None:
    settings = broker_settings.model_copy(
        update={
            "messaging": broker_settings.messaging.model_copy(
                update={"service_partitions": {"payments": 6}}
            )
        }
    )
    names = TopicNames(settings.messaging.topic_prefix)
    transport = await make_test_transport(settings)
    await transport.create_topics(
        {names.requests("orchestrator"): 4, names.requests("payments"): 4}
    )

    subscription = transport.subscribe(f"{names.prefix}billing", [names.requests("payments")])
    await subscription.start()
    try:
        await subscription.fetch(10, 50)
        listed = await asyncio.to_thread(invoke, settings, "topics")
    finally:
        await subscription.close()
    assert listed.exit_code == 0, listed.output
    assert row(listed.output, names.requests("payments"))[1:3] == ["6", "1"]
    assert row(listed.output, names.requests("orchestrator"))[1:3] == ["4", "1"]
    groups = row(listed.output, names.requests("payments"))[3:]
    if transport_kind == "kafka":  # tansu answers ListGroups with no groups: said so
        assert " ".join(groups) == "unknown (the broker lists no consumer groups)", groups
    else:
        assert groups == [f"{names.prefix}billing"]

    grow = await asyncio.to_thread(
        invoke, settings, "topics", "plan", service_partitions='{"payments": 9}'
    )
    assert grow.exit_code == 0, grow.output
    assert row(grow.output, names.requests("payments"))[1:] == ["9", "6", "grow"]
    assert row(grow.output, names.replies("payments"))[1:] == ["9", "unknown", "create"]

    shrink = await asyncio.to_thread(
        invoke, settings, "topics", "plan", service_partitions='{"payments": 2}'
    )
    assert shrink.exit_code == 1
    assert row(shrink.output, names.requests("payments"))[1:] == ["2", "6", "refused:", "shrink"]
    assert "cannot remove partitions" in shrink.output
