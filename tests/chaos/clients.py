"""The chaos suite's clients: a deterministic plan of place-order requests (≈10% shipped to
Antarctica, which shipping refuses; ≈10% above their customer's credit, which payments refuses;
the rest must complete), and HTTP clients that place them through whichever gateway answers.

A client whose connection drops (its gateway was killed) or that gets a 5xx sends the same body
again with the same Idempotency-Key to the next gateway, so a request is accepted at most once
however many times it is sent. Each client records what it saw; the record is the truth the
system's own figures are checked against.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

TERMINAL = {"completed", "compensated", "failed"}
PLACE_ORDER = "/api/v1/sagas/place-order"
RETRYABLE_STATUS = {500, 502, 503, 504}


@dataclass(frozen=True)
class PlannedOrder:
    """One request to send: its body, its idempotency key and the outcome it must reach."""

    index: int
    kind: str  # "ok" | "antarctica" | "over-credit"
    key: str
    body: dict[str, Any]
    sync: bool  # held (`Prefer: wait=…`) rather than 202 at once

    @property
    def expected(self) -> str:
        return "completed" if self.kind == "ok" else "compensated"


def plan_orders(
    count: int, seed: int, *, regular_customers: int, credit_cents: int, skus: int
) -> list[PlannedOrder]:
    """`count` orders. Regular customers c-1 … c-<regular_customers> never run out of credit
    (totals stay far below it); each over-credit order has a customer of its own
    (c-<regular_customers + 1> …) and a total above that customer's whole credit, so its rejection
    does not depend on the order in which sagas run."""
    rng = random.Random(seed)
    orders: list[PlannedOrder] = []
    over_credit = 0
    for index in range(count):
        roll = rng.random()
        kind = "antarctica" if roll < 0.1 else "over-credit" if roll < 0.2 else "ok"
        lines = {f"sku-{rng.randint(1, skus)}": rng.randint(1, 5) for _ in range(rng.randint(1, 3))}
        if kind == "over-credit":
            over_credit += 1
            customer = f"c-{regular_customers + over_credit}"
            total = credit_cents + 1 + rng.randint(0, 10_000)
        else:
            customer = f"c-{rng.randint(1, regular_customers)}"
            total = rng.randint(100, 5_000)
        body = {
            "customer_id": customer,
            "items": [{"sku": sku, "quantity": quantity} for sku, quantity in lines.items()],
            "total_cents": total,
            "country": "AQ" if kind == "antarctica" else rng.choice(["FR", "US", "DE", "JP"]),
        }
        orders.append(
            PlannedOrder(index, kind, f"chaos-{seed}-{index}", body, sync=rng.random() < 0.2)
        )
    return orders


def customers_needed(orders: list[PlannedOrder], regular_customers: int) -> int:
    return regular_customers + sum(1 for order in orders if order.kind == "over-credit")


@dataclass
class OrderRecord:
    """What one client saw: whether (and as which request) its order was accepted, how many
    sends it took, and — after the drain — the final status at the status URL."""

    order: PlannedOrder
    request_id: str | None = None
    accepted: bool = False
    sends: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    final: dict[str, Any] | None = None

    @property
    def final_status(self) -> str | None:
        return None if self.final is None else str(self.final.get("status"))


class Clients:
    """Sends the planned orders through the given gateways (a callable, as the set may change)."""

    def __init__(self, gateway_urls: list[str], *, give_up_after_s: float = 90.0) -> None:
        self.gateway_urls = gateway_urls
        self.give_up_after_s = give_up_after_s
        self.records: list[OrderRecord] = []
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(30.0, connect=2.0),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        )

    async def close(self) -> None:
        await self._http.aclose()

    def _gateway(self, n: int) -> str:
        return self.gateway_urls[n % len(self.gateway_urls)]

    async def place(self, order: PlannedOrder) -> OrderRecord:
        """Send until a gateway accepts (2xx, or 409: accepted and already compensated)."""
        record = OrderRecord(order)
        self.records.append(record)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.give_up_after_s
        headers = {"Idempotency-Key": order.key}
        headers["Prefer"] = "wait=5" if order.sync else "respond-async"
        turn = order.index
        while loop.time() < deadline:
            record.sends += 1
            url = self._gateway(turn) + PLACE_ORDER
            turn += 1
            try:
                response = await self._http.post(url, json=order.body, headers=headers)
            except httpx.TransportError as exc:
                record.errors[type(exc).__name__] += 1
                await asyncio.sleep(0.2)
                continue
            if response.status_code in (200, 202, 409):
                body = response.json()
                record.request_id = str(body["id"])
                record.accepted = True
                return record
            record.errors[f"http-{response.status_code}"] += 1
            if response.status_code not in RETRYABLE_STATUS:
                return record  # a client error is final: the request is not accepted
            await asyncio.sleep(0.3)
        return record

    async def place_all(self, orders: list[PlannedOrder], *, over_s: float) -> None:
        """Start the orders at an even pace over `over_s` seconds; wait until all are placed."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        tasks = []
        for n, order in enumerate(orders):
            delay = began + over_s * n / max(len(orders), 1) - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.place(order)))
        await asyncio.gather(*tasks)

    async def status(self, record: OrderRecord, turn: int) -> dict[str, Any] | None:
        """The request's document at its status URL (any gateway), or None if none answered."""
        assert record.request_id is not None
        for attempt in range(len(self.gateway_urls)):
            url = f"{self._gateway(turn + attempt)}/api/v1/requests/{record.request_id}"
            try:
                response = await self._http.get(url, timeout=5.0)
            except httpx.TransportError:
                continue
            if response.status_code == 200:
                return response.json()  # type: ignore[no-any-return]
        return None

    async def drain(self, *, timeout_s: float, echo: Any = print) -> float:
        """Poll the status URL of every accepted request until all are terminal; print progress.
        Returns the seconds it took; raises AssertionError naming the stragglers at the timeout."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        last_echo = 0.0
        pending = [r for r in self.records if r.accepted]
        turn = 0
        semaphore = asyncio.Semaphore(20)
        while True:

            async def check(record: OrderRecord, n: int) -> None:
                async with semaphore:
                    document = await self.status(record, n)
                if document is not None:
                    record.final = document

            await asyncio.gather(*(check(r, turn + n) for n, r in enumerate(pending)))
            turn += 1
            pending = [r for r in pending if r.final_status not in TERMINAL]
            now = loop.time()
            if not pending:
                echo(f"chaos: drained in {now - began:.1f}s")
                return now - began
            if now - last_echo >= 5:
                last_echo = now
                echo(f"chaos: drain {now - began:.0f}s, {len(pending)} request(s) not terminal")
            if now - began > timeout_s:
                sample = [(r.order.key, r.request_id, r.final_status) for r in pending[:10]]
                raise AssertionError(
                    f"{len(pending)} accepted request(s) not terminal after {timeout_s}s: {sample}"
                )
            await asyncio.sleep(1.0)
