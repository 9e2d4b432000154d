"""Per-service partition counts from configuration, and the plan that compares them with the
broker (docs/scaling.md)."""

from __future__ import annotations

from sagaway.messaging.topic_plan import (
    TopicSpec,
    known_services,
    partitions_for,
    plan,
    replication_for,
    service_of,
    wanted_topics,
)
from sagaway.settings import MessagingSettings


def settings(**values: object) -> MessagingSettings:
    return MessagingSettings(topic_prefix="p.", partitions=8, **values)  # type: ignore[arg-type]


def test_a_service_topic_names_its_service_under_the_prefix() -> None:
    assert service_of("p.payments.requests", "p.") == "payments"
    assert service_of("p.payments.replies.dlq", "p.") == "payments"
    assert service_of("q.payments.requests", "p.") is None
    assert service_of("p.relay.heartbeat", "p.") is None


def test_a_configured_service_takes_its_own_counts_and_the_others_the_global_ones() -> None:
    s = settings(service_partitions={"payments": 16}, service_replication={"payments": 3})
    assert partitions_for(s, "p.payments.requests", 8) == 16
    assert partitions_for(s, "p.payments.replies.dlq", 8) == 16
    assert partitions_for(s, "p.orchestrator.requests", 8) == 8
    assert partitions_for(s, "p.relay.heartbeat", 1) == 1
    assert replication_for(s, "p.payments.requests") == 3
    assert replication_for(s, "p.orchestrator.requests") == 1


def test_the_plan_says_create_grow_ok_or_refuses_a_shrink() -> None:
    s = settings(service_partitions={"payments": 16, "stock": 2})
    existing = {"p.payments.requests": 8, "p.stock.requests": 4, "p.orchestrator.requests": 8}
    services = known_services(s, existing)
    assert services == {"orchestrator", "payments", "stock"}
    lines = {line.topic: line for line in plan(wanted_topics(s, services), existing)}
    assert lines["p.payments.requests"].action == "grow"
    assert lines["p.payments.requests"].wanted == TopicSpec(16, 1)
    assert lines["p.stock.requests"].action == "refused: shrink"
    assert lines["p.orchestrator.requests"].action == "ok"
    assert lines["p.payments.replies"].action == "create"
    assert lines["p.payments.replies"].found is None
