"""`sagaway dev` as a user runs it: a real subprocess on a free port and a temporary data dir —
its banner and curl, sync/async/compensated orders, the console at /console, kill -9 in the
middle of accepted work and a restart that finishes it, and a clean Ctrl-C."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from sagaway.dev import DevError
from sagaway.dev.banner import dev_banner
from sagaway.dev.data_dir import data_files, reset_data_dir
from sagaway.dev.dev_settings import DEV_CONSUMER_MAX_RECORDS, dev_settings
from sagaway.settings.composed import load_settings
from tests.harness.dev import dev_data_dir, dev_process, start_dev
from tests.harness.processes import SAGAWAY, RoleProcess, base_environment
from tests.harness.waiting import eventually_sync
from tests.servers.postgres import free_port

TERMINAL = {"completed", "compensated", "failed"}


def order(country: str = "FR", customer: str = "c-2", sku: str = "sku-2") -> dict[str, Any]:
    return {
        "customer_id": customer,
        "items": [{"sku": sku, "quantity": 1}],
        "total_cents": 1000,
        "country": country,
    }


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoleProcess]:
    """One `sagaway dev` for the module: stdout (the banner) and stderr in files of their own."""
    root = tmp_path_factory.mktemp("dev")
    system = dev_process(root / "data", root)
    try:
        yield start_dev(system)
    finally:
        system.kill9()


def post_order(
    base: str, body: dict[str, Any], *, prefer_async: bool = False, timeout: float = 60
) -> httpx.Response:
    headers = {"Prefer": "respond-async"} if prefer_async else {}
    return httpx.post(f"{base}/api/v1/orders", json=body, headers=headers, timeout=timeout)


def wait_terminal(base: str, location: str, timeout_s: float = 60.0) -> dict[str, Any]:
    documents: list[dict[str, Any]] = [{}]

    def ended() -> dict[str, Any] | None:
        documents[0] = httpx.get(base + location, timeout=10).json()
        return documents[0] if documents[0]["status"] in TERMINAL else None

    return eventually_sync(
        ended, timeout_s=timeout_s, what=lambda: f"{location} to end ({documents[0].get('status')})"
    )


def curl_request(banner: str) -> httpx.Request:
    """The request the banner's curl command describes, parsed as a shell would."""
    start = banner.index("curl ")
    end = banner.index("\n\n", start)
    # A backslash-newline is a line continuation to the shell: it vanishes.
    words = shlex.split(banner[start:end].replace("\\\n", ""))
    assert words[0] == "curl"
    method, url, headers, body = "GET", None, {}, None
    args = iter(words[1:])
    for word in args:
        if word == "-X":
            method = next(args)
        elif word == "-H":
            name, _, value = next(args).partition(":")
            headers[name.strip()] = value.strip()
        elif word in ("-d", "--data", "--data-raw"):
            body = next(args)
            method = "POST" if method == "GET" else method
        elif word.startswith("-"):
            assert word in ("-sS", "-s", "-S", "-i"), f"unexpected curl option {word}"
        else:
            url = word
    assert url is not None
    return httpx.Request(method, url, headers=headers, content=body)


def metrics_url(dev: RoleProcess) -> str:
    """The internal listener's /metrics, as the banner prints it."""
    found = re.search(r"Metrics +(http://\S+/metrics) +\(internal listener\)", dev.output())
    assert found is not None, dev.output()
    return found.group(1)


def test_banner_lists_the_urls_and_console_login(dev: RoleProcess) -> None:
    banner = dev.output()
    paths = ("/api/v1/orders", "/api/v1/requests/{id}", "/console/", "/openapi.json")
    for path in paths:
        assert f"{dev.url}{path}" in banner, path
    assert not metrics_url(dev).startswith(f"{dev.url}/")
    assert "No API keys are configured" in banner
    login = re.search(r"user (\S+), password (\S+) ", banner)
    assert login is not None and login.group(1) == "admin"
    credentials = (dev_data_dir(dev) / "console-credentials").read_text()
    assert login.group(2) in credentials
    assert (dev_data_dir(dev) / "console-credentials").stat().st_mode & 0o077 == 0


