"""The fault driver: every 2–5 s (seeded, so a run can be replayed) it kill -9s one role process —
an orchestrator, a participant, a relay or a gateway, chosen kind first so each kind gets its
share — and starts it again after a short pause; once, at a set moment, it crashes PostgreSQL
and starts it again. It never touches the broker: tansu keeps everything in memory.

A role that dies without being killed is restarted too, and reported: processes must ride out
a database restart or a dead peer, not exit.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from tests.chaos.cluster import READY_TIMEOUT_S
from tests.harness.processes import RoleProcess


class Killable(Protocol):
    @property
    def roles(self) -> dict[str, RoleProcess]: ...


@dataclass
class FaultLog:
    """What the driver did: faults by kind, and the roles that died on their own."""

    faults: Counter[str] = field(default_factory=Counter)
    events: list[tuple[float, str, str]] = field(default_factory=list)  # (t, kind, role)
    unexpected_exits: list[tuple[str, int | None, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "faults": dict(self.faults),
            "faults_total": sum(self.faults.values()),
            "unexpected_exits": [name for name, _, _ in self.unexpected_exits],
        }


class FaultDriver:
    def __init__(
        self,
        cluster: Killable,
        rng: random.Random,
        *,
        every_s: tuple[float, float] = (2.0, 5.0),
        pause_s: tuple[float, float] = (0.2, 1.5),
        postgres: Any = None,
        postgres_restart_after_s: float | None = None,
        echo: Any = print,
    ) -> None:
        self.cluster = cluster
        self.rng = rng
        self.every_s = every_s
        self.pause_s = pause_s
        self.postgres = postgres
        self.postgres_restart_after_s = postgres_restart_after_s
        self.echo = echo
        self.log = FaultLog()
        self._began = 0.0

    def _kinds(self) -> dict[str, list[str]]:
        kinds: dict[str, list[str]] = {}
        for name, role in sorted(self.cluster.roles.items()):
            kinds.setdefault(role.kind, []).append(name)
        return kinds

    def _note(self, kind: str, name: str) -> None:
        self.log.faults[kind] += 1
        self.log.events.append((round(time.monotonic() - self._began, 2), kind, name))
        self.echo(f"chaos: t={time.monotonic() - self._began:5.1f}s {kind}: {name}")

    def revive_dead(self) -> None:
        """Start again any role that exited by itself (and remember it)."""
        for role in self.cluster.roles.values():
            if role.process is not None and role.process.poll() is not None:
                code = role.process.returncode
                self.log.unexpected_exits.append((role.name, code, role.log_tail(2000)))
                self.echo(f"chaos: {role.name} exited by itself ({code}); restarting it")
                role.start()

    def kill_one(self) -> None:
        kinds = self._kinds()
        kind = self.rng.choice(sorted(kinds))
        name = self.rng.choice(kinds[kind])
        role = self.cluster.roles[name]
        pause = self.rng.uniform(*self.pause_s)
        role.kill9()
        self._note(kind, name)
        time.sleep(pause)
        role.start()
        if role.url:
            # Keep one gateway up: the next fault waits until this one answers again.
            role.wait_ready(READY_TIMEOUT_S)

    def restart_postgres(self) -> None:
        self._note("postgres", "postgres")
        self.postgres.restart(down_for_s=self.rng.uniform(0.5, 2.0))

    async def run(self, stop: asyncio.Event) -> FaultLog:
        """Inject faults until `stop` is set."""
        loop = asyncio.get_running_loop()
        self._began = time.monotonic()
        postgres_due = (
            None
            if self.postgres is None or self.postgres_restart_after_s is None
            else loop.time() + self.postgres_restart_after_s
        )
        next_at = loop.time()
        while not stop.is_set():
            # Kill to kill, not restart to kill: a slow restart does not thin out the faults.
            next_at = max(next_at + self.rng.uniform(*self.every_s), loop.time() + 0.5)
            try:
                await asyncio.wait_for(stop.wait(), next_at - loop.time())
                break
            except TimeoutError:
                pass
            await asyncio.to_thread(self.revive_dead)
            if postgres_due is not None and loop.time() >= postgres_due:
                postgres_due = None
                await asyncio.to_thread(self.restart_postgres)
            else:
                await asyncio.to_thread(self.kill_one)
        await asyncio.to_thread(self.revive_dead)
        return self.log
