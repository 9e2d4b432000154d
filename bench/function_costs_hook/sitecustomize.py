"""Loaded by every Python process `bench/function_costs.py` starts (this directory is put first on
their PYTHONPATH): wraps the functions named in `TARGETS` to add up their calls and wall time.

Does nothing unless SAGAWAY_BENCH_FUNCTION_COSTS names a directory. There, SIGUSR2 zeroes the
counts and SIGUSR1 writes them to `<pid>.json`. The wrappers go on once the modules are imported
(a thread looks for them), and time a coroutine from its first step to its end: on an inline
SQLite stack the functions listed do not wait for I/O, so that is their CPU, give or take a
switch to another task. The garbage collector's passes are counted too, as "gc generation N":
a pass holds the event loop, inside whichever function allocated when it began."""

from __future__ import annotations

import gc
import inspect
import json
import os
import signal
import sys
import threading
import time
from typing import Any

# (module, class or None for a module-level function, names). A function imported by name into
# another module is wrapped where it is called from.
TARGETS: list[tuple[str, str | None, tuple[str, ...]]] = [
    ("sagaway.messaging.embedded.store", "BrokerFile", ("read", "append", "commit")),
    ("sagaway.messaging.embedded.crossbell", "CrossProcessBell", ("notify",)),
    ("sagaway.messaging.processing", "RecordProcessor", ("process",)),
    ("sagaway.outbox.poll_relay", "PollRelay", ("publish_batch", "mark_held")),
    ("orchestrator.service", "OrchestratorService", ("handle_batch", "process")),
    ("orchestrator.session", "SagaSession", ("load", "apply", "start", "flush")),
    ("participants.runner", "ParticipantRunner", ("handle_batch", "handle_command")),
    ("gateway.store", "RequestStore", ("_insert_accepted",)),
    ("gateway.replier", "Replier", ("handle_batch",)),
    ("sagaway.sqlite.inline", "_InlineAsyncTransaction", ("start", "__aexit__")),
]

_counts: dict[str, list[float]] = {}


def _wrap(owner: Any, name: str, label: str) -> None:
    original = getattr(owner, name)
    if inspect.iscoroutinefunction(original):

        async def timed_coroutine(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                entry = _counts.setdefault(label, [0, 0.0])
                entry[0] += 1
                entry[1] += time.perf_counter() - start

        setattr(owner, name, timed_coroutine)
    else:

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                entry = _counts.setdefault(label, [0, 0.0])
                entry[0] += 1
                entry[1] += time.perf_counter() - start

        setattr(owner, name, timed)


_gc_began = [0.0]


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_began[0] = time.perf_counter()
        return
    entry = _counts.setdefault(f"gc generation {info['generation']}", [0, 0.0])
    entry[0] += 1
    entry[1] += time.perf_counter() - _gc_began[0]


def _install_when_imported() -> None:
    pending = list(TARGETS)
    deadline = time.monotonic() + 120
    while pending and time.monotonic() < deadline:
        for target in list(pending):
            module_name, class_name, names = target
            module = sys.modules.get(module_name)
            owner = module if class_name is None else getattr(module, class_name, None)
            if module is None or owner is None:
                continue
            for name in names:
                if hasattr(owner, name):
                    _wrap(owner, name, f"{class_name or module_name}.{name}")
            pending.remove(target)
        time.sleep(0.005)


def _write(directory: str) -> None:
    """Written beside and renamed, so the bench never reads a half-written file."""
    path = os.path.join(directory, f"{os.getpid()}.json")
    with open(path + ".part", "w") as out:
        json.dump({"argv": sys.argv, "counts": _counts}, out)
    os.replace(path + ".part", path)


_DIRECTORY = os.environ.get("SAGAWAY_BENCH_FUNCTION_COSTS")
if _DIRECTORY:
    signal.signal(signal.SIGUSR1, lambda *_: _write(_DIRECTORY))
    signal.signal(signal.SIGUSR2, lambda *_: _counts.clear())
    gc.callbacks.append(_on_gc)
    threading.Thread(target=_install_when_imported, name="function-costs", daemon=True).start()
