"""Take the console screenshots docs/console.md shows (docs/img/console-*.png): start
`sagaway dev` in a data dir of its own, place orders through its API (some complete, two are
compensated, one waits on stopped participants until an operator retries it), send one record
no participant can read so that it becomes a dead letter, and photograph the pages in Debian's
Chromium (/usr/bin/chromium, headless) at 1280x800.

    .venv/bin/python scripts/console_screenshots.py [--out docs/img]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import tomllib
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test harness starts `sagaway dev` as the tests do

from sagaway.messaging.embedded import EmbeddedTransport  # noqa: E402
from sagaway.messaging.records import Record  # noqa: E402
from sagaway.settings.composed import load_settings  # noqa: E402
from tests.harness.dev import dev_data_dir, dev_process, start_dev  # noqa: E402
from tests.harness.processes import RoleProcess  # noqa: E402
from tests.harness.waiting import eventually_sync  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
WIDTH, HEIGHT = 1280, 800


def order(n: int, *, country: str = "FR", total_cents: int = 1000) -> dict[str, Any]:
    return {
        "customer_id": f"c-{n % 5 + 1}",
        "items": [{"sku": f"sku-{n % 5 + 1}", "quantity": 1 + n % 2}],
        "total_cents": total_cents,
        "country": country,
    }


def place(base: str, body: dict[str, Any]) -> str:
    """POST an order without waiting for it; the saga id (the request's id)."""
    answer = httpx.post(
        f"{base}/api/v1/orders", json=body, headers={"Prefer": "respond-async"}, timeout=30
    )
    answer.raise_for_status()
    return str(answer.json()["id"])


def status_of(base: str, request_id: str) -> str:
    answer = httpx.get(f"{base}/api/v1/requests/{request_id}", timeout=10)
    answer.raise_for_status()
    return str(answer.json().get("status"))


def wait_final(base: str, request_ids: list[str]) -> None:
    eventually_sync(
        lambda: all(status_of(base, r) != "accepted" for r in request_ids),
        timeout_s=90,
        what="every order to finish",
    )


def participants_pid(dev: RoleProcess) -> int:
    """The second process `sagaway dev` starts: the example's participants."""
    for task in Path(f"/proc/{dev.pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if b"sagaway.dev.participants" in Path(f"/proc/{child}/cmdline").read_bytes():
                return int(child)
    raise RuntimeError("sagaway dev has no participants process")


def poison_payments(data_dir: Path) -> None:
    """A record on payments.requests that is not a message: payments dead-letters it."""

    async def produce() -> None:
        transport = EmbeddedTransport(load_settings(data_dir=data_dir).messaging)
        await transport.start()
        try:
            await transport.produce([Record(
                topic="payments.requests",
                value=b'{"customer_id": "c-1", "amount_cents": ',
                key=str(uuid.uuid4()).encode(),
                headers=(("message-id", str(uuid.uuid4()).encode()),),
            )])
        finally:
            await transport.close()

    asyncio.run(produce())


def shoot(page: Any, out: Path, name: str) -> None:
    path = out / f"console-{name}.png"
    page.screenshot(path=str(path))
    print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
          f" ({path.stat().st_size // 1024} KB)")


def photograph(dev: RoleProcess, out: Path, compensated: str) -> None:
    from playwright.sync_api import sync_playwright

    base = dev.url or ""
    credentials = tomllib.loads((dev_data_dir(dev) / "console-credentials").read_text())
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            page.set_default_timeout(60_000)
            page.goto(f"{base}/console/login")
            page.fill("input[name=username]", credentials["user"])
            page.fill("input[name=password]", credentials["password"])
            page.click("button[type=submit]")
            page.wait_for_selector("h1:has-text('Overview')")

            # One order held at its first step while the participants are stopped; an operator
            # retries that step, then the participants come back and the saga completes.
            participants = participants_pid(dev)
            os.kill(participants, signal.SIGSTOP)
            try:
                held = place(base, order(7))
                page.goto(f"{base}/console/sagas/{held}")
                page.wait_for_selector("#actions a:has-text('Retry')")
                page.wait_for_timeout(3000)  # long enough to see on the timeline
                page.click("#actions a:has-text('Retry')")
                page.click("#confirm")
                page.wait_for_selector("#timeline tr.operator-action")
            finally:
                os.kill(participants, signal.SIGCONT)
            wait_final(base, [held])

            page.goto(f"{base}/console/")
            page.wait_for_selector("#attention")
            shoot(page, out, "overview")
            page.goto(f"{base}/console/sagas")
            shoot(page, out, "sagas")
            page.goto(f"{base}/console/sagas/{compensated}")
            shoot(page, out, "saga")
            page.goto(f"{base}/console/sagas/{held}")
            page.evaluate("document.querySelector('#timeline').closest('section')"
                          ".scrollIntoView({block: 'start'})")
            shoot(page, out, "saga-timeline")
            page.goto(f"{base}/console/dead-letters")
            page.wait_for_selector("main table, main .muted")
            shoot(page, out, "dead-letters")
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        sys.exit("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="console-screenshots-") as tmp:
        dev = dev_process(Path(tmp) / "data", Path(tmp) / "logs",
                          console__refresh_interval_s=2.0)
        start_dev(dev)
        try:
            base = dev.url or ""
            done = [place(base, order(n)) for n in range(12)]
            compensated = place(base, order(6, country="AQ"))  # shipping refuses: undo the rest
            declined = place(base, order(8, total_cents=10_000_000))  # too little credit
            poison_payments(dev_data_dir(dev))
            wait_final(base, [*done, compensated, declined])
            photograph(dev, args.out, compensated)
        finally:
            dev.stop()


if __name__ == "__main__":
    main()
