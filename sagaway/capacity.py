"""The capacity model of docs/scaling.md as arithmetic: from per-role measured rates and a target
saga rate, how many instances, partitions, databases and relays each role needs. Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Measured:
    """Rates of one instance (or one partition, one database) at full load, per second."""

    orchestrator_events: float  # saga transactions (a start or a reply) one orchestrator does
    participant_commands: float  # commands one participant instance handles
    gateway_requests: float  # requests one gateway instance accepts and answers
    partition_records: float  # records one partition delivers to one consumer
    database_transactions: float  # write transactions one PostgreSQL database commits
    relay_records: float  # outbox rows one relay (WAL decoding) publishes


@dataclass(frozen=True)
class Workload:
    """What is asked: sagas per second, each with `steps` participant commands."""

    sagas_per_s: float
    steps: int = 3
    utilisation: float = 0.7  # the share of a measured rate to plan for (headroom)


@dataclass(frozen=True)
class RolePlan:
    """Instances of a role, and partitions of the topic it consumes (>= instances: a partition
    is consumed by one instance of a group, so more instances than partitions sit idle)."""

    per_s: float
    instances: int
    partitions: int


@dataclass(frozen=True)
class Plan:
    orchestrator: RolePlan
    participants: RolePlan  # per participant service, when each step is another service
    gateway: RolePlan
    orchestrator_databases: int  # one active relay per database: relays == databases
    relays: int


def _need(rate: float, capacity: float, utilisation: float) -> int:
    return max(1, math.ceil(rate / (capacity * utilisation)))


def plan(measured: Measured, load: Workload) -> Plan:
    """Size every role for `load`. Per saga: the orchestrator handles one start and one reply per
    step, each a transaction writing outbox rows (one command per step, one final reply);
    each participant service handles one command per saga; the gateway one request."""
    u = load.utilisation
    orch_rate = load.sagas_per_s * (load.steps + 1)
    outbox_rate = load.sagas_per_s * (load.steps + 1)
    part_rate = load.sagas_per_s  # one command per saga to each participant service

    def role(rate: float, per_instance: float) -> RolePlan:
        instances = _need(rate, per_instance, u)
        partitions = max(instances, _need(rate, measured.partition_records, u))
        return RolePlan(rate, instances, partitions)

    databases = max(
        _need(orch_rate, measured.database_transactions, u),
        _need(outbox_rate, measured.relay_records, u),
    )
    return Plan(
        orchestrator=role(orch_rate, measured.orchestrator_events),
        participants=role(part_rate, measured.participant_commands),
        gateway=role(load.sagas_per_s, measured.gateway_requests),
        orchestrator_databases=databases,
        relays=databases,
    )
