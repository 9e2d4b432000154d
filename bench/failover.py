"""Failover: kill -9 one of two instances of a role on PostgreSQL + tansu, and time the takeover.

Starts the stack of bench/e2e.py (`pg`) with a second instance of `--role` (orchestrator by
default, a participant: inventory, payments, shipping, or the gateway), sends sync place-order
requests at a steady rate, kills one instance with SIGKILL, and reports:

- `takeover_s`: from the kill to the survivor's log line saying it owns the killed instance's
  partitions too (the consumer group's rebalance; for the gateway, its replier's group, which
  stores the final replies of the requests held on every instance);
- `worst_delay_s`: the longest any request sent around the kill waited for its answer;
- the latency of the requests before the kill, for comparison.

With `--role gateway` the orders go to both gateways in turn, as a load balancer would send them,
and a request whose gateway dies (refused, or its connection dropped while held) is sent again to
the other one with the same Idempotency-Key, as a client should: its delay counts from the first
send.

The group settings are the ones the roles run with (`SAGAWAY_SESSION_TIMEOUT_MS`,
`SAGAWAY_HEARTBEAT_INTERVAL_MS`, `SAGAWAY_REBALANCE_TIMEOUT_MS`): set them in the environment to
try others. Prints progress on stderr and one JSON line on stdout.

    .venv/bin/python bench/failover.py                         # orchestrator, 3 kills
    .venv/bin/python bench/failover.py --role inventory --kills 1
    .venv/bin/python bench/failover.py --role gateway --kills 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e import DistributedStack  # noqa: E402
from processes import (  # noqa: E402
    ORDER_PATH,
    SAGAWAY,
    TANSU_ENV,
    emit,
    free_port,
    log,
    machine,
    order_body,
    wait_http,
)

OWNS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*now owns (\d+) partition")
# The orchestrator's own line, every 0.5-2 s (for code older than the consumer's line above).
OWNS_LIST = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*owns partitions: (.*)$")


# The group whose partitions a killed instance's survivor must take over: the gateway's other
# group (callback intake) rebalances too, but held requests wait on the replier.
WATCHED_GROUP = {"gateway": "gateway.replier"}


def role_args(role: str, port: int = 0) -> list[str]:
    if role == "orchestrator":
        return [SAGAWAY, "orchestrator"]
    if role == "gateway":
        return [SAGAWAY, "gateway", "--host", "127.0.0.1", "--port", str(port),
                "--internal-port", "0"]  # fmt: skip
    return [SAGAWAY, "participant", role, "--no-relay"]


def role_env(stack: DistributedStack, role: str) -> dict[str, str]:
    env = {**stack.env(role), **GROUP_ENV}
    if role == "gateway":
        env["SAGAWAY_GATEWAY_RUN_RELAY"] = "false"  # the stack's relay-gateway publishes
    return env


def ownership(log_path: Path, group: str | None = None) -> list[tuple[float, int]]:
    """(time, partitions owned) for each rebalance the instance logged (of `group` only, if
    given)."""
    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        if group is not None and f"group {group} " not in line:
            continue
        match = OWNS.match(line)
        listed = None if match else OWNS_LIST.match(line)
        if match or listed:
            found = match or listed
            assert found is not None
            when = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            count = int(found.group(2)) if match else len(found.group(2).split(", "))
            out.append((when, count))
    return out


class Load:
    """Sync orders at a steady rate, to the gateways of `urls` in turn (the list may change while
    it runs); keeps (sent, answered, status) per request. A request whose gateway is gone is sent
    again, with the same Idempotency-Key, to the next gateway."""

    def __init__(self, urls: list[str], rate: float) -> None:
        self.urls = urls
        self.rate = rate
        self.results: list[tuple[float, float, int]] = []
        self.resent = 0
        self._task: asyncio.Task[None] | None = None

    async def _one(self, session: aiohttp.ClientSession, i: int) -> None:
        sent = time.time()
        deadline = sent + 90
        key = uuid.uuid4().hex
        status = -1
        attempt = 0
        while time.time() < deadline:
            url = self.urls[(i + attempt) % len(self.urls)]
            try:
                async with session.post(
                    url + ORDER_PATH,
                    data=order_body(i),
                    headers={
                        "Content-Type": "application/json",
                        "Prefer": "wait=60",
                        "Idempotency-Key": key,
                    },
                    timeout=aiohttp.ClientTimeout(total=max(1.0, deadline - time.time())),
                ) as resp:
                    await resp.read()
                    status = resp.status
                break
            except TimeoutError:
                break
            except aiohttp.ClientError:
                # Refused or dropped: that gateway is gone. A client tries another.
                attempt += 1
                self.resent += 1
                await asyncio.sleep(0.05)
        self.results.append((sent, time.time(), status))

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            tasks: set[asyncio.Task[None]] = set()
            i = 0
            try:
                while True:
                    i += 1
                    task = asyncio.create_task(self._one(session, i))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    await asyncio.sleep(1 / self.rate)
            except asyncio.CancelledError:
                if tasks:
                    await asyncio.wait(tasks, timeout=90)
                raise

    def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


async def one_kill(
    stack: DistributedStack, role: str, n: int, settle_s: float, load: Load
) -> dict[str, Any]:
    """Start a second instance, let the group settle, kill the older one; figures of the kill.
    A second gateway joins `load`'s gateways once it answers, and the killed one leaves them
    after the kill (until then the load sends to it, and its requests are sent again)."""
    first = stack.role(role)
    port = free_port()
    second = stack.roles.spawn(f"{role}-{n}", role_args(role, port), role_env(stack, role))
    second_url = f"http://127.0.0.1:{port}"
    if role == "gateway":
        await wait_http(second_url + "/readyz", 60, stack.roles)
        load.urls.append(second_url)
    log(f"{role}: second instance started (pid {second.pid}); settling {settle_s:.0f} s")
    await asyncio.sleep(settle_s)
    group = WATCHED_GROUP.get(role)
    owned_before = ownership(second.log_path, group)
    log(f"{role}: survivor owns {owned_before[-1][1] if owned_before else 0} partition(s); kill -9")
    killed_at = time.time()
    os.kill(first.pid, signal.SIGKILL)
    first.process.wait()
    deadline = time.monotonic() + 60
    takeover: float | None = None
    while time.monotonic() < deadline:
        after = [(t, c) for t, c in ownership(second.log_path, group) if t >= killed_at - 0.01]
        if after and after[-1][1] > (owned_before[-1][1] if owned_before else 0):
            takeover = after[-1][0] - killed_at
            break
        await asyncio.sleep(0.1)
    log(f"{role}: taken over after {takeover if takeover is None else round(takeover, 2)} s")
    if role == "gateway":
        load.urls[:] = [second_url]
    # The survivor becomes the instance the next kill's second instance joins.
    stack.roles.roles.remove(first)
    second.name = role
    return {"killed_at": killed_at, "takeover_s": None if takeover is None else round(takeover, 3)}


GROUP_ENV: dict[str, str] = {}


async def run(role: str, rate: float, kills: int, settle_s: float) -> dict[str, Any]:
    stack = DistributedStack()
    for name in ("SAGAWAY_SESSION_TIMEOUT_MS", "SAGAWAY_HEARTBEAT_INTERVAL_MS",
                 "SAGAWAY_REBALANCE_TIMEOUT_MS"):  # fmt: skip
        if name in os.environ:
            GROUP_ENV[name] = os.environ[name]
    GROUP_ENV["SAGAWAY_LOG_LEVEL"] = "INFO"
    try:
        await stack.start()
        # The first instance restarted with the same settings as the second and INFO logs.
        old = stack.role(role)
        old.stop()
        stack.roles.roles.remove(old)
        stack.roles.spawn(role, role_args(role, stack.port), role_env(stack, role))
        if role == "gateway":
            await wait_http(stack.url + "/readyz", 60, stack.roles)
        await asyncio.sleep(settle_s)
        load = Load([stack.url], rate)
        load.start()
        await asyncio.sleep(5)
        events = []
        for n in range(2, kills + 2):
            events.append(await one_kill(stack, role, n, settle_s, load))
            await asyncio.sleep(10)
        await load.stop()
    finally:
        stack.stop()
    before = sorted(a - s for s, a, st in load.results if st == 200 and s < events[0]["killed_at"])
    for event in events:
        around = [
            (a - s, st)
            for s, a, st in load.results
            if event["killed_at"] - 2 <= s <= event["killed_at"] + 8
        ]
        event["worst_delay_s"] = round(max((d for d, _ in around), default=0.0), 3)
        worst = sorted(
            ((a - s, s - event["killed_at"]) for s, a, st in load.results
             if event["killed_at"] - 2 <= s <= event["killed_at"] + 8),
            reverse=True,
        )[:5]  # fmt: skip
        event["worst_requests"] = [
            {"delay_s": round(d, 3), "sent_after_kill_s": round(at, 3)} for d, at in worst
        ]
        event["errors_around"] = sum(1 for _, st in around if st != 200)
        log(
            f"kill at +{event['killed_at'] - events[0]['killed_at']:.0f} s: takeover "
            f"{event['takeover_s']} s, worst held request {event['worst_delay_s']} s, "
            f"{event['errors_around']} errors"
        )
    errors = sum(1 for _, _, st in load.results if st != 200)
    return {
        "role": role,
        "rate_per_s": rate,
        "settings": {**{k: v for k, v in TANSU_ENV.items()}, **GROUP_ENV},
        "requests": len(load.results),
        "resent_to_another_gateway": load.resent,
        "errors": errors,
        "p50_before_ms": round(before[len(before) // 2] * 1000, 1) if before else None,
        "kills": events,
        "worst_takeover_s": max((e["takeover_s"] or 99.0) for e in events),
        "worst_delay_s": max(e["worst_delay_s"] for e in events),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--role", default="orchestrator", choices=["orchestrator", "inventory", "payments",
                                                    "shipping", "gateway"],
    )  # fmt: skip
    parser.add_argument("--rate", type=float, default=10.0, help="orders per second")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--settle", type=float, default=8.0)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    info = machine()
    figures = asyncio.run(run(args.role, args.rate, args.kills, args.settle))
    log(
        f"worst takeover {figures['worst_takeover_s']} s, worst held request "
        f"{figures['worst_delay_s']} s, {figures['errors']} errors of {figures['requests']}"
    )
    emit("failover", {**info, **figures}, save=not args.no_save)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
