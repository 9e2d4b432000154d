"""What the console reads: the orchestrator's database, the gateway's, each service's outbox,
and an in-memory history of outbox lag samples for the overview's one-hour chart."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from console.queries.overview import OutboxFigures, outbox_figures
from sagaway.settings import ConsoleSettings, StorageSettings
from sagaway.storage.database import create_database_engine, is_sqlite, read_only, sqlite_path

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ServiceSource:
    """One service's database as the console sees it (None when its SQLite file does not exist:
    the console never creates another service's database)."""

    name: str
    url: str
    engine: AsyncEngine | None


@dataclass(slots=True)
class ConsoleSources:
    orchestrator: AsyncEngine
    gateway: AsyncEngine | None
    services: list[ServiceSource]
    owned: list[AsyncEngine] = field(default_factory=list)

    async def close(self) -> None:
        for engine in self.owned:
            await engine.dispose()


def _exists(url: str) -> bool:
    if not is_sqlite(url):
        return True
    path = sqlite_path(url)
    return path is not None and path.exists()


def open_sources(
    config: ConsoleSettings, storage: StorageSettings, orchestrator: AsyncEngine | None = None
) -> ConsoleSources:
    """Engines for every configured database, one per distinct URL: a service's URL from
    `config.service_database_urls`, else `storage.database_url_for(service)`."""
    engines: dict[str, AsyncEngine] = {}
    owned: list[AsyncEngine] = []

    def url_of(service: str) -> str:
        return config.service_database_urls.get(service, storage.database_url_for(service))

    orchestrator_url = url_of("orchestrator")

    def engine_for(url: str) -> AsyncEngine | None:
        if url in engines:
            return engines[url]
        if not _exists(url):
            return None
        engine = create_database_engine(
            url, pool_size=2, application_name="sagaway-console", sqlite_inline=False
        )
        engines[url] = engine
        owned.append(engine)
        return engine

    if orchestrator is not None:
        engines[orchestrator_url] = orchestrator
    else:
        orchestrator = create_database_engine(
            orchestrator_url, pool_size=4, application_name="sagaway-console", sqlite_inline=False
        )
        engines[orchestrator_url] = orchestrator
        owned.append(orchestrator)
    gateway_url = config.gateway_database_url or url_of("gateway")
    services = []
    for name in dict.fromkeys(["orchestrator", *config.services]):
        url = url_of(name)
        services.append(ServiceSource(name, url, engine_for(url)))
    return ConsoleSources(orchestrator, engine_for(gateway_url), services, owned)


async def read_outbox(source: ServiceSource, now: datetime) -> OutboxFigures:
    """The service's outbox figures; a database that cannot be read says why instead."""
    if source.engine is None:
        return OutboxFigures(source.name, 0, None, None, None, error="no database (not started?)")
    try:
        async with read_only(source.engine) as conn:
            return await outbox_figures(conn, source.name, now)
    except Exception as exc:  # noqa: BLE001 - one broken source must not break the page
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return OutboxFigures(
            source.name, 0, None, None, None, error=f"{type(exc).__name__}: {first[:200]}"
        )


class LagHistory:
    """Outbox lag samples per service for the last hour, kept in memory by the console process
    (the chart starts when the console starts)."""

    def __init__(self, interval_s: float, window_s: float = 3600.0) -> None:
        self.interval_s = interval_s
        self.window_s = window_s
        size = int(window_s / interval_s) + 2
        self.samples: dict[str, deque[tuple[datetime, OutboxFigures]]] = {}
        self._size = size

    def add(self, when: datetime, figures: Iterable[OutboxFigures]) -> None:
        for f in figures:
            if f.error is None:
                self.samples.setdefault(f.service, deque(maxlen=self._size)).append((when, f))

    def series(self, metric: str, since: datetime) -> dict[str, list[tuple[datetime, float]]]:
        out: dict[str, list[tuple[datetime, float]]] = {}
        for service, points in self.samples.items():
            values = []
            for when, f in points:
                if when < since:
                    continue
                value = getattr(f, metric)
                values.append((when, float(value or 0.0)))
            out[service] = values
        return out

    async def run(self, sources: ConsoleSources) -> None:
        """Sample every interval until cancelled."""
        while True:
            now = datetime.now(UTC)
            figures = await asyncio.gather(*(read_outbox(s, now) for s in sources.services))
            self.add(now, figures)
            await asyncio.sleep(self.interval_s)
