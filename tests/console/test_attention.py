"""The overview's "needs attention" band: the rules (figures in, entries out), then the page on
seeded databases — failed sagas of any age, new dead letters, stale relay heartbeats, overdue
step timeouts and held sync requests appear; with nothing wrong the band is empty."""

from __future__ import annotations

import os
import signal
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.testclient import TestClient

from console.attention import (
    AttentionFigures,
    Capped,
    LagGrowth,
    LagTrend,
    Thresholds,
    attention_entries,
    relay_stale,
)
from console.queries.overview import OutboxFigures
from orchestrator.models import saga_instances, saga_steps, timers
from sagaway.outbox.lag import save_relay_state
from tests.console.conftest import Seeded
from tests.console.test_dead_letters import poison, send_to_dlq, wait_for
from tests.harness.dev import dev_data_dir, dev_process, start_dev
from tests.harness.processes import RoleProcess

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
LIMITS = Thresholds(relay_stale_after_s=30.0, sync_wait_s=30.0)


def relay(service: str, seen_s_ago: float | None, lag_s: float = 0.005) -> OutboxFigures:
    seen = None if seen_s_ago is None else NOW - timedelta(seconds=seen_s_ago)
    return OutboxFigures(service, 0, None, lag_s, seen)


def figures(**changes: Any) -> AttentionFigures:
    values: dict[str, Any] = {
        "failed": Capped(),
        "new_dead_letters": Capped(),
        "overdue_timeouts": Capped(),
        "held_sync": Capped(),
        "outboxes": [relay("orchestrator", 2.0), relay("payments", None)],
    }
    values.update(changes)
    return AttentionFigures(**values)


def test_nothing_wrong_gives_no_entries() -> None:
    assert attention_entries(figures(), LIMITS, NOW) == []
    assert attention_entries(figures(held_sync=None), LIMITS, NOW) == []


def test_a_relay_is_stale_only_past_the_threshold_and_only_once_it_has_beaten() -> None:
    assert not relay_stale(relay("a", 29.0), NOW, 30.0)
    assert relay_stale(relay("a", 31.0), NOW, 30.0)
    assert not relay_stale(relay("a", None), NOW, 30.0)
    broken = OutboxFigures("a", 0, None, None, None, error="no database (not started?)")
    assert not relay_stale(broken, NOW, 30.0)


def test_each_kind_of_trouble_links_to_its_filtered_list_most_urgent_first() -> None:
    entries = attention_entries(
        figures(
            failed=Capped(1000, more=True, oldest=NOW - timedelta(days=3)),
            new_dead_letters=Capped(4, oldest=NOW - timedelta(minutes=7)),
            overdue_timeouts=Capped(1, oldest=NOW - timedelta(minutes=2), sample_id="s-1"),
            held_sync=Capped(3, oldest=NOW - timedelta(minutes=5), sample_id="r-1"),
            outboxes=[relay("orchestrator", 2.0), relay("payments", 360.0)],
        ),
        LIMITS,
        NOW,
    )
    by_kind = {e.kind: e for e in entries}
    assert [e.kind for e in entries] == [
        "stale-relay",
        "failed",
        "stuck",
        "dead-letters",
        "held-sync",
    ]
    stale = by_kind["stale-relay"]
    assert stale.severity == "bad" and "payments" in stale.text and "6 min ago" in stale.text
    assert (stale.route, stale.fragment) == ("overview", "outbox-lag")
    failed = by_kind["failed"]
    assert failed.text.startswith("1000+ failed sagas") and "3 days ago" in failed.text
    assert (failed.route, failed.query) == ("saga_list", {"status": "failed"})
    stuck = by_kind["stuck"]
    assert (stuck.route, stuck.path) == ("saga_detail", {"saga_id": "s-1"})
    letters = by_kind["dead-letters"]
    assert letters.text.startswith("4 new dead letters") and letters.severity == "warn"
    assert (letters.route, letters.query) == ("dead_letter_list", {"status": "new"})
    held = by_kind["held-sync"]
    assert (held.route, held.fragment) == ("overview", "requests")
    assert "30 s wait" in held.text


def test_one_held_request_links_to_its_saga_and_many_stuck_sagas_to_the_running_list() -> None:
    entries = attention_entries(
        figures(overdue_timeouts=Capped(2, sample_id="s-1"), held_sync=Capped(1, sample_id="r-9")),
        LIMITS,
        NOW,
    )
    by_kind = {e.kind: e for e in entries}
    assert (by_kind["stuck"].route, by_kind["stuck"].query) == ("saga_list", {"status": "running"})
    assert (by_kind["held-sync"].route, by_kind["held-sync"].query) == ("saga_list", {"q": "r-9"})
    assert by_kind["held-sync"].text.startswith("1 sync request unanswered")


# --- the page, on the seeded databases -------------------------------------------------------


def band(html: str) -> str:
    start = html.index('<section id="attention"')
    return html[start : html.index("</section>", start)]


