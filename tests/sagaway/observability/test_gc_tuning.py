"""Each process collects its young generation less often and, once started, leaves what start-up
built out of every later collection."""

from __future__ import annotations

import asyncio
import gc
import weakref

from prometheus_client import REGISTRY

from sagaway.observability import event_loop
from sagaway.observability.gc_tuning import THRESHOLDS, freeze_startup_heap


class Node:
    """A container that can be part of a reference cycle (and be weakly referenced)."""

    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> tuple[Node, Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a, b


async def thresholds_inside() -> tuple[int, int, int]:
    await asyncio.sleep(0)
    return gc.get_threshold()


def test_every_process_runs_with_the_server_thresholds() -> None:
    gc.set_threshold(700, 10, 10)
    assert event_loop.run(thresholds_inside()) == THRESHOLDS


def test_start_up_garbage_is_collected_and_what_lives_is_frozen() -> None:
    garbage, _ = cycle()
    gone = weakref.ref(garbage)
    del garbage, _
    kept = cycle()

    frozen = freeze_startup_heap()

    assert gone() is None  # collected before the freeze, not frozen with the rest
    assert frozen == gc.get_freeze_count() > 0
    assert REGISTRY.get_sample_value("sagaway_gc_frozen_objects") == frozen
    tracked = {id(o) for o in gc.get_objects()}
    assert id(kept[0]) not in tracked  # later collections do not walk it


def test_objects_made_after_the_freeze_are_still_collected() -> None:
    freeze_startup_heap()
    later, _ = cycle()
    gone = weakref.ref(later)
    assert id(later) in {id(o) for o in gc.get_objects()}
    del later, _
    gc.collect()
    assert gone() is None
