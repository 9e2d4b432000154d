"""Console listing benchmark: seeds 1,000,000 saga rows in PostgreSQL (generate_series, one
statement) and prints one JSON line with the time to render the sagas page — the whole HTTP
request through the console app, template included — for several filters and pages.

The goal (docs/console.md): every page under 200 ms. PostgreSQL runs with fsync and
synchronous_commit on (never the test shortcuts).
Usage: `.venv/bin/python bench/console_listing.py [--rows 1000000] [--repeat 20]`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = str(Path(__file__).resolve().parent.parent)
sys.path.insert(0, ROOT)

import httpx  # noqa: E402

from console.app import console_lifespan, create_console_app  # noqa: E402
from console.auth import hash_password  # noqa: E402
from sagaway.settings import ConsoleSettings  # noqa: E402
from sagaway.settings.composed import Settings, load_settings  # noqa: E402
from sagaway.storage.migrate import upgrade  # noqa: E402
from tests.servers.postgres import PostgresServer  # noqa: E402

TYPES = ["place-order", "refund-order", "open-account", "transfer-funds", "book-trip"]

# Statuses by share: mostly finished, a few in flight, a handful failed.
SEED_SQL = """
INSERT INTO saga_instances (id, saga_type, definition_version, status, current_step, data, state,
    result, failure, correlation_id, reply_to, reply_mode, principal, created_at, updated_at,
    version)
SELECT
    md5(i::text)::uuid::text,
    (ARRAY['place-order', 'refund-order', 'open-account', 'transfer-funds', 'book-trip'])
        [1 + mod(i, 5)],
    1,
    CASE WHEN mod(i, 1000) < 10 THEN 'running'
         WHEN mod(i, 1000) < 12 THEN 'compensating'
         WHEN mod(i, 1000) < 20 THEN 'failed'
         WHEN mod(i, 1000) < 100 THEN 'compensated'
         ELSE 'completed' END,
    CASE WHEN mod(i, 1000) < 20 THEN 'charge-payment' END,
    jsonb_build_object('customer_id', 'c-' || mod(i, 50000), 'total_cents', mod(i, 100000),
                       'items', jsonb_build_array(jsonb_build_object('sku', 'sku-' || mod(i, 977),
                                                                     'quantity', 1 + mod(i, 3)))),
    '{"steps": {}}'::jsonb,
    NULL, NULL,
    'corr-' || i,
    'gateway.replies', 'sync',
    'user-' || mod(i, 1000),
    now() - make_interval(secs => (:rows - i) * 2.5),
    now() - make_interval(secs => (:rows - i) * 2.5) + interval '3 seconds',
    3
FROM generate_series(1, :rows) AS i
"""


def seed(server: PostgresServer, database: str, rows: int) -> float:
    started = time.perf_counter()
    server.execute(SEED_SQL.replace(":rows", str(int(rows))), database)
    server.execute("VACUUM ANALYZE saga_instances", database)
    return time.perf_counter() - started


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
OLDER = re.compile(r'href="([^"]+)" rel="next"')


async def measure(settings: Settings, password: str, repeat: int) -> dict[str, Any]:
    app = create_console_app(
        settings.console,
        messaging=settings.messaging,
        storage=settings.storage,
        background=False,
    )
    async with console_lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
            login = await client.get("/login")
            token = CSRF.search(login.text).group(1)  # type: ignore[union-attr]
            await client.post(
                "/login", data={"username": "bench", "password": password, "csrf_token": token}
            )

            async def timed(url: str) -> tuple[list[float], str]:
                response = await client.get(url)  # warm-up (plans, caches)
                assert response.status_code == 200, (url, response.status_code)
                times = []
                for _ in range(repeat):
                    started = time.perf_counter()
                    response = await client.get(url)
                    times.append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200
                return times, response.text

            # A page deep in the listing: follow "Older" 200 times (10,000 rows in at 50 a page).
            deep = "/sagas"
            for _ in range(200):
                page = await client.get(deep)
                deep = OLDER.search(page.text).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
            one_id = str(
                uuid.UUID(hashlib.md5(b"777777").hexdigest())
            )  # the seed's id of row 777777
            cases = {
                "first_page": "/sagas",
                "page_200_deep": deep,
                "status_failed": "/sagas?status=failed",
                "status_running": "/sagas?status=running",
                "type": "/sagas?type=book-trip",
                "type_and_status": "/sagas?type=transfer-funds&status=compensated",
                "older_than_1_day": "/sagas?age=gt1d",
                "newer_than_1_hour": "/sagas?age=lt1h",
                "by_principal": "/sagas?q=user-42",
                "by_id": f"/sagas?q={one_id}",
                "by_correlation_id": "/sagas?q=corr-777777",
                "saga_detail": None,
                "overview": "/",
            }
            results: dict[str, Any] = {}
            for name, url in cases.items():
                if url is None:
                    first = await client.get("/sagas?status=running")
                    saga_id = re.search(r'data-saga-id="([^"]+)"', first.text).group(1)  # type: ignore[union-attr]
                    url = f"/sagas/{saga_id}"
                times, html = await timed(url)
                results[name] = {
                    "rows": html.count("data-saga-id="),
                    "ms_median": round(statistics.median(times), 1),
                    "ms_p95": round(sorted(times)[max(0, int(len(times) * 0.95) - 1)], 1),
                    "ms_max": round(max(times), 1),
                }
            return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    password = "bench-password"
    with PostgresServer(fast=False) as server:
        database = "console_bench"
        server.create_database(database)
        url = server.async_url(database)
        upgrade(url)
        seed_s = seed(server, database, args.rows)
        settings = load_settings(
            database_url=url,
            console=ConsoleSettings.model_validate(
                {
                    "users": [
                        {
                            "name": "bench",
                            "role": "viewer",
                            "password_hash": hash_password(password),
                        }
                    ],
                    "cookie_secure": False,
                    "session_secret": "bench",
                    "services": ["orchestrator"],
                }
            ),
        )
        results = asyncio.run(measure(settings, password, args.repeat))
    worst = max(r["ms_p95"] for r in results.values())
    print(
        json.dumps(
            {
                "benchmark": "console_listing",
                "saga_rows": args.rows,
                "seed_s": round(seed_s, 1),
                "repeat": args.repeat,
                "pages": results,
                "worst_p95_ms": worst,
                "under_200ms": worst < 200,
            }
        )
    )


if __name__ == "__main__":
    main()