def age_saga(seeded: Seeded, saga_id: str, hours: float) -> None:
    async def run(engine: AsyncEngine) -> None:
        when = datetime.now(UTC) - timedelta(hours=hours)
        async with engine.begin() as conn:
            await conn.execute(
                sa.update(saga_instances)
                .where(saga_instances.c.id == saga_id)
                .values(created_at=when, updated_at=when)
            )

    seeded.run(run)


def heartbeat(seeded: Seeded, seconds_ago: float) -> None:
    """The orchestrator's relay row, its last heartbeat `seconds_ago`, its lag a healthy 5 ms."""

    async def run(engine: AsyncEngine) -> None:
        async with engine.begin() as conn:
            await save_relay_state(
                conn,
                "orchestrator-relay",
                "poll",
                heartbeat_lag_s=0.005,
                heartbeat_at=datetime.now(UTC) - timedelta(seconds=seconds_ago),
            )

    seeded.run(run)


def test_a_failed_saga_older_than_an_hour_needs_attention(
    viewer: TestClient, seeded: Seeded
) -> None:
    age_saga(seeded, seeded.failed, hours=3)
    html = viewer.get("/").text
    entries = band(html)
    assert 'data-kind="failed"' in entries and "1 failed saga awaiting an operator" in entries
    assert "/sagas?status=failed" in entries
    assert 'id="count-failed">1<' in html  # the card counts failed sagas of any age
    assert html.index('id="attention"') < html.index('id="count-running"')  # first on the page


def test_new_dead_letters_need_attention_until_handled(make_client: Any, seeded: Seeded) -> None:
    client = make_client("olga", background=True)
    send_to_dlq(seeded.settings, [poison(1), poison(2)])
    wait_for(client, "/", "2 new dead letters not yet replayed or discarded")
    entries = band(client.get("/").text)
    assert 'data-kind="dead-letters"' in entries and "/dead-letters?status=new" in entries


def test_a_stale_heartbeat_shows_as_stale_not_healthy(viewer: TestClient, seeded: Seeded) -> None:
    heartbeat(seeded, seconds_ago=360)
    html = viewer.get("/").text
    entries = band(html)
    assert 'data-kind="stale-relay"' in entries and "orchestrator: relay heartbeat stale" in entries
    row = html[html.index('<tr data-service="orchestrator"') :]
    row = row[: row.index("</tr>")]
    assert 'class="relay-stale"' in row and "stale-figure" in row and ">stale<" in row
    assert "no heartbeat" in row

    heartbeat(seeded, seconds_ago=1)  # beating again: a plain, healthy row
    html = viewer.get("/").text
    assert 'data-kind="stale-relay"' not in band(html)
    row = html[html.index('<tr data-service="orchestrator"') :]
    assert "relay-stale" not in row[: row.index("</tr>")]


def test_an_overdue_step_timeout_and_a_held_sync_request_need_attention(
    make_client: Any, seeded: Seeded
) -> None:
    async def overdue(engine: AsyncEngine) -> None:
        now = datetime.now(UTC)
        async with engine.begin() as conn:
            await conn.execute(
                sa.insert(timers).values(
                    saga_id=seeded.waiting,
                    kind="timeout",
                    step="charge",
                    attempt=1,
                    due_at=now - timedelta(minutes=5),
                    created_at=now - timedelta(minutes=6),
                )
            )

    seeded.run(overdue)
    client = make_client("vera", sync_wait_s=0.001)
    entries = band(client.get("/").text)
    assert 'data-kind="stuck"' in entries and f"/sagas/{seeded.waiting}" in entries
    assert 'data-kind="held-sync"' in entries and "/sagas?q=req-held-open-1" in entries


def test_the_band_is_empty_when_all_is_well(viewer: TestClient, seeded: Seeded) -> None:
    async def handled(engine: AsyncEngine) -> None:
        async with engine.begin() as conn:
            await conn.execute(sa.delete(saga_steps).where(saga_steps.c.saga_id == seeded.failed))
            await conn.execute(
                sa.delete(saga_instances).where(saga_instances.c.id == seeded.failed)
            )

    seeded.run(handled)
    heartbeat(seeded, seconds_ago=1)
    html = viewer.get("/").text
    entries = band(html)
    assert 'data-count="0"' in entries and "attention-entry" not in entries
    assert "Nothing needs attention" in entries


# --- an outage, in real Chromium against `sagaway dev` ----------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
STALE_AFTER_S = 3.0  # the console setting, low so the test need not wait 30 s


def children(pid: int) -> list[int]:
    return [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]


def participants_of(dev: RoleProcess) -> int:
    [pid] = [
        pid
        for pid in children(dev.pid)
        if b"sagaway.dev.participants" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    return pid


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoleProcess]:
    """`sagaway dev` with relays beating every 0.5 s, heartbeats stale after 3 s, and the
    overview refreshing every second."""
    root = tmp_path_factory.mktemp("attention-dev")
    system = dev_process(
        root / "data",
        root,
        relay_heartbeat_interval_s=0.5,
        console__relay_stale_after_s=STALE_AFTER_S,
        console__refresh_interval_s=1.0,
    )
    try:
        yield start_dev(system)
    finally:
        system.stop()


