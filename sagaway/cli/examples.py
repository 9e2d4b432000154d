"""The verbs for the example saga's data: `seed` fills the example databases, `audit` checks
their invariants.

    sagaway seed                             # customers and stock for the examples (idempotent)
    sagaway audit [--json]                   # check the examples' invariants; non-zero on violation

Each service's database is SAGAWAY_DATABASE_URL with {service} replaced by the service's name
(without it, that one database for all), the service's --<service>-url, or, with neither, the
embedded SQLite file of `sagaway dev` in data_dir.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import click
import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from examples.place_order.audit import (
    AuditReport,
    WrongDatabase,
    audit,
    check_databases,
    load_snapshot,
)
from examples.place_order.seed import (
    DEFAULT_CREDIT_CENTS,
    DEFAULT_CUSTOMERS,
    DEFAULT_SKUS,
    DEFAULT_UNITS,
    SeedResult,
    seed_inventory,
    seed_payments,
)
from sagaway.cli.database_errors import database_errors_as_click
from sagaway.settings.composed import Settings
from sagaway.storage.database import (
    create_database_engine,
    describe_database,
    is_sqlite,
    sqlite_path,
    wait_for_database,
)
from sagaway.storage.migrate import upgrade

URL_HELP = "SQLAlchemy URL of the {} database (default: the configured one for that service)."


class AuditRefused(click.ClickException):
    """The audit cannot run on what it was given (a database missing, down, or another
    service's): exit 2, apart from the 1 of a violation."""

    exit_code = 2


def _url(settings: Settings, service: str, given: str | None) -> str:
    return given or settings.storage.database_url_for(service)


def _embedded_notice(settings: Settings, given: list[str | None]) -> str | None:
    """What to tell a user whose verb reads the embedded files because nothing named a URL."""
    if settings.storage.database_url or any(given):
        return None
    return (
        "no SAGAWAY_DATABASE_URL and no --<service>-url: using the embedded SQLite files of "
        f"`sagaway dev` in {settings.storage.data_dir.resolve()}"
    )


def _shared_notice(urls: dict[str, str]) -> str | None:
    """Where several services are read from one database, say so: right for a deployment that
    shares one, and the first clue when SAGAWAY_DATABASE_URL lacks {service}."""
    by_url: dict[str, list[str]] = {}
    for service, url in urls.items():
        by_url.setdefault(url, []).append(service)
    shared = [
        f"{_names(services)} are read from one database, {describe_database(url)}"
        for url, services in by_url.items()
        if len(services) > 1
    ]
    return "; ".join(shared) if shared else None


def _refusal(wrong: list[WrongDatabase], urls: dict[str, str]) -> str:
    """One line per database that is not its service's, then what to set."""
    lines = ["not auditing:"]
    for each in wrong:
        url = urls[each.service]
        sharing = [s for s, other in urls.items() if other == url and s != each.service]
        also = f" (the one read for {_names(sharing)} too)" if sharing else ""
        lines.append(
            f"- the {each.service} database, {describe_database(url)}{also}, {each.problem};"
        )
    options = _names([f"--{each.service}-url" for each in wrong])
    lines.append(
        f"set {options}, or SAGAWAY_DATABASE_URL with {{service}} in it "
        "(postgresql+asyncpg://user:password@host:5432/{service}), to each service's database"
    )
    return "\n".join(lines)


def _names(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


async def _engine(url: str, *, must_exist: bool) -> AsyncEngine:
    path = sqlite_path(url) if is_sqlite(url) else None
    if must_exist and path is not None and not path.exists():
        raise click.ClickException(
            f"no database at {path}: run the system (or `sagaway migrate`) first"
        )
    engine = create_database_engine(url, pool_size=2)
    try:
        return await wait_for_database(engine, max_backoff_s=2.0, give_up_after_s=15.0)
    except BaseException:
        await engine.dispose()
        raise


@click.command("seed")
@click.option("--inventory-url", metavar="URL", help=URL_HELP.format("inventory"))
@click.option("--payments-url", metavar="URL", help=URL_HELP.format("payments"))
@click.option(
    "--customers", type=click.IntRange(min=0), default=DEFAULT_CUSTOMERS, show_default=True,
    help="Customers c-1 … c-N.",
)
@click.option(
    "--credit-cents", type=click.IntRange(min=0, max=10**15), default=DEFAULT_CREDIT_CENTS,
    show_default=True, help="Starting credit of each customer.",
)
@click.option(
    "--skus", type=click.IntRange(min=0), default=DEFAULT_SKUS, show_default=True,
    help="Skus sku-1 … sku-N.",
)
@click.option(
    "--units", type=click.IntRange(min=0, max=10**15), default=DEFAULT_UNITS,
    show_default=True, help="Starting stock of each sku.",
)
@click.option(
    "--migrate/--no-migrate", default=True, show_default=True,
    help="Bring both databases to the latest schema first.",
)
@click.pass_obj
def seed_command(
    settings: Settings,
    inventory_url: str | None,
    payments_url: str | None,
    customers: int,
    credit_cents: int,
    skus: int,
    units: int,
    migrate: bool,
) -> None:
    """Create the example customers (with credit, on the payments database) and skus (with
    stock, on the inventory database); idempotent. Says which database each went to."""
    inventory = _url(settings, "inventory", inventory_url)
    payments = _url(settings, "payments", payments_url)
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))
    notice = _embedded_notice(settings, [inventory_url, payments_url])
    if notice:
        click.echo(notice)

    async def run() -> list[tuple[str, SeedResult]]:
        results = []
        for service, url, seed in (
            ("payments", payments, lambda e: seed_payments(e, customers, credit_cents)),
            ("inventory", inventory, lambda e: seed_inventory(e, skus, units)),
        ):
            engine = await _engine(url, must_exist=False)
            try:
                if migrate:
                    await asyncio.to_thread(upgrade, url)
                results.append((service, await seed(engine)))
            finally:
                await engine.dispose()
        return results

    for service, result in database_errors_as_click(lambda: asyncio.run(run())):
        click.echo(f"{service}: {result.summary()}")


