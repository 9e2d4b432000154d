"""The README's "Running on Kafka and PostgreSQL", run as written: its blocks pasted one after
another into one bash, against a PostgreSQL server and a Kafka-protocol broker (tansu) of this
test's own (the section's database, slot and topic names are fixed, so they share no server with
other tests); orders through both gateways, the console's login, the relay's lag, a clean audit,
and nothing left running afterwards."""

from __future__ import annotations

import json
import random
import re
import socket
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deployment.pasted_shell import PastedShell
from tests.deployment.readme import ROOT, Shape, bash_blocks, examples, section
from tests.harness.processes import base_environment
from tests.harness.waiting import eventually_sync
from tests.servers.postgres import PostgresServer
from tests.servers.tansu import TansuServer

pytestmark = pytest.mark.slow

SECTION = "Running on Kafka and PostgreSQL"
ROLES = {
    *(f"relay-{s}" for s in ("orchestrator", "gateway", "inventory", "payments", "shipping")),
    "orchestrator-1",
    "orchestrator-2",
    "inventory",
    "payments",
    "shipping",
    "gateway-1",
    "gateway-2",
    "console",
}
PORT_OFFSETS = (0, 1, 10, 11, 20)  # the section's gateways, their /metrics, the console
TERMINAL = {"completed", "compensated", "failed"}
ORDERS_PER_GATEWAY = 8  # every 4th to Antarctica: shipping refuses it and the saga compensates


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[str, str]]:
    """(KAFKA, PG) as the section wants them: a bootstrap address, and a server URL without a
    database."""
    with TansuServer() as broker, PostgresServer() as postgres:
        yield broker.bootstrap, postgres.async_url("").rstrip("/")


def free_base_port() -> int:
    """A PORT for the section whose every port (PORT + each offset) is free now."""
    for _ in range(200):
        base = random.randrange(20000, 30000)
        try:
            for offset in PORT_OFFSETS:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base
    raise AssertionError("no free PORT for the section's ports")


def order(n: int) -> dict[str, Any]:
    return {
        "customer_id": f"c-{100 + n}",
        "items": [{"sku": f"sku-{1 + n % 20}", "quantity": 1 + n % 3}],
        "total_cents": 100 * (n + 1),
        "country": "AQ" if n % 4 == 3 else "DE",
    }


def place(base: str, body: dict[str, Any]) -> str:
    """A sync POST of the example route; when the wait runs out (202), its status URL until the
    saga has ended. How the saga ended."""
    with httpx.Client(base_url=base, timeout=60) as client:
        answer = client.post("/api/v1/orders", json=body)
        if answer.status_code == 409:
            return str(answer.json()["saga_status"])
        assert answer.status_code in (200, 202), answer.text
        if answer.status_code == 200:
            return str(answer.json()["status"])
        location = answer.headers["location"]

        def ended() -> str | None:
            status = str(client.get(location).json()["status"])
            return status if status in TERMINAL else None

        return eventually_sync(ended, timeout_s=120, what=f"{location} to end", interval_s=0.5)


def log_in(console: str, password: str) -> httpx.Response:
    """Log in as the section's admin over plain HTTP; the overview page."""
    with httpx.Client(base_url=console, timeout=30, follow_redirects=True) as client:
        form = client.get("/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert form.status_code == 200 and csrf, form.text
        return client.post(
            "/login",
            data={"username": "admin", "password": password, "csrf_token": csrf.group(1)},
        )


_RECORD = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (?P<level>[A-Z]+) (?P<logger>\S+) ", re.M
)


# Errors aiokafka logs and recovers from by itself: a commit that meets a rebalance while the
# second orchestrator joins; and the console's consumer-lag panel, whose group-offset request
# tansu answers in a form aiokafka cannot decode (the panel then shows no lag; Kafka answers).
TOLERATED = {
    ("*", "aiokafka.consumer.group_coordinator"),
    ("console.log", "aiokafka.conn"),
}