def post_order(base: str, n: int) -> None:
    body = {
        "customer_id": f"c-{n % 5 + 1}",
        "items": [{"sku": f"sku-{n % 5 + 1}", "quantity": 1}],
        "total_cents": 1000,
        "country": "FR",
    }
    answer = httpx.post(
        f"{base}/api/v1/orders", json=body, headers={"Prefer": "respond-async"}, timeout=30
    )
    assert answer.status_code == 202, answer.text


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
def test_a_stopped_participant_fills_the_band_within_a_refresh_and_clears_after(
    dev: RoleProcess,
) -> None:
    from playwright.sync_api import sync_playwright

    credentials = tomllib.loads((dev_data_dir(dev) / "console-credentials").read_text())
    base = dev.url or ""
    participants = participants_of(dev)
    blocked: list[str] = []
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = chromium.new_context(viewport={"width": 1440, "height": 1000}).new_page()
            page.set_default_timeout(60_000)
            page.on(
                "console",
                lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None,
            )
            page.goto(base + "/console/")
            page.wait_for_url("**/login?next=*")
            page.fill("input[name=username]", credentials["user"])
            page.fill("input[name=password]", credentials["password"])
            page.click("button[type=submit]")
            page.wait_for_selector("h1:has-text('Overview')")
            for n in range(4):
                post_order(base, n)
            # All well once every relay has beaten: the band is there, and empty.
            page.wait_for_selector("#attention.attention-clear")
            page.evaluate("window.__notReloaded = true")

            os.kill(participants, signal.SIGSTOP)
            try:
                for n in range(4, 8):
                    post_order(base, n)
                # The participants' relays stop beating: once a relay's heartbeat is older than
                # the threshold, the next refresh names it, and greys its lag. Each relay beats
                # on its own schedule, so each goes stale up to an interval after the others.
                stale = "#attention li[data-kind=stale-relay]"
                page.wait_for_selector(f"{stale} >> text=payments: relay heartbeat stale")
                for service in ("inventory", "payments", "shipping"):
                    page.wait_for_selector(f"{stale}:has-text('{service}:')")
                    assert page.locator(f"{stale}:has-text('{service}:')").count() == 1
                    row = page.locator(f"#outbox-lag tr[data-service='{service}']")
                    assert row.get_attribute("data-stale") == "true"
                    assert row.locator(".stale-pill").first.inner_text() == "stale"
                assert page.locator("#attention.attention-on h2").is_visible()
                assert page.evaluate("window.__notReloaded") is True  # htmx, no reload
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "13-overview-outage.png"), full_page=True)
            finally:
                os.kill(participants, signal.SIGCONT)
            # Beating again: the entries go, the lag figures are plain again.
            page.wait_for_selector("#attention li[data-kind=stale-relay]", state="detached")
            page.wait_for_selector("#attention.attention-clear")  # the held orders completed
            assert page.locator("#outbox-lag tr[data-stale]").count() == 0
            page.screenshot(path=str(ARTIFACTS / "14-overview-recovered.png"), full_page=True)
        finally:
            chromium.close()
    assert blocked == [], blocked


def test_consumer_lag_that_only_grows_over_the_window_needs_attention() -> None:
    trend = LagTrend(window_s=60)
    for s, (a, b) in enumerate([(0, 5), (2, 4), (2, 9), (7, 3), (9, 8)]):
        when = NOW + timedelta(seconds=20 * s)  # 0, 20, 40, 60, 80 s
        trend.observe(when, [("t.requests", "grows", a), ("t.requests", "wobbles", b)])
    end = NOW + timedelta(seconds=80)
    # The baseline is the newest sample at least 60 s old (20 s: lag 2); `wobbles` went down.
    assert trend.growing(end) == [LagGrowth("t.requests", "grows", 60.0, 2, 9)]
    [entry] = attention_entries(figures(growing_lag=trend.growing(end), outboxes=[]), LIMITS, end)
    assert entry.kind == "lag-growing" and entry.fragment == "consumer-lag"
    assert "grew from 2 to 9 records" in entry.text


def test_consumer_lag_is_not_called_growing_before_a_whole_window_or_when_flat() -> None:
    trend = LagTrend(window_s=60)
    trend.observe(NOW, [("t", "g", 1), ("t", "flat", 4)])
    trend.observe(NOW + timedelta(seconds=30), [("t", "g", 50), ("t", "flat", 4)])
    assert trend.growing(NOW + timedelta(seconds=30)) == []  # not a whole window yet
    trend.observe(NOW + timedelta(seconds=61), [("t", "g", 60), ("t", "flat", 4)])
    assert [g.group for g in trend.growing(NOW + timedelta(seconds=61))] == ["g"]
    trend.observe(NOW + timedelta(seconds=70), [])  # a group no longer listed is forgotten
    assert trend.samples == {}