def test_printed_curl_places_an_order_as_printed(dev: RoleProcess) -> None:
    request = curl_request(dev.output())
    assert request.url.host == "127.0.0.1" and request.url.port == dev.port
    with httpx.Client(timeout=60) as client:
        response = client.send(request)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"


def test_sync_order_completes_with_every_step_result(dev: RoleProcess) -> None:
    response = post_order(dev.url, order())
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["status"] == "completed"
    for key in ("reservation_id", "payment_id", "shipment_id"):
        assert document["result"][key], key


def test_order_shipping_refuses_is_compensated_and_answers_409(dev: RoleProcess) -> None:
    response = post_order(dev.url, order(country="AQ"))
    assert response.status_code == 409, response.text
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert problem["saga_status"] == "compensated"
    assert problem["step"] == "schedule-shipping"


def test_async_order_is_accepted_then_completes_at_its_status_url(dev: RoleProcess) -> None:
    response = post_order(dev.url, order(), prefer_async=True)
    assert response.status_code == 202, response.text
    location = response.headers["location"]
    assert location == f"/api/v1/requests/{response.json()['id']}"
    document = wait_terminal(dev.url, location)
    assert document["status"] == "completed"
    assert document["result"]["shipment_id"]


def test_input_the_saga_refuses_is_422_and_starts_nothing(dev: RoleProcess) -> None:
    response = post_order(dev.url, {**order(), "country": "France"})
    assert response.status_code == 422, response.text


def test_console_is_mounted_and_the_printed_login_works(dev: RoleProcess) -> None:
    login = re.search(r"user (\S+), password (\S+) ", dev.output())
    assert login is not None
    with httpx.Client(base_url=dev.url, timeout=30) as client:
        form = client.get("/console/login")
        assert form.status_code == 200
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        fields = {"username": login.group(1), "password": login.group(2)}
        if token:
            fields["csrf_token"] = token.group(1)
        answer = client.post("/console/login", data=fields)
        assert answer.status_code == 303, answer.text[:500]
        overview = client.get("/console/")
        assert overview.status_code == 200
        assert "login" not in str(overview.url)
        sagas = client.get("/console/sagas")
        assert sagas.status_code == 200 and "place-order" in sagas.text


def test_metrics_are_served_on_the_internal_listener_only_and_openapi_is_public(
    dev: RoleProcess,
) -> None:
    public = httpx.get(f"{dev.url}/metrics", timeout=10)
    assert public.status_code == 404
    assert "sagaway_" not in public.text
    metrics = httpx.get(metrics_url(dev), timeout=10)
    assert metrics.status_code == 200
    assert "sagaway_gateway_http_requests" in metrics.text
    assert "sagaway_orchestrator_sagas_started" in metrics.text
    # Started, the process left its start-up heap out of garbage collections.
    (frozen,) = re.findall(r"^sagaway_gc_frozen_objects ([0-9.e+]+)$", metrics.text, re.M)
    assert float(frozen) > 10_000
    openapi = httpx.get(f"{dev.url}/openapi.json", timeout=10).json()
    assert "/api/v1/orders" in openapi["paths"]


def participants_pids(dev_pid: int) -> list[int]:
    """The `sagaway.dev.participants` children of the dev process."""
    children = Path(f"/proc/{dev_pid}/task/{dev_pid}/children").read_text().split()
    return [
        int(pid)
        for pid in children
        if b"sagaway.dev.participants" in _cmdline(int(pid))
    ]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def wait_gone(pid: int, timeout_s: float = 20.0) -> None:
    eventually_sync(
        lambda: not _cmdline(pid) or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z",
        timeout_s=timeout_s,
        what=f"process {pid} to end",
    )


