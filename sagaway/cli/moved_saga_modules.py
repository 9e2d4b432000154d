"""Saga modules that moved: for one release their old dotted path in SAGAWAY_SAGAS keeps loading
the module at the new one, with a DeprecationWarning (logged too) naming the new path."""

from __future__ import annotations

import logging
import warnings

log = logging.getLogger("sagaway.cli")

# Old path → new path. An entry stays for the one release after its move, then goes.
MOVED_SAGA_MODULES: dict[str, str] = {
    "participants.examples.place_order": "examples.place_order.saga",
}


def current_saga_modules(modules: list[str]) -> list[str]:
    """`modules` (from SAGAWAY_SAGAS) with each moved module replaced by its new path; every old
    path found is warned about (a DeprecationWarning, and a warning in the log)."""
    current = []
    for name in modules:
        moved_to = MOVED_SAGA_MODULES.get(name)
        if moved_to is None:
            current.append(name)
            continue
        message = (
            f"saga module {name!r} (from SAGAWAY_SAGAS) has moved to {moved_to!r}; the old "
            f"path still loads it in this release only: set SAGAWAY_SAGAS={moved_to}"
        )
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        log.warning(message)
        current.append(moved_to)
    return current
