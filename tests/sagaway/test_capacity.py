"""The capacity model's arithmetic against a case computed by hand (docs/scaling.md)."""

from __future__ import annotations

from sagaway.capacity import Measured, Plan, RolePlan, Workload, plan

MEASURED = Measured(
    orchestrator_events=1_000,
    participant_commands=2_000,
    gateway_requests=1_500,
    partition_records=5_000,
    database_transactions=5_000,
    relay_records=20_000,
)


def test_ten_thousand_sagas_of_three_steps() -> None:
    # Orchestrator: 10,000 × 4 = 40,000 events/s; ÷ (1,000 × 0.8) = 50 instances;
    #   partitions ÷ (5,000 × 0.8) = 10 → 50 (one per instance at least).
    # Participants: 10,000/s; ÷ 1,600 = 6.25 → 7 instances; ÷ 4,000 = 2.5 → 3 → 7 partitions.
    # Gateway: 10,000/s ÷ 1,200 = 8.33 → 9; partitions 3 → 9.
    # Databases: 40,000 tx/s ÷ 4,000 = 10; relays 40,000 ÷ 16,000 = 2.5 → 3; → 10 and 10 relays.
    assert plan(MEASURED, Workload(10_000, steps=3, utilisation=0.8)) == Plan(
        orchestrator=RolePlan(40_000, 50, 50),
        participants=RolePlan(10_000, 7, 7),
        gateway=RolePlan(10_000, 9, 9),
        orchestrator_databases=10,
        relays=10,
    )


def test_a_small_load_needs_one_of_each() -> None:
    small = plan(MEASURED, Workload(10, steps=1))
    assert (small.orchestrator.instances, small.orchestrator_databases, small.relays) == (1, 1, 1)
