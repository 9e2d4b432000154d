"""Waiting for a started server to answer over HTTP, failing fast (with its log) if it died."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import httpx


def wait_until_ready(
    url: str,
    *,
    process: subprocess.Popen[bytes] | None = None,
    log_tail: Callable[[], str] = str,
    timeout_s: float = 60.0,
    ready: Callable[[int], bool] = lambda status: status == 200,
) -> None:
    """Poll `url` until its status satisfies `ready`. Raises AssertionError, carrying
    `log_tail()`, when `process` exits first or `timeout_s` runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if ready(httpx.get(url, timeout=2).status_code):
                return
        except httpx.HTTPError:
            pass
        if process is not None and process.poll() is not None:
            raise AssertionError(f"server of {url} exited ({process.returncode}):\n{log_tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} not ready in {timeout_s:.0f}s:\n{log_tail()}")
        time.sleep(0.1)
