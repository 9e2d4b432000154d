"""docker/smoke's load: place orders through the gateway (every 4th to Antarctica, which shipping
refuses, so that saga compensates), wait until each saga has ended, print the outcomes as JSON.

    python3 docker/smoke_orders.py URL API_KEY ORDERS PROGRESS_FILE

Standard library only: it runs on the host, outside any virtualenv.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

TERMINAL = {"completed", "compensated", "failed"}
CONCURRENCY = 8
SAGA_DEADLINE_S = 300


def order(n: int) -> dict[str, Any]:
    return {
        "customer_id": f"c-{1 + n % 500}",
        "items": [{"sku": f"sku-{1 + n % 50}", "quantity": 1 + n % 3}],
        "total_cents": 100 * (1 + n % 40),
        "country": "AQ" if n % 4 == 3 else "DE",
    }


def call(
    url: str, key: str, body: dict[str, Any] | None = None, idempotency_key: str | None = None
) -> tuple[int, Any, str | None]:
    """(status, JSON body, Location) of a GET, or of a POST when `body` is given."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    request.add_header("X-API-Key", key)
    if idempotency_key:
        request.add_header("Idempotency-Key", idempotency_key)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.load(answer), answer.headers.get("Location")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null"), error.headers.get("Location")


def place(base: str, key: str, run: str, n: int) -> str:
    """How order n's saga ended; a sync request that runs out of time (202) is followed up."""
    deadline = time.monotonic() + SAGA_DEADLINE_S
    while True:
        try:
            status, body, location = call(f"{base}/api/v1/orders", key, order(n), f"{run}-{n}")
            break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            # Retried under the same Idempotency-Key: the gateway answers for the saga the
            # first attempt started, if it got that far, and starts no second one.
            if time.monotonic() > deadline:
                return "lost"
            time.sleep(1)
    if status == 409:
        return str(body.get("saga_status", "rejected"))
    if status == 200:
        return str(body["status"])
    if status != 202 or not location:
        return f"http-{status}"
    while time.monotonic() < deadline:
        _status, body, _ = call(base + location if location.startswith("/") else location, key)
        if body and body.get("status") in TERMINAL:
            return str(body["status"])
        time.sleep(0.5)
    return "timed-out"


def main(base: str, key: str, orders: int, progress: str) -> int:
    run = f"smoke-{time.time_ns()}"
    done = 0
    lock = threading.Lock()

    def one(n: int) -> str:
        nonlocal done
        outcome = place(base, key, run, n)
        with lock:
            done += 1
            with open(progress, "w") as file:
                file.write(str(done))
        return outcome

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        outcomes = Counter(pool.map(one, range(orders)))
    print(json.dumps(dict(outcomes), sort_keys=True))
    expected = {"completed": orders - orders // 4, "compensated": orders // 4}
    return 0 if dict(outcomes) == expected else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
