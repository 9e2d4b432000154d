"""What the configuration asks of the broker's topics, and how that differs from what it has
(docs/scaling.md). Pure: the broker's answer comes in as data."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sagaway.messaging.topics import TopicNames
from sagaway.settings import MessagingSettings

REQUESTS, REPLIES = ".requests", ".replies"


@dataclass(frozen=True)
class TopicSpec:
    """Partitions and replication factor a topic should have."""

    partitions: int
    replication: int


@dataclass(frozen=True)
class PlanLine:
    """One topic: wanted against found, and what to do about it."""

    topic: str
    wanted: TopicSpec
    found: int | None  # partitions on the broker; None when the topic is missing
    action: str  # "ok", "create", "grow", "refused: shrink"


def service_of(topic: str, prefix: str = "") -> str | None:
    """The service owning `topic` (`<prefix><service>.requests|.replies[.dlq]`), or None."""
    name = topic[len(prefix) :] if prefix and topic.startswith(prefix) else topic
    if prefix and not topic.startswith(prefix):
        return None
    if TopicNames.is_dlq(name):
        name = name[: -len(".dlq")]
    for suffix in (REQUESTS, REPLIES):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def spec_for(settings: MessagingSettings, service: str) -> TopicSpec:
    """A service's own counts, or the global ones."""
    return TopicSpec(
        settings.service_partitions.get(service, settings.partitions),
        settings.service_replication.get(service, settings.replication_factor),
    )


def partitions_for(settings: MessagingSettings, topic: str, default: int) -> int:
    """Partitions to create `topic` with: its service's configured count when one is set,
    else `default` (what the caller asked for)."""
    service = service_of(topic, settings.topic_prefix)
    if service is None or service not in settings.service_partitions:
        return default
    return settings.service_partitions[service]


def wanted_topics(settings: MessagingSettings, services: Iterable[str]) -> dict[str, TopicSpec]:
    """Every topic of these services (requests, replies and their DLQs) with its spec."""
    names = TopicNames(settings.topic_prefix)
    wanted: dict[str, TopicSpec] = {}
    for service in sorted(set(services)):
        spec = spec_for(settings, service)
        for topic in (names.requests(service), names.replies(service)):
            wanted[topic] = spec
            wanted[TopicNames.dlq(topic)] = spec
    return wanted


def known_services(settings: MessagingSettings, existing: Iterable[str]) -> set[str]:
    """The orchestrator, every service configured, and every service with a topic already."""
    found = {service_of(t, settings.topic_prefix) for t in existing}
    return {"orchestrator", *settings.service_partitions, *(s for s in found if s)}


def plan(wanted: Mapping[str, TopicSpec], existing: Mapping[str, int]) -> list[PlanLine]:
    """Compare. Growing keeps order only through `sagaway topics grow`; shrinking is refused
    because records already on the dropped partitions would be stranded."""
    lines = []
    for topic, spec in sorted(wanted.items()):
        found = existing.get(topic)
        if found is None:
            action = "create"
        elif found < spec.partitions:
            action = "grow"
        elif found > spec.partitions:
            action = "refused: shrink"
        else:
            action = "ok"
        lines.append(PlanLine(topic, spec, found, action))
    return lines


def replication_for(settings: MessagingSettings, topic: str) -> int:
    """Replication factor to create `topic` with: its service's, or the global one."""
    service = service_of(topic, settings.topic_prefix)
    if service is None:
        return settings.replication_factor
    return settings.service_replication.get(service, settings.replication_factor)