def test_participants_run_in_a_second_process_and_their_outbox_lag_is_in_metrics(
    dev: RoleProcess,
) -> None:
    assert dev.process is not None
    assert len(participants_pids(dev.pid)) == 1
    assert "the participants in a 2nd process" in dev.output()
    assert post_order(dev.url, order()).json()["status"] == "completed"

    def metrics() -> str | None:
        text = httpx.get(metrics_url(dev), timeout=10).text
        return text if 'sagaway_outbox_unpublished_rows{service="shipping"}' in text else None

    eventually_sync(
        metrics, timeout_s=30, what="the shipping outbox lag in /metrics", interval_s=0.5
    )


def test_a_killed_participants_process_is_started_again_and_orders_complete(
    dev: RoleProcess,
) -> None:
    assert dev.process is not None
    (child,) = participants_pids(dev.pid)
    os.kill(child, signal.SIGKILL)
    wait_gone(child)
    # Accepted while no participant runs: the order waits in the broker, then completes.
    response = post_order(dev.url, order(customer="c-7"))
    assert response.json()["status"] == "completed", response.text
    (again,) = participants_pids(dev.pid)
    assert again != child
    assert "starting it again" in dev.errors()


def test_second_dev_on_the_same_data_dir_or_port_is_refused(dev: RoleProcess) -> None:
    env = base_environment()
    same_dir = subprocess.run(
        [SAGAWAY, "dev", "--port", str(free_port()), "--data-dir", str(dev_data_dir(dev))],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert same_dir.returncode == 1
    assert "in use by another `sagaway dev`" in same_dir.stderr
    assert "Traceback" not in same_dir.stderr
    same_port = subprocess.run(
        [SAGAWAY, "dev", "--port", str(dev.port), "--data-dir", str(dev.cwd / "other")],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert same_port.returncode == 1
    assert f"cannot listen on 127.0.0.1:{dev.port}" in same_port.stderr
    assert "Traceback" not in same_port.stderr
    assert not (dev.cwd / "other").exists()


def test_reset_refuses_while_dev_runs(dev: RoleProcess) -> None:
    with pytest.raises(DevError, match="in use"):
        reset_data_dir(dev_data_dir(dev))
    assert (dev_data_dir(dev) / "orchestrator.db").exists()


def in_flight(gateway_db: Path) -> int:
    with sqlite3.connect(f"file:{gateway_db}?mode=ro", uri=True) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM requests"
            " WHERE status NOT IN ('completed', 'compensated', 'failed')"
        ).fetchone()
    return int(count)


def test_kill_9_mid_flight_then_restart_finishes_every_accepted_request(dev: RoleProcess) -> None:
    password = re.search(r"user \S+, password (\S+) ", dev.output())
    bodies = [
        order(country="AQ" if i % 4 == 0 else "FR", customer=f"c-{10 + i}") for i in range(24)
    ]
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda b: post_order(dev.url, b, prefer_async=True), bodies))
    assert dev.process is not None
    (participants,) = participants_pids(dev.pid)
    dev.kill9()  # at once: the last sagas accepted have barely started
    wait_gone(participants)  # its stdin closed with the parent: no orphan keeps consuming
    assert all(r.status_code == 202 for r in responses), [r.text for r in responses]
    assert in_flight(dev_data_dir(dev) / "gateway.db") > 0, "the kill came after every saga ended"

    start_dev(dev)
    for body, response in zip(bodies, responses, strict=True):
        document = wait_terminal(dev.url, response.headers["location"])
        expected = "compensated" if body["country"] == "AQ" else "completed"
        assert document["status"] == expected, document
    # The console login survives a restart.
    assert password is not None and f"password {password.group(1)} " in dev.output()

    audit = subprocess.run(
        [SAGAWAY, "audit", "--json"],
        capture_output=True, env={**base_environment(), "SAGAWAY_DATA_DIR": str(dev_data_dir(dev))},
        timeout=60,
    )
    report = orjson.loads(audit.stdout)
    assert audit.returncode == 0 and report["clean"], report


