"""CPython's cyclic garbage collector, set for a long-running server instead of a short script.

The defaults collect the young generation every 700 net allocations of container objects, and
a full collection walks every object the process holds. Measured in `sagaway dev`'s first process
at 128 clients (docs/benchmarks.md, round eleven): the collector took ~10 % of its time, and
each full collection walked ~160,000 objects — modules, classes, SQLAlchemy's and pydantic's
structures, built at start-up and never garbage — holding the event loop for 90–120 ms,
several times a minute. Every request in flight waited that long.

So each Sagaway process:
- collects its young generation every `THRESHOLDS[0]` allocations: the hot path's garbage is
  freed by reference counting as it goes; the collector is only there for cycles;
- once started, freezes what start-up built (`gc.freeze`): later collections, full ones
  included, walk only the objects made since.
"""

from __future__ import annotations

import gc
import logging

from prometheus_client import Gauge

log = logging.getLogger("sagaway.gc")

FROZEN_OBJECTS = Gauge(
    "sagaway_gc_frozen_objects",
    "Objects built at start-up that garbage collections leave out (0 until the role started)",
)

# A young collection every 10,000 allocations instead of 700; the older generations keep their
# ratios. At 128 clients the first process's collections took 180–210 ms per 12 s instead of
# 1,400 ms, the longest 12–15 ms (docs/benchmarks.md, round eleven).
THRESHOLDS = (10_000, 10, 10)


def tune_collector() -> None:
    """Set this process's collection thresholds (see the module docstring)."""
    gc.set_threshold(*THRESHOLDS)


def freeze_startup_heap() -> int:
    """Collect what start-up left as garbage, then move every object alive now out of the
    collector's sight for good; call it once the process is started. Returns how many objects
    are frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    FROZEN_OBJECTS.set(frozen)
    log.debug("start-up heap frozen: %d objects left out of garbage collections", frozen)
    return frozen