@click.command("audit")
@click.option("--inventory-url", metavar="URL", help=URL_HELP.format("inventory"))
@click.option("--payments-url", metavar="URL", help=URL_HELP.format("payments"))
@click.option("--shipping-url", metavar="URL", help=URL_HELP.format("shipping"))
@click.option("--orchestrator-url", metavar="URL", help=URL_HELP.format("orchestrator"))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.pass_obj
def audit_command(
    settings: Settings,
    inventory_url: str | None,
    payments_url: str | None,
    shipping_url: str | None,
    orchestrator_url: str | None,
    as_json: bool,
) -> None:
    """Check the example invariants (money and stock conserved, every order completed or fully
    compensated) and print the totals. Exits 1 on any violation, and 2, without auditing, when
    a database is missing, unreachable, or not the service's it is read as."""
    urls = {
        service: _url(settings, service, given)
        for service, given in (
            ("inventory", inventory_url),
            ("payments", payments_url),
            ("shipping", shipping_url),
            ("orchestrator", orchestrator_url),
        )
    }
    given = [inventory_url, payments_url, shipping_url, orchestrator_url]
    notice = _embedded_notice(settings, given) or _shared_notice(urls)
    if notice:
        click.echo(notice, err=True)

    async def run() -> AuditReport:
        engines: dict[str, AsyncEngine] = {}
        try:
            for service, url in urls.items():
                engines[service] = await _engine(url, must_exist=True)
            wrong = await check_databases(engines)
            if wrong:
                raise AuditRefused(_refusal(wrong, urls))
            try:
                snapshot = await load_snapshot(
                    engines["inventory"],
                    engines["payments"],
                    engines["shipping"],
                    engines["orchestrator"],
                )
            except sa.exc.DBAPIError as exc:
                raise AuditRefused(
                    f"cannot read the example tables ({type(exc.orig).__name__}): run "
                    f"`sagaway migrate` for every service first; databases: "
                    + ", ".join(f"{s}={describe_database(u)}" for s, u in urls.items())
                ) from None
            return audit(snapshot)
        finally:
            for engine in engines.values():
                await engine.dispose()

    try:
        report = database_errors_as_click(lambda: asyncio.run(run()))
    except AuditRefused:
        raise
    except click.ClickException as exc:
        raise AuditRefused(exc.message) from None
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(report.to_json()) + b"\n")
        sys.stdout.flush()
    else:
        click.echo("\n".join(report.lines()))
    if not report.clean:
        sys.exit(1)