def test_ctrl_c_stops_promptly_with_exit_0_and_no_traceback(dev: RoleProcess) -> None:
    # Work in hand when the signal comes: an order held open by a sync request.
    assert dev.process is not None
    (participants,) = participants_pids(dev.pid)
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(post_order, dev.url, order())
        time.sleep(0.05)
        code, took_s = dev.signal(signal.SIGINT, 30)
        held.exception(30)
    assert code == 0, dev.errors()
    assert took_s < 10, f"took {took_s:.1f}s to stop"
    assert "Traceback" not in dev.errors(), dev.errors()
    assert "sagaway dev stopped" in dev.errors()
    assert not _cmdline(participants), "the participants' process outlived sagaway dev"
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", dev.port)) != 0, "still listening"
    startups = ", ".join(f"{s:.2f}s" for s in dev.ready_after_s)
    print(f"startup: {startups}; SIGINT exit {took_s:.2f}s")


def test_reset_deletes_only_what_dev_created(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for name in ("orchestrator.db", "orchestrator.db-wal", "broker.db", "console-credentials"):
        (data_dir / name).write_text("x")
    (data_dir / "notes.txt").write_text("mine")
    removed = reset_data_dir(data_dir)
    assert {p.name for p in removed} == {
        "orchestrator.db", "orchestrator.db-wal", "broker.db", "console-credentials"
    }
    assert sorted(p.name for p in data_dir.iterdir()) == ["notes.txt"]
    assert data_files(data_dir) == []
    (data_dir / "notes.txt").unlink()
    (data_dir / "gateway.db").write_text("x")
    reset_data_dir(data_dir)
    assert not data_dir.exists()


def test_a_saga_module_that_does_not_import_is_a_one_line_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [SAGAWAY, "dev", "--port", "0", "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=60,
        env={**base_environment(), "SAGAWAY_SAGAS": "no.such.module"},
    )
    assert result.returncode == 1
    assert "cannot import saga module 'no.such.module'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "orchestrator.db").exists()


def test_dev_settings_keep_the_session_timeouts_a_user_chose(tmp_path: Path) -> None:
    chosen = dev_settings(load_settings(session_timeout_ms=20_000, heartbeat_interval_ms=4000))
    messaging = chosen.messaging
    assert (messaging.session_timeout_ms, messaging.heartbeat_interval_ms) == (20_000, 4000)
    default = dev_settings(load_settings(data_dir=tmp_path, kafka_bootstrap="k:9092"))
    messaging = default.messaging
    assert messaging.session_timeout_ms < load_settings().messaging.session_timeout_ms
    assert messaging.heartbeat_interval_ms * 3 <= messaging.session_timeout_ms
    assert messaging.kafka_bootstrap is None and default.storage.database_url is None
    assert default.storage.data_dir.is_absolute()
    assert default.messaging.data_dir == default.storage.data_dir


def test_dev_settings_take_small_consumer_batches_unless_a_user_chose(tmp_path: Path) -> None:
    default = dev_settings(load_settings(data_dir=tmp_path))
    assert default.messaging.consumer_max_records == DEV_CONSUMER_MAX_RECORDS
    assert DEV_CONSUMER_MAX_RECORDS < load_settings().messaging.consumer_max_records
    chosen = dev_settings(load_settings(data_dir=tmp_path, consumer_max_records=500))
    assert chosen.messaging.consumer_max_records == 500


def test_banner_with_api_keys_puts_the_key_in_the_curl(tmp_path: Path) -> None:
    text = dev_banner("http://127.0.0.1:8000", data_dir=tmp_path, credentials=None,
                      auth_enabled=True)
    assert "No API keys" not in text
    assert '-H "X-API-Key: $SAGAWAY_API_KEY"' in text
    request = curl_request(text)
    assert request.headers["x-api-key"] == "$SAGAWAY_API_KEY"  # left to the shell