def troubles_in(log: Path) -> list[str]:
    """The first line of every error record (or traceback) in a role's log."""
    text = log.read_text(errors="replace")
    starts = [m.start() for m in _RECORD.finditer(text)]
    records = [text[a:b] for a, b in zip([0, *starts], [*starts, len(text)], strict=True)]
    found = []
    for record in filter(None, records):
        head = _RECORD.match(record)
        level, logger = (head.group("level"), head.group("logger")) if head else ("", "")
        if {("*", logger), (log.name, logger)} & TOLERATED:
            continue
        if level in ("ERROR", "CRITICAL") or "Traceback" in record:
            found.append(f"{log.name}: {record.splitlines()[0]}")
    return found


def logs_of(logs: Path) -> str:
    return "\n".join(
        f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
        for path in sorted(logs.glob("*.log"))
    )


@pytest.mark.timeout(900)
def test_readme_deployment_runs_as_written(servers: tuple[str, str], tmp_path: Path) -> None:
    """Only what the section names is set (KAFKA, PG, PORT, LOGS; and the launcher's venv)."""
    text = section(SECTION)
    setup, start, try_orders, look, stop = bash_blocks(text)
    [shown_orders] = [e.output for e in examples(text) if e.command == try_orders]
    kafka, pg = servers
    port, logs = free_base_port(), tmp_path / "logs"
    env = base_environment()
    env.update(KAFKA=kafka, PG=pg, PORT=str(port), LOGS=str(logs))
    env["SAGAWAY_VENV"] = sys.prefix  # bin/sagaway's venv: the one these tests run in
    shell = PastedShell(ROOT, env, tmp_path / "shell.log")
    try:
        seeded = shell.run(setup, timeout_s=300)
        assert "/payments" in seeded and "/inventory" in seeded, seeded  # where it wrote

        started = shell.run(start, timeout_s=300)
        assert "does not answer" not in started, started
        pids = {path.stem: int(path.read_text()) for path in logs.glob("*.pid")}
        assert set(pids) == ROLES
        assert set(pids.values()) <= set(shell.group()), "a role exited after starting"
        [password] = re.findall(r"user admin, password (\S+)", started)

        gateways = [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 10}"]
        sent = [(gateways[n % 2], order(n)) for n in range(2 * ORDERS_PER_GATEWAY)]
        with ThreadPoolExecutor(8) as pool:
            ended = list(pool.map(lambda job: place(*job), sent))
        assert Counter(ended) == {"completed": 12, "compensated": 4}

        overview = log_in(f"http://127.0.0.1:{port + 20}", password)
        assert overview.status_code == 200 and "/login" not in str(overview.url), overview.text

        tried = shell.run(try_orders, timeout_s=120)
        assert not Shape.of(shown_orders).mismatches(Shape.of(tried)), tried

        looked = shell.run(look, timeout_s=120)
        lines = looked.strip().splitlines()
        [lag] = [line for line in lines if line.startswith("{")]
        audit = lines[lines.index(lag) + 1 :]
        relay = json.loads(lag)
        assert relay["service"] == "payments" and relay["database"].endswith("/payments"), lag
        assert audit[-1] == "no violations", looked
        assert "orders completed: 14" in audit and "orders compensated: 4" in audit, looked

        relaying = {p.stem for p in logs.glob("*.log") if " sagaway.relay" in p.read_text()}
        assert relaying == {name for name in ROLES if name.startswith("relay-")}
        # The broker is tansu: each process that produces says once that it uses the plain
        # producer (and carries on, as the orders show).
        warned = {
            p.stem: p.read_text().count("cannot give producer ids") for p in logs.glob("*.log")
        }
        assert {name: n for name, n in warned.items() if name != "console"} == dict.fromkeys(
            ROLES - {"console"}, 1
        ), warned
        troubles = [trouble for path in sorted(logs.glob("*.log")) for trouble in troubles_in(path)]
        assert not troubles, "\n".join(troubles)

        shell.run(stop, timeout_s=30)
        eventually_sync(
            lambda: not set(pids.values()) & set(shell.group()),
            timeout_s=30,
            what=lambda: f"the roles to stop: {set(pids.values()) & set(shell.group())}",
        )
    except BaseException:
        print(f"--- shell\n{(tmp_path / 'shell.log').read_text(errors='replace')[-6000:]}")
        print(logs_of(logs))
        raise
    finally:
        shell.close()
    assert shell.group() == []
